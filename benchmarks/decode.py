"""Decoding speed: jaxctc against NumPy, TensorFlow, pyctcdecode, flashlight-text
and Keras 3 (JAX).

Run after ``pip install -e ".[bench]"``::

    python benchmarks/decode.py                    # every section (long)
    python benchmarks/decode.py --section peaky    # model-like outputs, K = 29..18000
    python benchmarks/decode.py --section crnn     # the CRNN example's own outputs
    python benchmarks/decode.py --section random   # random logits, K = 29 / 1024
    python benchmarks/decode.py --section lm       # the search with a word 3-gram
    python benchmarks/decode.py --quick            # fewer repeats

Sections:

- ``random``: random peaky logits at K = 29 (and K = 1024), the first benchmark.
- ``peaky``: what trained CTC models output (``model_like_log_probs``: blank p
  >= 0.99 on about 70% of frames, one dominant class elsewhere with a few
  runners-up, the rest far below), at K = 29, 1024, 8192 and 18000, B = 200
  lines of T = 100 frames padded to lengths 60-100%.
- ``crnn``: the trained CRNN example's outputs (K = 37) on 200 fresh test
  lines; it needs ``python examples/crnn/train.py`` first (``--crnn-workdir``).
- ``lm``: the beam search with and without an n-gram LM (``jaxctc.NGramLM``)
  on model-like outputs, against flashlight-text's LexiconDecoder with its
  KenLM and pyctcdecode with KenLM on the same file: at (32, 400, 29) a
  Kneser-Ney word 4-gram of the English text Python ships (``pydoc_data``,
  about 108k n-grams, built with kaldingram) and a synthetic word 3-gram
  (about 470k n-grams over 20k random letter words); the synthetic 3-gram
  over a BPE vocabulary at K = 1024; a token 4-gram at (32, 400, 1024).
  Loading times, table bytes and compile times against T and the LM's size
  are reported too.

Peers run interleaved, one call each per round, and each row reports the
median over rounds; compile time (jaxctc's ``jit``, Keras' first call) is
measured separately. pyctcdecode and flashlight decode one line at a time at
its own length, as their users do. pyctcdecode pins ``numpy < 2``: when it
cannot be imported here, it runs in a worker process of another interpreter
(``--pyctcdecode-python`` or ``$PYCTCDECODE_PYTHON``) that receives the same
arrays and reports its own timings. The slowest peers (flashlight with every
token, TF's beam search) decode the first ``--slow-subset`` lines at K = 1024
(proportionally fewer at larger K, at least one) and their time is scaled to
the whole batch. Prints Markdown tables.
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


def model_like_log_probs(batch, frames, classes, seed=0, min_length=0.6):
    """Log-probabilities ``[B, T, K]`` (float32) like a trained CTC model's,
    and frame paddings ``[B, T]`` (lengths uniform in [0.6 T, T], one full).

    Per frame: the blank with p in [0.99, 0.9999] on 70% of frames; otherwise
    a token with p in [0.9, 0.99] (30% of token frames repeat the previous
    frame's token, as a token's run does), 1-3 runners-up sharing the rest
    (60% / 20% / 20%; the blank is the first runner-up on token frames);
    every other class a log-probability drawn from [-25, -12]. Class 0 is the
    blank.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-25, -12, size=(batch, frames, classes)).astype(np.float32)
    is_blank = rng.random((batch, frames)) < 0.7
    token = rng.integers(1, classes, size=(batch, frames))
    repeat = rng.random((batch, frames)) < 0.3
    for t in range(1, frames):
        keep = repeat[:, t] & ~is_blank[:, t - 1]
        token[:, t] = np.where(keep, token[:, t - 1], token[:, t])
    top = np.where(is_blank, 0, token)
    p_top = np.where(
        is_blank,
        rng.uniform(0.99, 0.9999, (batch, frames)),
        rng.uniform(0.9, 0.99, (batch, frames)),
    )
    runners = rng.integers(1, 4, size=(batch, frames))
    b, t = np.arange(batch)[:, None], np.arange(frames)[None, :]
    x[b, t, top] = np.log(p_top)
    for r, share in enumerate((0.6, 0.2, 0.2)):
        if r == 0:
            other = np.where(is_blank, token, 0)
        else:
            other = rng.integers(1, classes, (batch, frames))
        use = (r < runners) & (other != top)
        x[b, t, other] = np.where(use, np.log((1 - p_top) * share), x[b, t, other])
    lengths = rng.integers(int(min_length * frames), frames + 1, size=batch)
    lengths[0] = frames
    paddings = (np.arange(frames)[None] >= lengths[:, None]).astype(np.float32)
    return x, paddings


