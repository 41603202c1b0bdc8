"""CTC loss speed and memory: jaxctc against optax and torch, in one run.

Times the forward pass and ``value_and_grad`` (of the summed loss, with respect
to the logits) for each library on the same padded batch, interleaving the
contenders within every repeat, and reports the median. Compile time and XLA's
compiled temporary memory (``memory_analysis().temp_size_in_bytes``) are
reported separately. torch runs ``log_softmax`` + ``F.ctc_loss`` (+
``.backward()``) on the CPU with its default threads.

Usage::

    python -m pip install -e ".[bench]"
    python benchmarks/loss.py            # both shapes of the issue
    python benchmarks/loss.py --repeats 5 --shapes 32,500,29,100
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


def make_batch(batch, frames, classes, labels, seed=0):
    """Random logits; lengths between 80% and 100% of the padded sizes."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, frames, classes)).astype(np.float32) * 2
    num_frames = rng.integers(int(0.8 * frames), frames + 1, size=batch)
    num_labels = rng.integers(labels // 2, labels + 1, size=batch)
    num_labels = np.minimum(num_labels, (num_frames - 1) // 2)
    logit_paddings = (np.arange(frames)[None] >= num_frames[:, None]).astype(np.float32)
    label_paddings = (np.arange(labels)[None] >= num_labels[:, None]).astype(np.float32)
    ids = rng.integers(1, classes, size=(batch, labels)).astype(np.int32)
    return logits, logit_paddings, ids, label_paddings


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


def bench_shape(shape, repeats, with_torch):
    logits, logit_paddings, labels, label_paddings = make_batch(*shape)
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
        "| (B, T, K, N) | pass | jaxctc ms | optax ms | torch ms | optax / jaxctc "
        "| torch / jaxctc | compile s (jaxctc / optax) | temp MiB (jaxctc / optax) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        flat, med = bench_shape(shape, args.repeats, with_torch)
        for kind in ("fwd", "vag"):
            j, o = med[("jaxctc", kind)], med[("optax", kind)]
            t = med.get(("torch", kind), float("nan"))
            cj, mj = flat[("jaxctc", kind)][1:]
            co, mo = flat[("optax", kind)][1:]
            print(
                f"| {shape} | {'forward' if kind == 'fwd' else 'value_and_grad'} "
                f"| {j * 1e3:.1f} | {o * 1e3:.1f} | {t * 1e3:.1f} | {o / j:.2f} "
                f"| {t / j:.2f} | {cj:.2f} / {co:.2f} | {mj / 2**20:.1f} / {mo / 2**20:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
