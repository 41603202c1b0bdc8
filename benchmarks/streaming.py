"""Streaming decoding: the latency of one chunk against the one-shot cost.

Run after ``pip install -e .``::

    python benchmarks/streaming.py            # latency table and a long stream
    python benchmarks/streaming.py --quick    # fewer rounds, a shorter stream

Inputs are model-like log-probabilities (``decode.model_like_log_probs``:
blank p >= 0.99 on 70% of frames, one dominant class elsewhere) at K = 29
(characters) and K = 1024 (BPE), B = 1 and 32 streams, chunks of 25 frames
(0.5 s at a 20 ms frame rate, 1 s at 40 ms).

- **Latency**: per round, the one-shot search over T = 500 frames, then the
  same frames as 20 chunks through ``*_update`` (each call timed alone, to
  its result being ready), then one ``*_result``; medians over rounds, compile
  time apart. "one-shot / 25 frames" is the one-shot time scaled to a chunk:
  what a chunk would cost if streaming were free.
- **Long stream**: B = 1, K = 29, 100k frames in chunks of 25 (a 40 ms frame
  rate makes that 67 minutes of audio), ``max_label_length = 32768``; the
  process's resident memory is read every 20k frames: it stays flat, the
  state has a fixed size.

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decode import model_like_log_probs  # noqa: E402

import jaxctc  # noqa: E402

CHUNK = 25


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn, *args):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def decoders(batch, classes, width, max_length):
    """(name, one-shot, init, update, result) for the beam search and greedy."""
    return [
        (
            f"prefix beam search W={width}",
            jax.jit(lambda x, p: jaxctc.prefix_beam_search(x, p, beam_width=width)),
            jaxctc.prefix_beam_search_init(
                batch, classes, beam_width=width, max_label_length=max_length
            ),
            jax.jit(jaxctc.prefix_beam_search_update),
            jax.jit(jaxctc.prefix_beam_search_result),
        ),
        (
            "greedy",
            jax.jit(jaxctc.greedy_decode),
            jaxctc.greedy_decode_init(batch, classes, max_label_length=max_length),
            jax.jit(jaxctc.greedy_decode_update),
            jax.jit(jaxctc.greedy_decode_result),
        ),
    ]


def latency(batch, classes, rounds, frames=500, width=16):
    logits, _ = model_like_log_probs(batch, frames, classes, seed=1, min_length=1.0)
    paddings = np.zeros((batch, frames), np.float32)
    chunks = [
        (logits[:, t : t + CHUNK], paddings[:, t : t + CHUNK])
        for t in range(0, frames, CHUNK)
    ]
    rows = []
    for name, one_shot, init, update, result in decoders(
        batch, classes, width, max_length=frames
    ):
        compile_one = timed(one_shot, logits, paddings)
        compile_update = timed(update, init, *chunks[0])
        compile_result = timed(result, init)
        whole, per_chunk, reads = [], [], []
        for _ in range(rounds):
            whole.append(timed(one_shot, logits, paddings))
            state = init
            for x, p in chunks:
                start = time.perf_counter()
                state = jax.block_until_ready(update(state, x, p))
                per_chunk.append(time.perf_counter() - start)
            reads.append(timed(result, state))
        got, want = result(state), one_shot(logits, paddings)
        same = bool(np.array_equal(got.labels, want.labels))
        scaled = statistics.median(whole) / frames * CHUNK
        chunk = statistics.median(per_chunk)
        rows.append(
            f"| ({batch}, {CHUNK}, {classes}) | {name} | "
            f"{compile_one:.2f} / {compile_update:.2f} / {compile_result:.2f} | "
            f"{1e3 * statistics.median(whole):.1f} | {1e3 * scaled:.2f} | "
            f"{1e3 * chunk:.2f} | {chunk / scaled:.2f} | "
            f"{1e3 * statistics.median(reads):.2f} | {'yes' if same else 'NO'} |"
        )
        print(rows[-1], flush=True)
    return rows


def long_stream(frames, max_length=32768, width=16, classes=29, pool=40):
    rng_chunks = [
        model_like_log_probs(1, CHUNK, classes, seed=100 + i, min_length=1.0)[0]
        for i in range(pool)
    ]
    paddings = np.zeros((1, CHUNK), np.float32)
    state = jaxctc.prefix_beam_search_init(
        1, classes, beam_width=width, max_label_length=max_length
    )
    update = jax.jit(jaxctc.prefix_beam_search_update)
    size = sum(a.nbytes for a in jax.tree.leaves(state)) / 2**20
    state = jax.block_until_ready(update(state, rng_chunks[0], paddings))  # compile
    marks, times, start = [], [], time.perf_counter()
    for i in range(1, frames // CHUNK):
        t0 = time.perf_counter()
        state = jax.block_until_ready(update(state, rng_chunks[i % pool], paddings))
        times.append(time.perf_counter() - t0)
        if i == 1 or ((i + 1) * CHUNK) % 20000 == 0:
            marks.append(((i + 1) * CHUNK, rss_mib()))
            print(f"  {marks[-1][0]} frames: RSS {marks[-1][1]:.0f} MiB", flush=True)
    total = time.perf_counter() - start
    hyp = jaxctc.prefix_beam_search_result(state)
    tokens = int(np.sum(hyp.label_paddings == 0))
    return size, marks, total, statistics.median(times), tokens, bool(state.limited[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, 20k frames")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    print(
        f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.2f}, jax {jax.__version__}, Python "
        f"{platform.python_version()}; median of {rounds} rounds\n"
    )
    print(
        "| (B, chunk, K) | decoder | compile one-shot / update / result (s) | "
        "one-shot T=500 (ms) | one-shot / 25 frames (ms) | update, 25 frames (ms) "
        "| update / one-shot share | result (ms) | labels equal |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for batch in (1, 32):
        for classes in (29, 1024):
            latency(batch, classes, rounds)
    frames = 20000 if args.quick else 100000
    print(f"\nLong stream: B = 1, K = 29, W = 16, {frames} frames in chunks of 25")
    size, marks, total, median, tokens, limited = long_stream(frames)
    print(
        f"state {size:.1f} MiB; {total:.1f} s in all, {1e3 * median:.2f} ms per "
        f"chunk (median); best hypothesis {tokens} tokens, limited: {limited}; "
        f"RSS (MiB) by frames: " + ", ".join(f"{f}: {m:.0f}" for f, m in marks)
    )


if __name__ == "__main__":
    main()
