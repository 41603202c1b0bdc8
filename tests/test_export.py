"""Every public computation exports for CPU, GPU and TPU, with no custom calls.

``jax.export`` lowers for all three platforms here, on a CPU-only machine: it
fails for an op that one of them cannot lower, and it refuses host callbacks
outright. On top of that the module text must hold no ``custom_call`` (host
callbacks, and also vendor libraries such as LAPACK/cuSOLVER that a TPU would
not have) other than XLA's own ``ApproxTopK``, which every XLA backend lowers
itself (the beam search's exact top-k, see ``jaxctc._frames.top_k``). The CPU artifact,
serialized and read back, must give what the function gives directly.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxctc
from tests import arpa_references as aref
from tests.versions import jax_at_least

PLATFORMS = ("cpu", "cuda", "tpu")
B, T, K, N = 3, 7, 5, 3


def _inputs():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(B, T, K)).astype(np.float32)
    logit_paddings = np.zeros((B, T), np.float32)
    logit_paddings[1, 5:] = 1.0
    labels = rng.integers(1, K, size=(B, N)).astype(np.int32)
    label_paddings = np.zeros((B, N), np.float32)
    label_paddings[2, 1:] = 1.0
    return logits, logit_paddings, labels, label_paddings


def _loss_and_grad(logits, logit_paddings, labels, label_paddings):
    def total(x):
        return jaxctc.ctc_loss(x, logit_paddings, labels, label_paddings).sum()

    return jax.value_and_grad(total)(logits)


# The loss and the aligner: always present, never skipped.
ALIGNED = {
    "ctc_loss value_and_grad": _loss_and_grad,
    "ctc_loss_with_forward_probs": jaxctc.ctc_loss_with_forward_probs,
    "forced_align": jaxctc.forced_align,
    "posteriors": jaxctc.posteriors,
}

# Decoders take (logits, logit_paddings); skipped only until they land on this
# branch (the lead makes these mandatory at merge).
DECODERS = ("greedy_decode", "prefix_beam_search")


def custom_calls(module_text):
    """The targets of every ``stablehlo.custom_call`` in a module's text."""
    return set(re.findall(r"custom_call\s*@([\w.$-]+)", module_text))


# XLA built-ins that reach StableHLO as custom calls: no host, no vendor library.
XLA_BUILTINS = {"ApproxTopK"}


def _export_and_check(fn, args):
    specs = [jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype) for a in args]
    exported = jax.export.export(jax.jit(fn), platforms=PLATFORMS)(*specs)
    assert exported.platforms == PLATFORMS
    assert custom_calls(exported.mlir_module()) <= XLA_BUILTINS

    restored = jax.export.deserialize(exported.serialize())
    got = restored.call(*args)
    want = jax.jit(fn)(*args)
    got_leaves, got_tree = jax.tree.flatten(got)
    want_leaves, want_tree = jax.tree.flatten(want)
    assert got_tree == want_tree
    for g, w in zip(got_leaves, want_leaves, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6)


def test_custom_call_detector_sees_vendor_calls():
    # The check above is only worth something if it finds custom calls: a
    # Cholesky factorisation lowers to LAPACK on CPU and cuSOLVER on GPU.
    spec = jax.ShapeDtypeStruct((3, 3), jnp.float32)
    text = jax.export.export(jax.jit(jnp.linalg.cholesky), platforms=("cpu", "cuda"))(
        spec
    ).mlir_module()
    calls = custom_calls(text)
    assert any("lapack" in c for c in calls)
    if jax_at_least("0.9"):  # jax 0.8 lowers it for CUDA without cuSOLVER
        assert any("cusolver" in c for c in calls)


@pytest.mark.parametrize("name", sorted(ALIGNED))
def test_exports_loss_and_alignment(name):
    _export_and_check(ALIGNED[name], _inputs())


@pytest.mark.parametrize("name", DECODERS)
def test_exports_decoders(name):
    logits, logit_paddings, _, _ = _inputs()
    _export_and_check(getattr(jaxctc, name), (logits, logit_paddings))


# The fusion scorers, on the K = 5 classes of _inputs (blank 0): their tables
# are constants of the exported module (the beam search's `scorers`).
CHARS = ["", "a", "b", "c", " "]
PIECES = ["", "▁a", "b", "▁b", "a"]  # BPE: word-initial pieces and inner ones


def _scorers(tmp_path, name):
    words = tmp_path / "words.arpa"
    aref.write_random_arpa(words, 0, order=2, count=4, words=["ab", "ba", "c"])
    if name == "NGramLM word-level":
        return (jaxctc.NGramLM.from_arpa(words, CHARS),)
    if name == "NGramLM word-level BPE":
        pieces = tmp_path / "pieces.arpa"
        aref.write_random_arpa(pieces, 1, order=2, count=4, words=["ab", "ba", "a"])
        return (jaxctc.NGramLM.from_arpa(pieces, PIECES, word_delimiter="▁"),)
    if name == "NGramLM token-level":
        tokens = tmp_path / "tokens.arpa"
        aref.write_random_arpa(tokens, 2, order=3, count=4, words=CHARS[1:4])
        return (jaxctc.NGramLM.from_arpa(tokens, CHARS),)
    hot = jaxctc.Hotwords(["ab", "c a"], CHARS, weight=2.0)
    lex = jaxctc.Lexicon(["ab", "ba", "c"], CHARS)
    if name == "Hotwords":
        return (hot,)
    if name == "Lexicon":
        return (lex,)
    return (jaxctc.NGramLM.from_arpa(words, CHARS), hot, lex)


SCORERS = (
    "NGramLM word-level",
    "NGramLM word-level BPE",
    "NGramLM token-level",
    "Hotwords",
    "Lexicon",
    "all three",
)


@pytest.mark.parametrize("name", SCORERS)
def test_exports_beam_search_with_scorers(tmp_path, name):
    logits, logit_paddings, _, _ = _inputs()
    search = functools.partial(
        jaxctc.prefix_beam_search,
        beam_width=3,
        top_paths=2,
        scorers=_scorers(tmp_path, name),
    )
    _export_and_check(search, (logits, logit_paddings))