def describe(log_probs, paddings):
    """What the inputs look like, in the terms used for real model output."""
    valid = paddings == 0
    p = np.exp(log_probs[valid])
    top = p.max(-1)
    return (
        f"mean top-class p {top.mean():.3f}; frames with blank p > 0.99: "
        f"{np.mean(p[:, 0] > 0.99):.0%}; classes above log-prob -5 per frame: "
        f"{np.mean(np.sum(log_probs[valid] > -5, -1)):.2f}; valid frames "
        f"{valid.mean():.0%}"
    )


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
data = np.load(sys.argv[1])
log_probs, lengths = data["log_probs"], data["lengths"]
width = int(sys.argv[2])
lm = json.loads(sys.argv[3])  # None, or the ARPA file, alpha and beta
if lm is None:
    chars = [chr(c) for c in range(0x4e00, 0x4e00 + log_probs.shape[-1] - 1)]
    decoder = build_ctcdecoder([""] + chars)  # "" is the blank, class 0; no LM
else:
    decoder = build_ctcdecoder(
        lm["labels"], kenlm_model_path=lm["path"], alpha=lm["alpha"], beta=lm["beta"]
    )
print("ready", flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    texts = [  # one by one, as its users decode, each at its own length
        decoder.decode(u[:n], beam_width=width) for u, n in zip(log_probs, lengths)
    ]
    elapsed = time.perf_counter() - start
    if line.strip() == "texts":
        print(json.dumps(texts), flush=True)
    else:
        print(json.dumps(elapsed), flush=True)
"""


class PyctcdecodeWorker:
    """pyctcdecode in its own interpreter (it pins numpy < 2); one decode of
    the whole batch per request, timed inside the worker."""

    def __init__(self, python, log_probs, width, lengths=None, lm=None):
        if lengths is None:
            lengths = np.full(log_probs.shape[0], log_probs.shape[1])
        self._dir = tempfile.TemporaryDirectory()
        path = os.path.join(self._dir.name, "inputs.npz")
        np.savez(path, log_probs=log_probs, lengths=np.asarray(lengths))
        self._proc = subprocess.Popen(
            [python, "-c", _WORKER, path, str(width), json.dumps(lm)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        if self._proc.stdout.readline().strip() != "ready":
            raise RuntimeError("pyctcdecode worker failed to start")

    def __call__(self, request="run"):
        self._proc.stdin.write(request + "\n")
        self._proc.stdin.flush()
        return json.loads(self._proc.stdout.readline())

    def close(self):
        self._proc.stdin.close()
        self._proc.wait()
        self._dir.cleanup()


def pyctcdecode_beam(log_probs, width, python, lengths=None, lm=None):
    """pyctcdecode's beam search; ``lm``: ``None``, or a dict of the labels,
    the ARPA ``path``, ``alpha`` and ``beta`` (KenLM through its bindings)."""
    try:
        from pyctcdecode import build_ctcdecoder  # noqa: F401

        if lm is not None:
            import kenlm  # noqa: F401
        python = sys.executable
    except ImportError:
        if python is None:
            raise
    worker = PyctcdecodeWorker(python, log_probs, width, lengths, lm)
    return None, worker


# ----------------------------------------------------------------------------
# Contestants on padded batches (the peaky and CRNN sections)
# ----------------------------------------------------------------------------


def lengths_of(paddings):
    return np.sum(paddings == 0, axis=1).astype(np.int32)


def jaxctc_greedy_padded(log_probs, paddings, labels_only=False):
    """``labels_only``: under ``jit`` the unused scores are not computed."""
    x, p = jnp.asarray(log_probs), jnp.asarray(paddings)

    def fn(x, p):
        hyp = jaxctc.greedy_decode(x, p)
        return hyp._replace(log_probs=None) if labels_only else hyp

    return _timed_compile(fn, x, p)


def jaxctc_beam_padded(log_probs, paddings, width, **options):
    x, p = jnp.asarray(log_probs), jnp.asarray(paddings)
    return _timed_compile(
        lambda x, p: jaxctc.prefix_beam_search(x, p, beam_width=width, **options),
        x,
        p,
    )


def numpy_greedy(log_probs, paddings):
    """NumPy's argmax per frame, then the collapse, to a list per line."""
    lengths = lengths_of(paddings)

    def run():
        best = np.argmax(log_probs, axis=-1)
        first = np.ones((best.shape[0], 1), bool)
        keep = (best != 0) & np.concatenate([first, best[:, 1:] != best[:, :-1]], 1)
        return [b[:n][k[:n]] for b, k, n in zip(best, keep, lengths, strict=True)]

    return None, run


def _subset(batch, subset):
    return batch if subset is None else min(batch, subset)


def flashlight_beam(log_probs, paddings, width, tokens, subset=None):
    """flashlight-text's lexicon-free CTC decoder, zero LM, one line at a time,
    with torchaudio's defaults (beam threshold 50, max merging). With
    ``subset`` it decodes the first lines only and reports the time scaled to
    the whole batch."""
    from flashlight.lib.text import decoder as fl

    options = fl.LexiconFreeDecoderOptions(
        beam_size=width,
        beam_size_token=tokens,
        beam_threshold=50.0,
        lm_weight=0.0,
        sil_score=0.0,
        log_add=False,
        criterion_type=fl.CriterionType.CTC,
    )
    decoder = fl.LexiconFreeDecoder(options, fl.ZeroLM(), 0, 0, [])
    return None, _line_by_line(decoder, log_probs, paddings, subset)


def _line_by_line(decoder, log_probs, paddings, subset):
    """A flashlight decoder run on each line at its length (the first
    ``subset`` lines, the time scaled to the batch)."""
    lengths = lengths_of(paddings)
    count = _subset(log_probs.shape[0], subset)
    lines = [np.ascontiguousarray(log_probs[i, : lengths[i]]) for i in range(count)]

    def run():
        start = time.perf_counter()
        for e in lines:
            decoder.decode(e.ctypes.data, e.shape[0], e.shape[1])
        return (time.perf_counter() - start) * log_probs.shape[0] / count

    return run


def flashlight_lexicon_lm(log_probs, paddings, width, labels, lm, subset=None):
    """flashlight-text's LexiconDecoder with its bundled KenLM on ``lm``'s
    ARPA file (a dict: ``path``, ``words``, ``weight`` and ``word_bonus`` in
    jaxctc's natural-log units, ``unk_score``), one line at a time, every
    token per frame, the lexicon's spellings ending on the delimiter " "
    (as torchaudio's wav2vec2 lexicons do), its look-ahead smeared by max."""
    from flashlight.lib.text import decoder as fl
    from flashlight.lib.text import dictionary

    words = dictionary.Dictionary()
    for w in ("<s>", "</s>", "<unk>", *lm["words"]):
        words.add_entry(w)
    kenlm = fl.KenLM(lm["path"], words)
    index = {x: i for i, x in enumerate(labels)}
    space = index[" "]
    trie = fl.Trie(len(labels), space)
    start = kenlm.start(False)
    for w in lm["words"]:
        _, score = kenlm.score(start, words.get_index(w))
        trie.insert([index[c] for c in w] + [space], words.get_index(w), score)
    trie.smear(fl.SmearingMode.MAX)
    options = fl.LexiconDecoderOptions(
        beam_size=width,
        beam_size_token=len(labels),
        beam_threshold=50.0,
        lm_weight=lm["weight"] * np.log(10.0),  # its LM scores are log10
        word_score=lm["word_bonus"],
        unk_score=lm["unk_score"],
        sil_score=0.0,
        log_add=False,
        criterion_type=fl.CriterionType.CTC,
    )
    decoder = fl.LexiconDecoder(
        options, trie, kenlm, space, 0, words.get_index("<unk>"), [], False
    )
    return None, _line_by_line(decoder, log_probs, paddings, subset)


def tf_padded(log_probs, paddings, width=None, subset=None):
    """TF's beam search (``width``) or greedy decoder (``width=None``) on the
    whole batch, or on its first ``subset`` lines with the time scaled."""
    import tensorflow as tf

    count = _subset(log_probs.shape[0], subset)
    x = tf.constant(np.transpose(blank_last(log_probs[:count]), (1, 0, 2)))
    lengths = tf.constant(lengths_of(paddings[:count]))

    def run():
        start = time.perf_counter()
        if width is None:
            decoded, scores = tf.nn.ctc_greedy_decoder(x, lengths, blank_index=-1)
        else:
            decoded, scores = tf.nn.ctc_beam_search_decoder(x, lengths, width)
        scores.numpy()
        decoded[0].values.numpy()
        return (time.perf_counter() - start) * log_probs.shape[0] / count

    return None, run


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


def random_section(repeats, python, skip_keras):
    """The first benchmark: random peaky logits at K = 29 (and one K = 1024)."""
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
    if not skip_keras:
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

    print("## Random logits\n")
    print(table(rows))
    print(
        f"\nCompile time of `jit(prefix_beam_search)`, B = 32, K = 29, beam 16 "
        f"(median of 3): T = 200: {short:.2f} s, T = 2000: {long:.2f} s, "
        f"ratio {long / short:.2f} (goal <= 1.5)."
    )


def top1(hyp):
    """The best hypothesis of each line, as a tuple of labels."""
    labels = np.asarray(hyp.labels[:, 0] if hyp.labels.ndim == 3 else hyp.labels)
    pads = np.asarray(
        hyp.label_paddings[:, 0] if hyp.labels.ndim == 3 else hyp.label_paddings
    )
    return [
        tuple(row[pad == 0].tolist()) for row, pad in zip(labels, pads, strict=True)
    ]


def agreement(a, b):
    return float(np.mean([x == y for x, y in zip(a, b, strict=True)]))


# The pruning options measured, with the settings of the peers they mirror.
PRUNING = {
    "token_top_k=4": dict(token_top_k=4),
    "token_top_k=32 (flashlight's beam_size_token)": dict(token_top_k=32),
    "token_min_log_prob=-5 (pyctcdecode's token_min_logp)": dict(
        token_min_log_prob=-5.0
    ),
    "blank_skip_log_prob=log(0.999)": dict(blank_skip_log_prob=float(np.log(0.999))),
}


def padded_case(name, x, p, repeats, python, slow_subset, widths=(16, 64)):
    """Every contestant on one padded batch; returns the table's rows, the
    goal ratios and the top-1 agreement of the pruning options."""
    batch, _, classes = x.shape
    width = widths[0]
    contestants = {
        "jaxctc.greedy_decode": jaxctc_greedy_padded(x, p),
        "jaxctc.greedy_decode, labels only (jit drops the scores)": (
            jaxctc_greedy_padded(x, p, labels_only=True)
        ),
        "NumPy greedy (argmax + collapse)": numpy_greedy(x, p),
        "tf.nn.ctc_greedy_decoder": tf_padded(x, p),
    }
    for w in widths:
        contestants[f"jaxctc.prefix_beam_search W={w}"] = jaxctc_beam_padded(x, p, w)
    for label, options in PRUNING.items():
        contestants[f"jaxctc W={width}, {label}"] = jaxctc_beam_padded(
            x, p, width, **options
        )
    contestants[f"pyctcdecode W={width} (no LM, its defaults, line by line)"] = (
        pyctcdecode_beam(x, width, python, lengths_of(p))
    )
    contestants[f"flashlight-text W={width}, 32 tokens/frame"] = flashlight_beam(
        x, p, width, 32
    )
    # Their cost grows with K: fewer lines as K grows (10 at K = 1024).
    subset = None if classes <= 64 else max(1, round(slow_subset * 1024 / classes))
    note = "" if subset is None else f" (first {subset} lines, time x {batch}/{subset})"
    contestants[f"flashlight-text W={width}, all tokens{note}"] = flashlight_beam(
        x, p, width, classes, subset
    )
    contestants[f"tf.nn.ctc_beam_search_decoder W={width}{note}"] = tf_padded(
        x, p, width, subset
    )
    medians = interleave(contestants, repeats)
    for _, run in contestants.values():
        if isinstance(run, PyctcdecodeWorker):
            run.close()

    def med(prefix):
        return next(v for k, v in medians.items() if k.startswith(prefix))

    beam = med(f"jaxctc.prefix_beam_search W={width}")
    goals = [
        ("greedy / NumPy greedy", med("jaxctc.greedy_decode") / med("NumPy"), "<= 2"),
        (
            "greedy (labels only) / NumPy greedy",
            med("jaxctc.greedy_decode, labels") / med("NumPy"),
            "<= 2",
        ),
        (f"beam W={width} / pyctcdecode", beam / med("pyctcdecode"), "<= 1/3"),
        (
            f"beam W={width} / flashlight (32 tokens)",
            beam / med("flashlight-text W=16, 32"),
            "<= 1/2",
        ),
        (f"beam W={width} / jaxctc greedy", beam / med("jaxctc.greedy_decode"), "<= 3"),
    ]
    if len(widths) > 1:
        goals.append(
            (
                f"beam W={widths[1]} / beam W={width}",
                med(f"jaxctc.prefix_beam_search W={widths[1]}") / beam,
                "<= 1.5",
            )
        )
    rows = [
        (name, key, compile_s, medians[key], medians[key] / beam, "")
        for key, (compile_s, _) in contestants.items()
    ]
    # Top-1 agreement of each pruning option with the exact search.
    xj, pj = jnp.asarray(x), jnp.asarray(p)
    exact = top1(jaxctc.prefix_beam_search(xj, pj, beam_width=width))
    agree = {
        label: agreement(
            top1(jaxctc.prefix_beam_search(xj, pj, beam_width=width, **options)),
            exact,
        )
        for label, options in PRUNING.items()
    }
    agree["greedy"] = agreement(top1(jaxctc.greedy_decode(xj, pj)), exact)
    return rows, goals, agree


def padded_table(rows):
    lines = [
        "| case | implementation | compile (s) | median (ms) | time / jaxctc beam W=16 |",
        "|---|---|---:|---:|---:|",
    ]
    for case, name, compile_s, median, ratio, _ in rows:
        compile_text = "" if compile_s is None else f"{compile_s:.2f}"
        lines.append(
            f"| {case} | {name} | {compile_text} | {median * 1e3:.1f} | {ratio:.3f} |"
        )
    return "\n".join(lines)


def goals_table(goals):
    lines = ["| case | ratio | value | goal |", "|---|---|---:|---|"]
    for case, items in goals:
        for name, value, goal in items:
            lines.append(f"| {case} | {name} | {value:.3f} | {goal} |")
    return "\n".join(lines)


def peaky_section(classes, batch, frames, repeats, python, slow_subset):
    rows, goals, agree = [], [], {}
    for k in classes:
        x, p = model_like_log_probs(batch, frames, k, seed=k)
        case = f"({batch}, {frames}, {k})"
        print(f"{case}: {describe(x, p)}", flush=True)
        r, g, a = padded_case(case, x, p, repeats, python, slow_subset)
        rows += r
        goals.append((case, g))
        agree[case] = a
        jax.clear_caches()
    return rows, goals, agree


def crnn_logits(workdir, batch):
    """The CRNN example's trained model on ``batch`` fresh test lines."""
    crnn = os.path.join(os.path.dirname(__file__), "..", "examples", "crnn")
    sys.path.insert(0, os.path.abspath(crnn))
    import data
    import predict
    from flax import nnx

    model, config = predict.load_model(__import__("pathlib").Path(workdir))
    model.eval()
    renderer = data.Renderer(config.height, config.width, config.max_len, config.fonts)
    test = data.test_set(renderer, batch, seed=12345)
    logits = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(test.images))
    log_probs = np.asarray(jax.nn.log_softmax(logits), np.float32)
    return log_probs, np.zeros(log_probs.shape[:2], np.float32)


