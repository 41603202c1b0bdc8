"""NGramLM as a fusion scorer: its contribution to a complete hypothesis is
the documented formula, computed from the float64 backoff reference, on
character and on BPE vocabularies (whose running contributions equal the
reference's too)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxctc import NGramLM
from tests import arpa_references as aref
from tests import references as ref
from tests.test_hotwords import SIZE, check_running

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


def _word_reference(model, order, text, weight, bonus, unk_score, delimiter=" "):
    words = [w for w in text.split(delimiter) if w]
    log_probs = aref.sentence_log_probs(model, order, words)
    oov = sum((w,) not in model for w in words)
    return weight * sum(log_probs) + bonus * len(words) + unk_score * oov


@pytest.mark.parametrize("order", [1, 2, 3])
def test_word_level_contribution_is_the_formula(tmp_path, order):
    rng = np.random.default_rng(order)
    path = tmp_path / "words.arpa"
    aref.write_random_arpa(path, order, order=order, words=WORDS, drop=0.3)
    model, _ = aref.read_model(path)
    weight, bonus, unk = 0.7, 1.3, -4.0
    lm = NGramLM.from_arpa(path, LABELS, weight=weight, word_bonus=bonus, unk_score=unk)
    assert lm.level == "word"
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
    words = aref.write_random_arpa(path, 0, order=3, vocab=6)
    model, _ = aref.read_model(path)
    labels = words + [""]  # the blank last, as pyctcdecode has it
    lm = NGramLM.from_arpa(path, labels, weight=0.4, token_bonus=0.25)
    assert lm.level == "token"
    for _ in range(30):
        tokens = list(rng.integers(0, 6, rng.integers(0, 12)))
        got = float(_contribution(lm, *_padded(tokens)))
        seq = [labels[t] for t in tokens]
        want = 0.4 * sum(aref.sentence_log_probs(model, 3, seq)) + 0.25 * len(seq)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_score_of_many_candidates_equals_one_at_a_time(tmp_path):
    path = tmp_path / "words.arpa"
    aref.write_random_arpa(path, 5, order=3, words=WORDS)
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
    aref.write_random_arpa(path, 2, order=2, words=WORDS)
    lm = NGramLM.from_arpa(path, LABELS, weight=0.0, word_bonus=0.0, unk_score=0.0)
    tokens = [LABELS.index(c) for c in "ab ba zz c"]
    assert float(_contribution(lm, *_padded(tokens))) == 0.0
    heavier = NGramLM.from_arpa(path, LABELS, weight=1.0, word_bonus=2.0)
    before = _contribution._cache_size()
    _contribution(heavier, *_padded(tokens))
    assert _contribution._cache_size() == before  # no recompile for new weights


def test_bad_arguments_name_themselves(tmp_path):
    path = tmp_path / "words.arpa"
    aref.write_random_arpa(path, 3, order=2, words=WORDS + ["xy", "q"])
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


@pytest.mark.parametrize("order", [1, 2, 3])
def test_bpe_word_level_contribution_is_the_formula(tmp_path, order):
    rng = np.random.default_rng(10 + order)
    path = tmp_path / "words.arpa"
    aref.write_random_arpa(path, order, order=order, words=WORDS, drop=0.3)
    model, _ = aref.read_model(path)
    weight, bonus, unk = 0.7, 1.3, -4.0
    # Pieces of OOV words ("zab", "bz") in the vocabulary too.
    labels = ref.random_bpe_labels(rng, WORDS + ["zab", "bz"], 10)
    lm = NGramLM.from_arpa(
        path,
        labels,
        word_delimiter="▁",
        weight=weight,
        word_bonus=bonus,
        unk_score=unk,
    )
    assert lm.level == "word"
    fusion = aref.word_fusion(model, order, labels, "▁", weight, bonus, unk)
    for _ in range(40):
        tokens = ref.random_bpe_tokens(rng, labels, WORDS + ["zab", "bz", "ca"], SIZE)
        # The running contribution after every token equals the reference's
        # (words completed so far, unk_score for a prefix of no LM word).
        check_running(lm, fusion, tokens)
        text = "".join(labels[k] for k in tokens)
        want = _word_reference(model, order, text, weight, bonus, unk, "▁")
        got = float(_contribution(lm, *_padded(tokens)))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=text)


def test_bpe_and_character_labels_agree_on_the_same_text(tmp_path):
    # "▁bun" "ny", "▁b" "un" "n" "y" and "b" "u" "n" "n" "y" after a space
    # spell the same words: the same contributions.
    path = tmp_path / "words.arpa"
    words = ["bugs", "bunny", "bun", "by"]
    aref.write_random_arpa(path, 4, order=3, words=words)
    chars = ["", " ", "b", "g", "n", "s", "u", "y"]
    bpe = ["", "▁bugs", "▁bun", "ny", "▁b", "un", "n", "y", "s", "▁", "u", "g"]
    by_chars = NGramLM.from_arpa(path, chars)
    by_pieces = NGramLM.from_arpa(path, bpe, word_delimiter="▁")
    for text, pieces in [
        ("bugs bunny", ["▁bugs", "▁bun", "ny"]),
        ("bunny bugs by", ["▁b", "un", "n", "y", "▁bugs", "▁b", "y"]),
        (" bun  bunn", ["▁", "▁bun", "▁", "▁bun", "n"]),
        ("ugs bun", ["u", "g", "s", "▁bun"]),
    ]:
        want = _contribution(by_chars, *_padded([chars.index(c) for c in text]))
        got = _contribution(by_pieces, *_padded([bpe.index(x) for x in pieces]))
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=text)


def test_bpe_bad_arguments_name_themselves(tmp_path):
    path = tmp_path / "words.arpa"
    aref.write_random_arpa(path, 3, order=2, count=8, words=["bugs", "bunny", "xy"])
    bpe = ["", "▁bugs", "▁bun", "ny"]
    with pytest.raises(ValueError, match="`word_delimiter`"):
        NGramLM.from_arpa(path, ["", "bugs", "bun", "ny"], word_delimiter="▁")
    with pytest.raises(ValueError, match="`word_delimiter`"):
        NGramLM.from_arpa(path, bpe)  # BPE needs word_delimiter="▁"
    with pytest.raises(ValueError, match="`word_delimiter`"):
        NGramLM.from_arpa(path, bpe, word_delimiter=None, level="word")
    with pytest.raises(ValueError, match="`word_delimiter`"):
        NGramLM.from_arpa(path, bpe, word_delimiter="")
    with pytest.raises(ValueError, match="`labels`"):
        NGramLM.from_arpa(path, bpe + ["ny"], word_delimiter="▁")
    with pytest.warns(UserWarning, match="1 of the LM's 3 words cannot be spelled"):
        NGramLM.from_arpa(path, bpe, word_delimiter="▁")
