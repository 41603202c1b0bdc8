"""CTC loss speed and memory: jaxctc against optax and torch, in one run.

Times the forward pass and ``value_and_grad`` (of the summed loss, with respect
to the logits) for each library on the same batch, interleaving the contenders
within every repeat, and reports the median. Compile time and XLA's compiled
temporary memory (``memory_analysis().temp_size_in_bytes``) are reported
separately. torch runs ``log_softmax`` + ``F.ctc_loss`` (+ ``.backward()``) on
the CPU with its default threads.

Batches (``--batches``):

- ``padded``: random logits, frame lengths 80-100% of T, label lengths N/2-N.
- ``full``: random logits, every frame valid, every sequence N labels.
- ``peaky``: model-like log-probabilities that spell their labels (see
  ``peaky_batch``), every frame valid, every sequence N labels.

Usage::

    python -m pip install -e ".[bench]"
    python benchmarks/loss.py            # both shapes of the issue, every batch
    python benchmarks/loss.py --repeats 5 --shapes 32,500,29,100 --batches full
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxctc

SHAPES = ((32, 500, 29, 100), (16, 1000, 1024, 200))


BATCHES = ("padded", "full", "peaky")


def make_batch(batch, frames, classes, labels, seed=0, full=False):
    """Random logits; lengths between 80% and 100% of the padded sizes (frames)
    and between N/2 and N (labels), or every frame and N labels (``full``)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, frames, classes)).astype(np.float32) * 2
    if full:
        num_frames = np.full(batch, frames)
        num_labels = np.full(batch, labels)
    else:
        num_frames = rng.integers(int(0.8 * frames), frames + 1, size=batch)
        num_labels = rng.integers(labels // 2, labels + 1, size=batch)
        num_labels = np.minimum(num_labels, (num_frames - 1) // 2)
    logit_paddings = (np.arange(frames)[None] >= num_frames[:, None]).astype(np.float32)
    label_paddings = (np.arange(labels)[None] >= num_labels[:, None]).astype(np.float32)
    ids = rng.integers(1, classes, size=(batch, labels)).astype(np.int32)
    return logits, logit_paddings, ids, label_paddings


def alignment(rng, labels, frames, blank_share=0.7):
    """A random frame-by-frame alignment ``[T]`` of ``labels`` (blank = 0):
    ``blank_share`` of the frames blank (fewer when the labels need more),
    each label a run of one frame or more, a blank between repeats."""
    n = len(labels)
    repeats = np.concatenate([[0], labels[1:] == labels[:-1]]).astype(int)
    tokens = min(max(n, round((1 - blank_share) * frames)), frames - repeats.sum())
    runs = 1 + rng.multinomial(tokens - n, np.full(n, 1 / n))
    gaps = rng.multinomial(frames - tokens - repeats.sum(), np.full(n + 1, 1 / (n + 1)))
    gaps[:n] += repeats  # gap n precedes label n
    classes = np.stack([np.zeros(n, int), labels], axis=1).ravel()
    counts = np.stack([gaps[:n], runs], axis=1).ravel()
    return np.repeat(np.append(classes, 0), np.append(counts, gaps[n]))


def peaky_batch(batch, frames, classes, labels, seed=0):
    """Log-probabilities like a trained model's, consistent with the labels.

    Every frame valid, every sequence ``N`` random labels, spelled by a random
    alignment (``alignment``: about 70% blank frames). Per frame, the aligned
    class has p in [0.99, 0.9999] (blank) or [0.9, 0.99] (label); a runner-up
    takes 70% of the rest (the blank on label frames, a random label on blank
    frames) and another random class 30%; every other class a log-probability
    in [-25, -12]. The logits are these log-probabilities (float32).
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, classes, size=(batch, labels)).astype(np.int32)
    x = rng.uniform(-25, -12, size=(batch, frames, classes))
    top = np.stack([alignment(rng, row, frames) for row in ids])
    is_blank = top == 0
    p_top = np.where(
        is_blank,
        rng.uniform(0.99, 0.9999, top.shape),
        rng.uniform(0.9, 0.99, top.shape),
    )
    b, t = np.arange(batch)[:, None], np.arange(frames)[None, :]
    first = np.where(is_blank, rng.integers(1, classes, top.shape), 0)
    second = rng.integers(1, classes, top.shape)
    use = (second != top) & (second != first)  # else the first takes it all
    x[b, t, second] = np.where(use, np.log((1 - p_top) * 0.3), x[b, t, second])
    x[b, t, first] = np.log((1 - p_top) * np.where(use, 0.7, 1.0))
    x[b, t, top] = np.log(p_top)
    zeros = np.zeros((batch, frames), np.float32)
    return x.astype(np.float32), zeros, ids, np.zeros((batch, labels), np.float32)


def batch_of(kind, shape):
    if kind == "peaky":
        return peaky_batch(*shape)
    return make_batch(*shape, full=kind == "full")


def jax_contenders(loss_fn, args):
    def total(logits, *rest):
        return jnp.sum(loss_fn(logits, *rest))

    fwd = jax.jit(lambda *a: loss_fn(*a))
    vag = jax.jit(jax.value_and_grad(total))
    out = {}
    for name, fn in (("fwd", fwd), ("vag", vag)):
        t0 = time.perf_counter()
        compiled = fn.lower(*args).compile()
        compile_s = time.perf_counter() - t0
        mem = compiled.memory_analysis()
        temp = getattr(mem, "temp_size_in_bytes", float("nan")) if mem else float("nan")

        def run(fn=compiled):
            jax.block_until_ready(fn(*args))

        out[name] = (run, compile_s, temp)
    return out


def torch_contenders(logits, logit_paddings, labels, label_paddings):
    import torch

    x = torch.from_numpy(logits)
    input_lengths = torch.from_numpy((1 - logit_paddings).sum(1).astype(np.int64))
    target_lengths = torch.from_numpy((1 - label_paddings).sum(1).astype(np.int64))
    targets = torch.from_numpy(labels.astype(np.int64))

    def loss(inp):
        lp = torch.log_softmax(inp, dim=-1).transpose(0, 1)  # [T, B, K]
        return torch.nn.functional.ctc_loss(
            lp, targets, input_lengths, target_lengths, blank=0, reduction="sum"
        )

    def fwd():
        with torch.no_grad():
            loss(x)

    def vag():
        inp = x.detach().requires_grad_(True)
        loss(inp).backward()

    return {
        "fwd": (fwd, float("nan"), float("nan")),
        "vag": (vag, float("nan"), float("nan")),
    }


def measure(contenders, repeats):
    """Median seconds per contender, runs interleaved within each repeat."""
    for run, *_ in contenders.values():  # warm up
        run()
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, (run, *_) in contenders.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_shape(shape, kind, repeats, with_torch):
    logits, logit_paddings, labels, label_paddings = batch_of(kind, shape)
    args = tuple(
        jnp.asarray(a) for a in (logits, logit_paddings, labels, label_paddings)
    )
    libs = {
        "jaxctc": jax_contenders(jaxctc.ctc_loss, args),
        "optax": jax_contenders(optax.ctc_loss, args),
    }
    if with_torch:
        libs["torch"] = torch_contenders(logits, logit_paddings, labels, label_paddings)
    flat = {(lib, kind): v for lib, d in libs.items() for kind, v in d.items()}
    med = measure(flat, repeats)
    return flat, med


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--shapes", nargs="*", default=None, help="B,T,K,N ...")
    parser.add_argument("--batches", nargs="*", default=BATCHES, choices=BATCHES)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    shapes = (
        [tuple(int(v) for v in s.split(",")) for s in args.shapes]
        if args.shapes
        else SHAPES
    )
    with_torch = not args.no_torch
    if with_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            with_torch = False
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, backend {jax.default_backend()}, "
        f"{time.strftime('%Y-%m-%d')}\n"
    )
    print(
        "| (B, T, K, N) | batch | pass | jaxctc ms | optax ms | torch ms | optax / jaxctc "
        "| torch / jaxctc | compile s (jaxctc / optax) | temp MiB (jaxctc / optax) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape, batch in ((s, b) for s in shapes for b in args.batches):
        flat, med = bench_shape(shape, batch, args.repeats, with_torch)
        for kind in ("fwd", "vag"):
            j, o = med[("jaxctc", kind)], med[("optax", kind)]
            t = med.get(("torch", kind), float("nan"))
            cj, mj = flat[("jaxctc", kind)][1:]
            co, mo = flat[("optax", kind)][1:]
            print(
                f"| {shape} | {batch} | {'forward' if kind == 'fwd' else 'value_and_grad'} "
                f"| {j * 1e3:.1f} | {o * 1e3:.1f} | {t * 1e3:.1f} | {o / j:.2f} "
                f"| {t / j:.2f} | {cj:.2f} / {co:.2f} | {mj / 2**20:.1f} / {mo / 2**20:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
