"""Hotwords (phrase boosting): the running and final contributions equal a
plain phrase count on the text (tests/references.py), the beam search with
them equals the float64 textbook search with the same fusion, alone and with
an NGramLM, and pyctcdecode's hotword vectors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxctc
from jaxctc import Hotwords, NGramLM
from tests import arpa_references as aref
from tests import references as ref
from tests.test_fusion import LABELS as BUGS_LABELS
from tests.test_fusion import _bugs_bunny_logits, _text
from tests.test_ngram import BUGS_BUNNY

LABELS = ["", "a", "b", "c", " "]  # blank, letters, delimiter
SIZE = 16  # hypotheses are padded to this many tokens (one compile)


@jax.jit
def running(scorer, tokens, length):
    """``[SIZE]`` the scorer's total after each token of ``tokens[:length]``
    (one candidate per step), and the total with ``final``."""

    def step(carry, xs):
        state, total = carry
        token, ok = xs
        delta, new = scorer.score(state, token[None])
        new = jax.tree.map(lambda n, s: jnp.where(ok, n[0], s), new, state)
        total = total + jnp.where(ok, delta[0], 0.0)
        return (new, total), total

    ok = jnp.arange(tokens.shape[0]) < length
    start = (scorer.init(), jnp.float32(0.0))
    (state, total), partials = jax.lax.scan(step, start, (tokens, ok))
    return partials, total + scorer.final(state)


def check_running(scorer, fusion, tokens):
    """The scorer's running totals and final total equal the reference's."""
    partial, final = fusion
    padded = np.zeros(SIZE, np.int32)
    padded[: len(tokens)] = tokens
    partials, total = running(scorer, jnp.asarray(padded), len(tokens))
    want = [partial(tuple(tokens[: i + 1])) for i in range(len(tokens))]
    np.testing.assert_allclose(partials[: len(tokens)], want, atol=1e-5)
    np.testing.assert_allclose(
        total, partial(tuple(tokens)) + final(tuple(tokens)), atol=1e-5
    )


def random_text(rng, pieces, size):
    """Text of up to ``size`` characters, mostly ``pieces`` and spaces."""
    out = ""
    while len(out) < size:
        out += (
            str(rng.choice(pieces)) if rng.random() < 0.7 else rng.choice(list("abc "))
        )
    return out[: rng.integers(0, size + 1)]


CASES = [
    # (phrases, word_delimiter): whole words, nested and overlapping phrases,
    # class-index phrases (anywhere), no word boundaries.
    (["ab"], " "),
    (["ab", "abc", "b", "ab ca", "ca b"], " "),
    (["a a", "a", [1, 2], [2, 4, 1]], " "),
    (["ab", "bc", "abca", "c"], None),
    (["aba", "ab", "b"], None),
]


@pytest.mark.parametrize("phrases, delimiter", CASES)
def test_running_contribution_is_the_phrase_count(phrases, delimiter):
    rng = np.random.default_rng(len(str(phrases)))
    hot = Hotwords(phrases, LABELS, weight=1.7, word_delimiter=delimiter)
    fusion = ref.hotword_fusion(phrases, LABELS, 1.7, delimiter)
    words = [p for p in phrases if isinstance(p, str)]
    for _ in range(30):
        text = random_text(rng, words + [" "], SIZE)
        check_running(hot, fusion, [LABELS.index(c) for c in text])


def test_bpe_labels_match_whole_words_across_tokens():
    # Word-initial tokens carry the boundary: "▁bun" + "ny" is the word
    # "bunny", whichever way it is cut.
    labels = ["", "▁bugs", "▁bun", "ny", "▁b", "un", "n", "y", "s", "▁"]
    phrases = ["bunny", "bugs bunny", "bun", "nny"]
    hot = Hotwords(phrases, labels, weight=2.0, word_delimiter="▁")
    fusion = ref.hotword_fusion(phrases, labels, 2.0, "▁")
    rng = np.random.default_rng(3)
    for _ in range(40):
        check_running(hot, fusion, list(rng.integers(1, len(labels), 8)))
    # The full text: "▁bugs▁bun" + "ny" has both phrases once ("bun" is
    # not a whole word there, nor "nny").
    check_running(hot, fusion, [1, 2, 3])
    assert fusion[0]((1, 2, 3)) + fusion[1]((1, 2, 3)) == 4.0


def test_score_of_many_candidates_equals_one_at_a_time():
    hot = Hotwords(["ab", "b c", "abc"], LABELS, weight=1.0)
    rng = np.random.default_rng(1)
    score = jax.jit(lambda h, s, c: h.score(s, c))
    state = hot.init((4, 3))
    for _ in range(5):
        token = jnp.asarray(rng.integers(1, 5, (4, 3, 1)), jnp.int32)
        state = score(hot, state, token)[1][..., 0]
    candidates = jnp.asarray(np.tile(np.arange(1, 5), (4, 3, 1)), jnp.int32)
    delta, after = score(hot, state, candidates)
    assert delta.shape == after.shape == (4, 3, 4)
    for c in range(4):
        one, one_after = score(hot, state, candidates[..., c : c + 1])
        np.testing.assert_array_equal(delta[..., c], one[..., 0])
        np.testing.assert_array_equal(after[..., c], one_after[..., 0])
    # vmap over the hypotheses gives the same.
    mapped = jax.vmap(lambda s, c: hot.score(s, c))(state, candidates)
    np.testing.assert_array_equal(mapped[0], delta)


def test_weight_is_a_leaf_and_a_pytree_round_trip():
    tokens = jnp.asarray([1, 2, 4, 1, 2] + [0] * (SIZE - 5), jnp.int32)
    light = Hotwords(["ab"], LABELS, weight=1.0)
    _, total = running(light, tokens, 5)
    before = running._cache_size()
    _, heavier = running(Hotwords(["ab"], LABELS, weight=3.0), tokens, 5)
    assert running._cache_size() == before  # no recompile for a new weight
    assert float(total) == 2.0 and float(heavier) == 6.0
    leaves, tree = jax.tree.flatten(light)
    again = jax.tree.unflatten(tree, leaves)
    assert isinstance(again, Hotwords) and again.start == light.start
    assert light.nbytes > 0


def _allowed(lp, width):
    """The frame's ``W + 1`` best non-blank classes: the candidates of the
    search with scorers (the blank is class 0); the others may still extend
    a prefix into one that is a beam already."""
    classes = lp.shape[1]
    return [
        set(np.argsort(-np.where(np.arange(classes) == 0, -np.inf, row))[: width + 1])
        for row in lp
    ]


def check_search(scorers, fusion, logits, paddings, width, paths):
    """``prefix_beam_search`` with ``scorers`` equals the textbook search with
    ``fusion``: hypotheses, log-probabilities and scores; hypotheses that the
    reference scores ``-inf`` (not allowed) only as ``scores = -inf``."""
    hyp = jaxctc.prefix_beam_search(
        logits, paddings, beam_width=width, top_paths=paths, scorers=scorers
    )
    for b in range(logits.shape[0]):
        lp = ref.log_softmax(logits[b][paddings[b] == 0])
        want = ref.beam_search(
            lp, width, 0, allowed=_allowed(lp, width), fusion=fusion, merge_any=True
        )
        want = [w for w in want if w[2] > -np.inf][:paths]
        for p, (labelling, log_prob, score) in enumerate(want):
            got = ref.unpad(hyp.labels[b, p], hyp.label_paddings[b, p])
            assert got == labelling, (b, p)
            np.testing.assert_allclose(hyp.log_probs[b, p], log_prob, atol=1e-5)
            np.testing.assert_allclose(hyp.scores[b, p], score, rtol=1e-5, atol=1e-5)
        assert np.all(np.asarray(hyp.scores[b, len(want) :]) == -np.inf)


def random_logits(seed, batch=3, frames=10, classes=None):
    rng = np.random.default_rng(seed)
    classes = len(LABELS) if classes is None else classes
    logits, paddings = ref.random_batch(rng, batch, frames, classes, scale=2.5)
    return logits.astype(np.float32), paddings


@pytest.mark.parametrize("width", [2, 5])
def test_search_equals_textbook_search(width):
    phrases = ["ab", "b a", "cab", [3, 3]]
    hot = Hotwords(phrases, LABELS, weight=2.0)
    fusion = ref.hotword_fusion(phrases, LABELS, 2.0)
    check_search((hot,), fusion, *random_logits(width), width, 2)


WORDS = ["a", "ab", "ba", "abc", "cab", "bb", "c"]


def test_search_with_an_ngram_lm_equals_textbook_search(tmp_path):
    path = tmp_path / "words.arpa"
    aref.write_random_arpa(path, 1, order=2, words=WORDS)
    model, order = aref.read_model(path)
    lm = NGramLM.from_arpa(path, LABELS, weight=0.8, word_bonus=0.5, unk_score=-3.0)
    phrases = ["ab", "c ab"]
    hot = Hotwords(phrases, LABELS, weight=1.5)
    fusion = ref.sum_fusion(
        aref.word_fusion(model, order, LABELS, " ", 0.8, 0.5, -3.0),
        ref.hotword_fusion(phrases, LABELS, 1.5),
    )
    check_search((lm, hot), fusion, *random_logits(11), 4, 2)


def test_no_phrases_add_nothing():
    logits, paddings = random_logits(5)
    hyp = jaxctc.prefix_beam_search(
        logits, paddings, beam_width=4, top_paths=2, scorers=(Hotwords([], LABELS),)
    )
    np.testing.assert_array_equal(hyp.scores, hyp.log_probs)


@pytest.mark.parametrize(
    "phrases, weight, with_lm, text, matches",
    [
        # pyctcdecode's vectors: "bugs" (10) without the LM; with the LM,
        # "bunny" (20) wins twice, "bugs bunny" or both words keep the LM's.
        (["bugs"], 10.0, False, "bugs bunny", 1),
        (["bunny"], 20.0, True, "bunny bunny", 2),
        (["bugs bunny"], 10.0, True, "bugs bunny", 1),
        (["bugs", "bunny"], 10.0, True, "bugs bunny", 2),
    ],
)
def test_pyctcdecode_vectors(tmp_path, phrases, weight, with_lm, text, matches):
    bugs_bunny_arpa = tmp_path / "bugs_bunny.arpa"
    bugs_bunny_arpa.write_text(BUGS_BUNNY)
    hot = Hotwords(phrases, BUGS_LABELS, weight=weight)
    lm = NGramLM.from_arpa(bugs_bunny_arpa, BUGS_LABELS, weight=0.5, word_bonus=1.5)
    scorers = (lm, hot) if with_lm else (hot,)
    hyp = jaxctc.prefix_beam_search(
        _bugs_bunny_logits(),
        jnp.zeros((1, 13)),
        beam_width=16,
        blank_id=7,
        scorers=scorers,
    )
    assert _text(hyp) == text
    log_prob = 4 * np.log(0.49 if text == "bugs bunny" else 0.51)
    np.testing.assert_allclose(hyp.log_probs[0, 0], log_prob, rtol=1e-6)
    lm_part = 0.0
    if with_lm:
        model, order = aref.read_model(bugs_bunny_arpa)
        words = text.split()
        log_probs = aref.sentence_log_probs(model, order, words)
        lm_part = 0.5 * sum(log_probs) + 1.5 * len(words)
    np.testing.assert_allclose(
        hyp.scores[0, 0], log_prob + lm_part + weight * matches, rtol=1e-6
    )


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="`weight`"):
        Hotwords(["ab"], LABELS, weight=math.nan)
    with pytest.raises(ValueError, match="`weight`"):
        Hotwords(["ab"], LABELS, weight=math.inf)
    with pytest.raises(ValueError, match=r"`phrases\[1\]`.*'j'"):
        Hotwords(["ab", "jax"], LABELS)
    with pytest.raises(ValueError, match="`word_delimiter`"):
        Hotwords(["ab"], LABELS, word_delimiter="|")
    with pytest.raises(ValueError, match=r"`phrases\[0\]` has no characters"):
        Hotwords(["  "], LABELS)
    with pytest.raises(ValueError, match=r"`phrases\[0\]`.*non-blank"):
        Hotwords([[1, 0]], LABELS)
    with pytest.raises(ValueError, match=r"`phrases\[0\]`.*non-blank"):
        Hotwords([[5]], LABELS)
    with pytest.raises(ValueError, match="`labels`"):
        Hotwords(["ab"], LABELS + ["a"])
    with pytest.raises(ValueError, match=r"`phrases\[0\]`.*cannot be spelled"):
        Hotwords(["bugy"], ["", "▁bugs", "y"], word_delimiter="▁")
