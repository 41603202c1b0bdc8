"""NGramLM as a fusion scorer: its contribution to a complete hypothesis is
the documented formula, computed from the float64 backoff reference."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxctc import NGramLM
from tests import arpa_references as ref

WORDS = ["a", "ab", "ba", "abc", "cab", "bb", "c", "aca"]
LABELS = ["", "a", "b", "c", " ", "z"]  # blank, letters, delimiter, an unused letter


@jax.jit
def _contribution(lm, tokens, length):
    """The scorer's total for the hypothesis ``tokens[:length]``, one token
    at a time (``score`` with one candidate), then ``final``."""

    def step(state, xs):
        token, ok = xs
        delta, new = lm.score(state, token[None])
        new = jax.tree.map(lambda n, s: jnp.where(ok, n[0], s), new, state)
        return new, jnp.where(ok, delta[0], 0.0)

    ok = jnp.arange(tokens.shape[0]) < length
    state, deltas = jax.lax.scan(step, lm.init(), (tokens, ok))
    return jnp.sum(deltas) + lm.final(state)


def _padded(tokens, size=24):
    out = np.zeros(size, np.int32)
    out[: len(tokens)] = tokens
    return jnp.asarray(out), len(tokens)


def _word_reference(model, order, text, weight, bonus, unk_score):
    words = [w for w in text.split(" ") if w]
    log_probs = ref.sentence_log_probs(model, order, words)
    oov = sum((w,) not in model for w in words)
    return weight * sum(log_probs) + bonus * len(words) + unk_score * oov


@pytest.mark.parametrize("order", [1, 2, 3])
def test_word_level_contribution_is_the_formula(tmp_path, order):
    rng = np.random.default_rng(order)
    path = tmp_path / "words.arpa"
    ref.write_random_arpa(path, order, order=order, words=WORDS, drop=0.3)
    model, _ = ref.read_model(path)
    weight, bonus, unk = 0.7, 1.3, -4.0
    lm = NGramLM.from_arpa(path, LABELS, weight=weight, word_bonus=bonus, unk_score=unk)
    assert lm.delimiter == 4
    for _ in range(40):
        # Words of the LM, OOV spellings, stray and repeated delimiters.
        parts = []
        for _ in range(rng.integers(0, 5)):
            kind = rng.random()
            if kind < 0.6:
                parts.append(str(rng.choice(WORDS)))
            elif kind < 0.8:
                parts.append("".join(rng.choice(list("abcz"), rng.integers(1, 4))))
            else:
                parts.append("")
        text = " ".join(parts) + (" " if rng.random() < 0.3 else "")
        tokens = [LABELS.index(c) for c in text]
        got = float(_contribution(lm, *_padded(tokens)))
        want = _word_reference(model, order, text, weight, bonus, unk)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=repr(text))


def test_token_level_contribution_is_the_formula(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tokens.arpa"
    words = ref.write_random_arpa(path, 0, order=3, vocab=6)
    model, _ = ref.read_model(path)
    labels = words + [""]  # the blank last, as pyctcdecode has it
    lm = NGramLM.from_arpa(path, labels, weight=0.4, token_bonus=0.25)
    assert lm.delimiter == -1
    for _ in range(30):
        tokens = list(rng.integers(0, 6, rng.integers(0, 12)))
        got = float(_contribution(lm, *_padded(tokens)))
        seq = [labels[t] for t in tokens]
        want = 0.4 * sum(ref.sentence_log_probs(model, 3, seq)) + 0.25 * len(seq)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_score_of_many_candidates_equals_one_at_a_time(tmp_path):
    path = tmp_path / "words.arpa"
    ref.write_random_arpa(path, 5, order=3, words=WORDS)
    lm = NGramLM.from_arpa(path, LABELS)
    rng = np.random.default_rng(1)
    # States after random prefixes, [4, 3] of them.
    state = lm.init((4, 3))
    for _ in range(6):
        token = jnp.asarray(rng.integers(1, 6, (4, 3, 1)), jnp.int32)
        _, new = lm.score(state, token)
        state = jax.tree.map(lambda x: x[..., 0], new)
    candidates = jnp.asarray(np.tile(np.arange(1, 6), (4, 3, 1)), jnp.int32)
    delta, new = jax.jit(lambda lm, s, c: lm.score(s, c))(lm, state, candidates)
    assert delta.shape == (4, 3, 5) and new.lm.shape == (4, 3, 5)
    for c in range(5):
        one, after = lm.score(state, candidates[..., c : c + 1])
        np.testing.assert_array_equal(delta[..., c], one[..., 0])
        np.testing.assert_array_equal(new.node[..., c], after.node[..., 0])
        np.testing.assert_array_equal(new.lm[..., c], after.lm[..., 0])


def test_weights_are_leaves_and_zero_weight_is_the_bonus_alone(tmp_path):
    path = tmp_path / "words.arpa"
    ref.write_random_arpa(path, 2, order=2, words=WORDS)
    lm = NGramLM.from_arpa(path, LABELS, weight=0.0, word_bonus=0.0, unk_score=0.0)
    tokens = [LABELS.index(c) for c in "ab ba zz c"]
    assert float(_contribution(lm, *_padded(tokens))) == 0.0
    heavier = NGramLM.from_arpa(path, LABELS, weight=1.0, word_bonus=2.0)
    before = _contribution._cache_size()
    _contribution(heavier, *_padded(tokens))
    assert _contribution._cache_size() == before  # no recompile for new weights


def test_bad_arguments_name_themselves(tmp_path):
    path = tmp_path / "words.arpa"
    ref.write_random_arpa(path, 3, order=2, words=WORDS + ["xy", "q"])
    with pytest.raises(ValueError, match="`weight`"):
        NGramLM.from_arpa(path, LABELS, weight=math.nan)
    with pytest.raises(ValueError, match="`word_bonus`"):
        NGramLM.from_arpa(path, LABELS, word_bonus=math.inf)
    with pytest.raises(ValueError, match="`word_delimiter`"):
        NGramLM.from_arpa(path, LABELS, word_delimiter="|")
    with pytest.raises(ValueError, match="`labels`"):
        NGramLM.from_arpa(path, LABELS + ["a"])
    with pytest.raises(ValueError, match="`level`"):
        NGramLM.from_arpa(path, LABELS, level="sentence")
    with pytest.warns(UserWarning, match="2 of the LM's 10 words cannot be spelled"):
        NGramLM.from_arpa(path, LABELS)
