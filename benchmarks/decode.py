"""Decoding speed: jaxctc against TensorFlow, pyctcdecode and Keras 3 (JAX).

Run after ``pip install -e ".[bench]"``::

    python benchmarks/decode.py            # full table (a few minutes)
    python benchmarks/decode.py --quick    # fewer repeats

Peers run interleaved, one call each per round, and each row reports the
median over rounds; compile time (jaxctc's ``jit``, Keras' first call) is
measured separately. pyctcdecode pins ``numpy < 2``: when it cannot be
imported here, it runs in a worker process of another interpreter
(``--pyctcdecode-python``, default ``/work/venv-bench/bin/python`` if present)
that receives the same arrays and reports its own timings. Prints a Markdown
table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxctc  # noqa: E402

# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------


def peaky_log_probs(batch, frames, classes, seed=0, blank_share=0.6):
    """Log-probabilities shaped like a trained model's: one class dominates
    each frame (the blank on ``blank_share`` of frames), the rest is noise."""
    rng = np.random.default_rng(seed)
    top = rng.integers(1, classes, size=(batch, frames))
    top = np.where(rng.random((batch, frames)) < blank_share, 0, top)
    logits = rng.standard_normal((batch, frames, classes)) * 1.5
    np.put_along_axis(logits, top[..., None], 8.0, axis=-1)
    logits -= np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
    return logits.astype(np.float32)


def blank_last(log_probs):
    """TF and Keras want the blank last: class 0 moves to K - 1."""
    return np.concatenate([log_probs[..., 1:], log_probs[..., :1]], axis=-1)


# ----------------------------------------------------------------------------
# Contestants: each is (compile_or_first_call_seconds, run() -> None)
# ----------------------------------------------------------------------------


def _timed_compile(fn, *args):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - start
    return seconds, lambda: jax.block_until_ready(compiled(*args))


def jaxctc_beam(log_probs, width, **options):
    x = jnp.asarray(log_probs)
    paddings = jnp.zeros(x.shape[:2], jnp.float32)
    return _timed_compile(
        lambda x, p: jaxctc.prefix_beam_search(x, p, beam_width=width, **options),
        x,
        paddings,
    )


def jaxctc_greedy(log_probs):
    x = jnp.asarray(log_probs)
    paddings = jnp.zeros(x.shape[:2], jnp.float32)
    return _timed_compile(jaxctc.greedy_decode, x, paddings)


def tf_beam(log_probs, width):
    import tensorflow as tf

    x = tf.constant(np.transpose(blank_last(log_probs), (1, 0, 2)))
    lengths = tf.constant(np.full(log_probs.shape[0], log_probs.shape[1], np.int32))

    def run():
        decoded, scores = tf.nn.ctc_beam_search_decoder(x, lengths, beam_width=width)
        scores.numpy()
        decoded[0].values.numpy()

    return None, run


def tf_greedy(log_probs):
    import tensorflow as tf

    x = tf.constant(np.transpose(blank_last(log_probs), (1, 0, 2)))
    lengths = tf.constant(np.full(log_probs.shape[0], log_probs.shape[1], np.int32))

    def run():
        decoded, scores = tf.nn.ctc_greedy_decoder(x, lengths, blank_index=-1)
        scores.numpy()
        decoded[0].values.numpy()

    return None, run


def keras_beam(log_probs, width):
    import keras

    x = jnp.asarray(log_probs)
    lengths = jnp.full((log_probs.shape[0],), log_probs.shape[1], jnp.int32)

    def run():
        out = keras.ops.ctc_decode(
            x,
            lengths,
            strategy="beam_search",
            beam_width=width,
            top_paths=1,
            mask_index=0,  # the blank
        )
        jax.block_until_ready(out)

    start = time.perf_counter()
    run()
    return time.perf_counter() - start, run


_WORKER = r"""
import sys, time, json, numpy as np
from pyctcdecode import build_ctcdecoder
log_probs = np.load(sys.argv[1])
width = int(sys.argv[2])
chars = [chr(c) for c in range(0x4e00, 0x4e00 + log_probs.shape[-1] - 1)]
decoder = build_ctcdecoder([""] + chars)  # "" is the blank, class 0; no LM
print("ready", flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    for utterance in log_probs:  # one by one, as its users decode
        decoder.decode(utterance, beam_width=width)
    print(json.dumps(time.perf_counter() - start), flush=True)
"""


class PyctcdecodeWorker:
    """pyctcdecode in its own interpreter (it pins numpy < 2); one decode of
    the whole batch per request, timed inside the worker."""

    def __init__(self, python, log_probs, width):
        self._dir = tempfile.TemporaryDirectory()
        path = os.path.join(self._dir.name, "log_probs.npy")
        np.save(path, log_probs)
        self._proc = subprocess.Popen(
            [python, "-c", _WORKER, path, str(width)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        if self._proc.stdout.readline().strip() != "ready":
            raise RuntimeError("pyctcdecode worker failed to start")

    def __call__(self):
        self._proc.stdin.write("run\n")
        self._proc.stdin.flush()
        return json.loads(self._proc.stdout.readline())

    def close(self):
        self._proc.stdin.close()
        self._proc.wait()
        self._dir.cleanup()


def pyctcdecode_beam(log_probs, width, python):
    try:
        from pyctcdecode import build_ctcdecoder  # noqa: F401

        python = sys.executable
    except ImportError:
        if python is None:
            raise
    worker = PyctcdecodeWorker(python, log_probs, width)
    return None, worker


# ----------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------


def interleave(contestants, repeats):
    """Median seconds per contestant, one call each per round."""
    times = {name: [] for name in contestants}
    for _, run in contestants.values():
        run()  # warm up outside the measurement
    for _ in range(repeats):
        for name, (_, run) in contestants.items():
            start = time.perf_counter()
            reported = run()
            elapsed = time.perf_counter() - start
            times[name].append(reported if isinstance(reported, float) else elapsed)
    return {name: statistics.median(ts) for name, ts in times.items()}


def table(rows):
    lines = [
        "| case | implementation | compile / first call (s) | median (ms) "
        "| jaxctc / peer | goal |",
        "|---|---|---:|---:|---:|---|",
    ]
    for case, name, compile_s, median, ratio, goal in rows:
        compile_text = "" if compile_s is None else f"{compile_s:.2f}"
        ratio_text = "" if ratio is None else f"{ratio:.4f}"
        lines.append(
            f"| {case} | {name} | {compile_text} | {median * 1e3:.1f} "
            f"| {ratio_text} | {goal} |"
        )
    return "\n".join(lines)


def add_case(rows, case, contestants, medians, ours, goals):
    for name, (compile_s, _) in contestants.items():
        ratio = None if name == ours else medians[ours] / medians[name]
        rows.append((case, name, compile_s, medians[name], ratio, goals.get(name, "")))


def compile_seconds(frames, width, repeats):
    x = peaky_log_probs(32, frames, 29, seed=frames)
    times = []
    for _ in range(repeats):
        jax.clear_caches()
        times.append(jaxctc_beam(x, width)[0])
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats, not 7")
    parser.add_argument("--pyctcdecode-python", default=None)
    parser.add_argument("--skip-keras", action="store_true")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    python = args.pyctcdecode_python
    if python is None and os.path.exists("/work/venv-bench/bin/python"):
        python = "/work/venv-bench/bin/python"
    rows = []

    # Main case: (32, 200, 29), beam 16, top 1.
    x = peaky_log_probs(32, 200, 29)
    case = "beam 16, (32, 200, 29)"
    contestants = {
        "jaxctc.prefix_beam_search": jaxctc_beam(x, 16),
        "tf.nn.ctc_beam_search_decoder": tf_beam(x, 16),
        "pyctcdecode (one by one, no LM)": pyctcdecode_beam(x, 16, python),
    }
    medians = interleave(contestants, repeats)
    contestants["pyctcdecode (one by one, no LM)"][1].close()
    add_case(
        rows,
        case,
        contestants,
        medians,
        "jaxctc.prefix_beam_search",
        {
            "tf.nn.ctc_beam_search_decoder": "<= 0.3",
            "pyctcdecode (one by one, no LM)": "<= 0.1",
        },
    )

    # Keras 3 on the JAX backend: a smaller case, beam 8.
    if not args.skip_keras:
        x = peaky_log_probs(8, 100, 29, seed=1)
        contestants = {
            "jaxctc.prefix_beam_search": jaxctc_beam(x, 8),
            "keras.ops.ctc_decode (jax)": keras_beam(x, 8),
        }
        medians = interleave(contestants, max(2, repeats // 2))
        add_case(
            rows,
            "beam 8, (8, 100, 29)",
            contestants,
            medians,
            "jaxctc.prefix_beam_search",
            {"keras.ops.ctc_decode (jax)": "<= 0.01"},
        )

    # Large vocabulary: K = 1024, with and without token pruning.
    x = peaky_log_probs(32, 200, 1024, seed=2)
    contestants = {
        "jaxctc.prefix_beam_search": jaxctc_beam(x, 16),
        "jaxctc.prefix_beam_search(token_top_k=16)": jaxctc_beam(x, 16, token_top_k=16),
    }
    medians = interleave(contestants, repeats)
    add_case(
        rows,
        "beam 16, (32, 200, 1024)",
        contestants,
        medians,
        "jaxctc.prefix_beam_search",
        {},
    )

    # Greedy.
    x = peaky_log_probs(32, 200, 29)
    contestants = {
        "jaxctc.greedy_decode": jaxctc_greedy(x),
        "tf.nn.ctc_greedy_decoder": tf_greedy(x),
    }
    medians = interleave(contestants, repeats)
    add_case(
        rows, "greedy, (32, 200, 29)", contestants, medians, "jaxctc.greedy_decode", {}
    )

    # Compile time against T.
    short = compile_seconds(200, 16, 3)
    long = compile_seconds(2000, 16, 3)

    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.python_version()}, jax {jax.__version__}; "
        f"{datetime.date.today().isoformat()}; median of {repeats} rounds.\n"
    )
    print(table(rows))
    print(
        f"\nCompile time of `jit(prefix_beam_search)`, B = 32, K = 29, beam 16 "
        f"(median of 3): T = 200: {short:.2f} s, T = 2000: {long:.2f} s, "
        f"ratio {long / short:.2f} (goal <= 1.5)."
    )


if __name__ == "__main__":
    main()