def print_agreement(agree):
    print("\n| case | decoder | top-1 equal to the exact search (W=16) |")
    print("|---|---|---:|")
    for case, items in agree.items():
        for name, value in items.items():
            print(f"| {case} | {name} | {value:.1%} |")


def random_words(count, seed=0):
    """About ``count`` distinct random lowercase words of 2-8 letters."""
    rng = np.random.default_rng(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    return sorted(
        {"".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(count)}
    )


def synthetic_arpa(path, words, order=3, count=150000, seed=0):
    """An ARPA file of order ``order`` over ``words``: ``count`` random
    bigrams, then per order ``count`` random extensions of random n-grams of
    the order below, with every context and suffix listed, random
    probabilities and backoffs. Returns the number of n-grams."""
    rng = np.random.default_rng(seed)
    v = len(words)
    grams = [np.arange(v)[:, None], np.unique(rng.integers(0, v, (count, 2)), axis=0)]
    while len(grams) < order:
        contexts = grams[-1][rng.integers(0, len(grams[-1]), count)]
        grams.append(
            np.unique(
                np.concatenate([contexts, rng.integers(0, v, (count, 1))], 1), axis=0
            )
        )
    # Every suffix listed too, as real models have them (KenLM requires it).
    for n in range(order - 1, 1, -1):
        grams[n - 1] = np.unique(
            np.concatenate([grams[n - 1], grams[n][:, 1:]]), axis=0
        )
    with open(path, "w") as f:
        f.write("\\data\\\n")
        sizes = [v + 3] + [len(g) for g in grams[1:]]
        f.writelines(f"ngram {n + 1}={size}\n" for n, size in enumerate(sizes))
        for n, g in enumerate(grams):
            f.write(f"\n\\{n + 1}-grams:\n")
            if n == 0:
                f.write("-99\t<s>\t-0.5\n-1.5\t</s>\n-6\t<unk>\n")
            p = -rng.uniform(0.1 if n else 2, 6 - 2 * min(n, 2), len(g))
            back = "\t-0.3" if n + 1 < order else ""
            f.writelines(
                f"{p[i]:.4f}\t{' '.join(words[w] for w in gram)}{back}\n"
                for i, gram in enumerate(g)
            )
        f.write("\n\\end\\\n")
    return sum(sizes)


def bpe_labels(words, size):
    """A BPE-like vocabulary of ``size`` classes over ``words``: the blank,
    every letter with and without the word-initial "▁", then the most common
    2-4 letter pieces of the words (word-initial or inside), so that every
    word can be spelled."""
    from collections import Counter

    letters = sorted({c for w in words for c in w})
    pieces = Counter()
    for w in words:
        for n in (2, 3, 4):
            for i in range(len(w) - n + 1):
                pieces[("▁" if i == 0 else "") + w[i : i + n]] += 1
    labels = [""] + [f"▁{c}" for c in letters] + letters
    labels += [p for p, _ in pieces.most_common(size - len(labels))]
    return labels


def _load_lm(path, labels, count, **weights):
    start = time.perf_counter()
    lm = jaxctc.NGramLM.from_arpa(path, labels, **weights)
    load = time.perf_counter() - start
    print(
        f"{os.path.basename(path)}: {count} n-grams, loaded in {load:.1f} s; tables "
        f"{lm.nbytes / 2**20:.1f} MiB, {lm.nbytes / count:.1f} bytes per n-gram.",
        flush=True,
    )
    return lm


def _beam_with(x, p, *scorers):
    return _timed_compile(
        lambda x, p, *s: jaxctc.prefix_beam_search(x, p, beam_width=16, scorers=s),
        x,
        p,
        *scorers,
    )


PYCTC_LM = "pyctcdecode + KenLM W=16 (line by line)"


def word_lm_case(rows, case, path, words, labels, count, repeats, python, **options):
    """One row group of the LM section: the search with and without the word
    LM of ``path`` at (32, 400, K = len(labels)), flashlight's LexiconDecoder
    with KenLM (character labels only) and pyctcdecode with KenLM on the same
    file. Returns the loaded LM."""
    weights = dict(weight=0.5, word_bonus=1.0, unk_score=-10.0)
    lm = _load_lm(path, labels, count, **weights, **options)
    x, p = model_like_log_probs(32, 400, len(labels))
    ours = "jaxctc W=16 + NGramLM"
    contestants = {
        "jaxctc W=16, no LM": _beam_with(jnp.asarray(x), jnp.asarray(p)),
        ours: _beam_with(jnp.asarray(x), jnp.asarray(p), lm),
    }
    goals = {"jaxctc W=16, no LM": "<= 1.5"}
    if " " in labels:
        fl = "flashlight-text LexiconDecoder + KenLM W=16"
        lexicon = dict(path=path, words=words, **weights)
        contestants[fl] = flashlight_lexicon_lm(x, p, 16, labels, lexicon)
        goals[fl] = "<= 1/3"
    try:
        options = dict(labels=labels, path=path, alpha=0.5, beta=1.0)
        contestants[PYCTC_LM] = pyctcdecode_beam(
            x, 16, python, lengths_of(p), lm=options
        )
        goals[PYCTC_LM] = "<= 1/10"
    except (ImportError, RuntimeError) as e:
        print(f"pyctcdecode with KenLM unavailable ({e}): its row is skipped.")
    medians = interleave(contestants, repeats)
    if PYCTC_LM in contestants:
        contestants[PYCTC_LM][1].close()
    add_case(rows, _sized(case, count, lm), contestants, medians, ours, goals)
    return lm


def _sized(case, count, lm):
    """The case's name with the LM's size and its tables' memory."""
    return f"{case} ({count:,} n-grams, {lm.nbytes / 2**20:.1f} MiB)"


def python_docs_text():
    """English text that every Python ships: the sentences of
    ``pydoc_data.topics`` (``help("topics")``), lower-cased, as words of
    letters and apostrophes."""
    import re
    from pydoc_data.topics import topics

    texts = []
    for text in topics.values():
        for paragraph in re.split(r"\n\s*\n", text):
            joined = " ".join(paragraph.split())
            for sentence in re.split(r"(?<=[.!?])\s+", joined):
                words = re.findall(r"[a-z']+", sentence.lower())
                if len(words) >= 2:
                    texts.append(" ".join(words))
    return texts


def lm_section(repeats, python):
    """The search with and without an n-gram LM, and the peers with the same
    ARPA file: word LMs at K = 29 (a Kneser-Ney 4-gram of Python's own
    documentation, built with kaldingram, and a synthetic 3-gram), the
    synthetic 3-gram over a BPE vocabulary at K = 1024, and a token 4-gram at
    K = 1024."""
    rows = []
    labels = [""] + list("abcdefghijklmnopqrstuvwxyz'") + [" "]  # K = 29
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(
            0, os.path.join(os.path.dirname(__file__), "..", "examples", "crnn")
        )
        import corpus

        texts = python_docs_text()
        path = os.path.join(tmp, "docs4.arpa")
        count = sum(corpus.build_arpa(texts, path, order=4).values())
        words = sorted({w for t in texts for w in t.split()})
        print(f"docs4.arpa: {len(texts)} sentences, {len(words)} distinct words.")
        word_lm_case(
            rows,
            "(32, 400, 29), word 4-gram of Python's docs",
            path,
            words,
            labels,
            count,
            repeats,
            python,
        )

        words = random_words(20000)
        path = os.path.join(tmp, "words3.arpa")
        count = synthetic_arpa(path, words, order=3)
        weights = dict(weight=0.5, word_bonus=1.0, unk_score=-10.0)
        word_lm = word_lm_case(
            rows,
            "(32, 400, 29), synthetic word 3-gram",
            path,
            words,
            labels,
            count,
            repeats,
            python,
        )

        # The same word 3-gram on a BPE vocabulary ("▁" begins a word).
        word_lm_case(
            rows,
            "(32, 400, 1024 BPE), synthetic word 3-gram",
            path,
            words,
            bpe_labels(words, 1024),
            count,
            repeats,
            python,
            word_delimiter="▁",
        )

        # Compile time against T and the LM's size: the tables are arguments
        # of the compiled search, so only their static fields (order, probes)
        # could change it.
        small_path = os.path.join(tmp, "words3_small.arpa")
        small_count = synthetic_arpa(small_path, words, order=3, count=5000)
        small = _load_lm(small_path, labels, small_count, **weights)
        print("\n| LM | T | compile (s) |\n|---|---:|---:|")
        for name, model in (
            (f"{small_count} n-grams", small),
            (f"{count} n-grams", word_lm),
        ):
            for frames in (400, 1600):
                x, p = model_like_log_probs(32, frames, len(labels))
                jax.clear_caches()
                seconds = _beam_with(jnp.asarray(x), jnp.asarray(p), model)[0]
                print(
                    f"| {name} (probes {model.tables.arcs.probes}) | {frames} | "
                    f"{seconds:.2f} |",
                    flush=True,
                )

        tokens = [""] + [f"t{k}" for k in range(1, 1024)]  # K = 1024
        path = os.path.join(tmp, "tokens4.arpa")
        count = synthetic_arpa(path, tokens[1:], order=4)
        lm = _load_lm(path, tokens, count, weight=0.3)
        x, p = model_like_log_probs(32, 400, len(tokens))
        ours = "jaxctc W=16 + token NGramLM"
        contestants = {
            "jaxctc W=16, no LM": _beam_with(jnp.asarray(x), jnp.asarray(p)),
            ours: _beam_with(jnp.asarray(x), jnp.asarray(p), lm),
        }
        medians = interleave(contestants, repeats)
        add_case(
            rows,
            _sized("(32, 400, 1024), token 4-gram", count, lm),
            contestants,
            medians,
            ours,
            {"jaxctc W=16, no LM": "<= 2"},
        )
    print(table(rows), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--section",
        choices=("random", "peaky", "crnn", "lm", "all"),
        default="all",
        help="which benchmark to run (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="3 repeats, not 7")
    parser.add_argument(
        "--classes",
        default="29,1024,8192,18000",
        help="vocabulary sizes K of the peaky section",
    )
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument(
        "--slow-subset",
        type=int,
        default=10,
        help="lines decoded by the slowest peers at K = 1024, fewer at larger K "
        "(their times are scaled to the batch)",
    )
    parser.add_argument(
        "--crnn-workdir",
        default="workdir/crnn",
        help="a trained CRNN example (python examples/crnn/train.py)",
    )
    parser.add_argument(
        "--pyctcdecode-python",
        default=os.environ.get("PYCTCDECODE_PYTHON"),
        help="an interpreter with pyctcdecode, if this one lacks it (it pins "
        "numpy < 2); default: $PYCTCDECODE_PYTHON",
    )
    parser.add_argument("--skip-keras", action="store_true")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    python = args.pyctcdecode_python
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.python_version()}, jax {jax.__version__}; "
        f"{datetime.date.today().isoformat()}; median of {repeats} rounds; "
        f"load average {os.getloadavg()[0]:.2f} at the start.\n",
        flush=True,
    )
    if args.section in ("random", "all"):
        random_section(repeats, python, args.skip_keras)
    if args.section in ("lm", "all"):
        lm_section(repeats, python)
    rows, goals, agree = [], [], {}
    if args.section in ("peaky", "all"):
        classes = [int(k) for k in args.classes.split(",")]
        r, g, a = peaky_section(
            classes, args.batch, args.frames, repeats, python, args.slow_subset
        )
        rows, goals, agree = rows + r, goals + g, {**agree, **a}
    if args.section in ("crnn", "all"):
        if os.path.isdir(args.crnn_workdir):
            x, p = crnn_logits(args.crnn_workdir, args.batch)
            case = f"CRNN example ({x.shape[0]}, {x.shape[1]}, {x.shape[2]})"
            print(f"{case}: {describe(x, p)}", flush=True)
            r, g, a = padded_case(case, x, p, repeats, python, args.slow_subset)
            rows, goals, agree = rows + r, goals + [(case, g)], {**agree, case: a}
        else:
            print(f"No trained CRNN in {args.crnn_workdir}: its case is skipped.")
    if rows:
        print()
        print(padded_table(rows))
        print()
        print(goals_table(goals))
        print_agreement(agree)


if __name__ == "__main__":
    main()
