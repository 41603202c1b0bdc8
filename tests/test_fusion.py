"""The beam search with fusion scorers: pyctcdecode's published vectors and
the float64 textbook search with the same fusion."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxctc
from jaxctc import NGramLM
from tests import arpa_references as aref
from tests import references as ref
from tests.test_ngram import BUGS_BUNNY

# pyctcdecode's test case: labels with the blank last, one-hot rows spelling
# "bugs" and "bunny", mixed 0.49 / 0.51, then a space and "bunny" again.
LABELS = [" ", "b", "g", "n", "s", "u", "y", ""]


def _rows(chars):
    rows = np.zeros((len(chars), len(LABELS)))
    rows[np.arange(len(chars)), [LABELS.index(c) for c in chars]] = 1
    return rows


def _bugs_bunny_logits():
    bugs = _rows(["b", "u", "g", "s", "", ""])
    bunny = _rows(["b", "u", "n", "", "n", "y"])
    probs = np.vstack([bugs * 0.49 + bunny * 0.51, _rows([" "]), bunny])
    return np.log(np.clip(probs, 1e-15, 1))[None].astype(np.float32)


def _text(hyp, path=0):
    n = int(np.sum(np.asarray(hyp.label_paddings[0, path]) == 0))
    return "".join(LABELS[int(k)] for k in hyp.labels[0, path, :n])


@pytest.fixture
def bugs_bunny_lm(tmp_path):
    path = tmp_path / "bugs_bunny.arpa"
    path.write_text(BUGS_BUNNY)
    return path


@pytest.mark.parametrize(
    "weight, text, log_prob",
    [
        (None, "bunny bunny", 4 * np.log(0.51)),
        (0.5, "bugs bunny", 4 * np.log(0.49)),
        (0.0, "bunny bunny", 4 * np.log(0.51)),
    ],
)
def test_pyctcdecode_vectors(bugs_bunny_lm, weight, text, log_prob):
    logits = _bugs_bunny_logits()
    scorers = ()
    if weight is not None:
        scorers = (
            NGramLM.from_arpa(bugs_bunny_lm, LABELS, weight=weight, word_bonus=1.5),
        )
    hyp = jaxctc.prefix_beam_search(
        logits, jnp.zeros((1, 13)), beam_width=16, blank_id=7, scorers=scorers
    )
    assert _text(hyp) == text
    np.testing.assert_allclose(hyp.log_probs[0, 0], log_prob, rtol=1e-6)
    # Every word of the best hypothesis is in the LM with probability 1 here,
    # so its score is the acoustic one plus the bonus per word.
    bonus = 0.0 if weight is None else 1.5 * 2
    np.testing.assert_allclose(hyp.scores[0, 0], log_prob + bonus, rtol=1e-6)
    if text == "bugs bunny":
        # The words' frames, as pyctcdecode reports them: (0, 4) and (7, 13).
        n = len(text)
        starts, ends = hyp.starts[0, 0, :n], hyp.ends[0, 0, :n]
        assert (int(starts[0]), int(ends[3]) + 1) == (0, 4)
        assert (int(starts[5]), int(ends[-1]) + 1) == (7, 13)


@pytest.mark.parametrize("weight", [None, 0.5])
def test_pyctcdecode_bpe_vector(bugs_bunny_lm, weight):
    # pyctcdecode's BPE case: the path "", ▁bugs, ▁bun, ny, ny, "" (one-hot
    # logits) reads "bugs bunny", with the word frames (1, 2) and (2, 5);
    # with the LM both words have probability 1 (log10 0), so the score is
    # the acoustic one plus the bonus per word.
    labels = ["▁bugs", "▁bun", "ny", ""]
    path = ["", "▁bugs", "▁bun", "ny", "ny", ""]
    logits = np.zeros((1, len(path), len(labels)), np.float32)
    logits[0, np.arange(len(path)), [labels.index(x) for x in path]] = 1.0
    scorers = ()
    if weight is not None:
        lm = NGramLM.from_arpa(
            bugs_bunny_lm, labels, word_delimiter="▁", weight=weight, word_bonus=1.5
        )
        scorers = (lm,)
    hyp = jaxctc.prefix_beam_search(
        logits, jnp.zeros((1, 6)), beam_width=8, blank_id=3, scorers=scorers
    )
    assert ref.unpad(hyp.labels[0, 0], hyp.label_paddings[0, 0]) == (0, 1, 2)
    bonus = 0.0 if weight is None else 1.5 * 2
    np.testing.assert_allclose(
        hyp.scores[0, 0], hyp.log_probs[0, 0] + bonus, rtol=1e-6, atol=1e-6
    )
    starts, ends = hyp.starts[0, 0, :3], hyp.ends[0, 0, :3]
    assert (int(starts[0]), int(ends[0]) + 1) == (1, 2)
    assert (int(starts[1]), int(ends[2]) + 1) == (2, 5)


def test_without_scorers_scores_equal_log_probs():
    rng = np.random.default_rng(0)
    logits, paddings = ref.random_batch(rng, 3, 9, 6)
    hyp = jaxctc.prefix_beam_search(logits, paddings, beam_width=4, top_paths=3)
    np.testing.assert_array_equal(hyp.scores, hyp.log_probs)


WORDS = ["a", "ab", "ba", "abc", "cab", "bb", "c", "aca"]
WORD_LABELS = ["", "a", "b", "c", " ", "z"]


@pytest.mark.parametrize(
    "width, bpe", [(1, False), (3, False), (8, False), (3, True), (8, True)]
)
def test_word_lm_equals_textbook_search_with_fusion(tmp_path, width, bpe):
    rng = np.random.default_rng(width)
    path = tmp_path / "words.arpa"
    aref.write_random_arpa(path, width, order=3, words=WORDS)
    model, order = aref.read_model(path)
    weight, bonus, unk = 0.8, 0.5, -3.0
    # BPE: a random vocabulary of word-initial ("▁ab") and inner pieces.
    labels = ref.random_bpe_labels(rng, WORDS + ["zab"], 6) if bpe else WORD_LABELS
    delimiter = "▁" if bpe else " "
    lm = NGramLM.from_arpa(
        path,
        labels,
        word_delimiter=delimiter,
        weight=weight,
        word_bonus=bonus,
        unk_score=unk,
    )
    fusion = aref.word_fusion(model, order, labels, delimiter, weight, bonus, unk)
    batch, frames, classes = 4, 10, len(labels)
    logits, paddings = ref.random_batch(rng, batch, frames, classes, scale=2.5)
    logits = logits.astype(np.float32)
    paths = min(width, 2)
    hyp = jaxctc.prefix_beam_search(
        logits, paddings, beam_width=width, top_paths=paths, scorers=(lm,)
    )
    for b in range(batch):
        lp = ref.log_softmax(logits[b][paddings[b] == 0])
        # With scorers the candidates are each frame's W + 1 best classes
        # (any class merges into a prefix that is a beam already).
        allowed = [
            set(
                np.argsort(-np.where(np.arange(classes) == 0, -np.inf, row))[
                    : width + 1
                ]
            )
            for row in lp
        ]
        want = ref.beam_search(
            lp, width, 0, allowed=allowed, fusion=fusion, merge_any=True
        )[:paths]
        for p, (labelling, log_prob, score) in enumerate(want):
            got = ref.unpad(hyp.labels[b, p], hyp.label_paddings[b, p])
            assert got == labelling, (b, p)
            np.testing.assert_allclose(
                hyp.log_probs[b, p], log_prob, rtol=1e-5, atol=1e-5
            )
            np.testing.assert_allclose(hyp.scores[b, p], score, rtol=1e-5, atol=1e-4)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _NoBound:
    """A scorer without the optional ``bound``."""

    inner: NGramLM

    def init(self, shape=()):
        return self.inner.init(shape)

    def score(self, state, tokens):
        return self.inner.score(state, tokens)

    def final(self, state):
        return self.inner.final(state)


def test_scorers_must_follow_the_protocol():
    logits = jnp.zeros((1, 3, 4))
    with pytest.raises(TypeError, match=r"`scorers\[0\]`.*init, score, final"):
        jaxctc.prefix_beam_search(logits, jnp.zeros((1, 3)), scorers=(object(),))


@pytest.mark.parametrize("width", [4, 16])
def test_fused_staircase_equals_every_extension_scored(tmp_path, monkeypatch, width):
    """With bounded scorers the step scores only the staircase of the
    extensions and re-runs a frame on all of them when the bound says that
    one left out could enter; scoring every extension instead (scorers
    without a bound) must give the same hypotheses and scores."""
    from jaxctc import _beam

    labels = [""] + list("abcdefghijklmnopqrstuvwxyz'") + [" "]
    rng = np.random.default_rng(width)
    letters = list("abcde")
    words = sorted(
        {"".join(rng.choice(letters, rng.integers(1, 5))) for _ in range(60)}
    )
    path = tmp_path / "words.arpa"
    aref.write_random_arpa(path, width, order=3, words=words, count=80)
    scorers = (
        NGramLM.from_arpa(path, labels, weight=0.8, word_bonus=1.0, unk_score=-4.0),
        jaxctc.Hotwords(["ab c", "de"], labels, weight=3.0),
    )
    peaky = ref.model_like_logits(rng, 4, 30, len(labels))
    flat = (
        (2 * rng.standard_normal((3, 20, len(labels)))).astype(np.float32),
        np.zeros((3, 20), np.float32),
    )
    cut = _beam.staircase(width, width + 1)
    assert cut.size < width * (width + 1)  # the staircase leaves some out

    def search(x, p):
        return jaxctc.prefix_beam_search(
            x, p, beam_width=width, top_paths=3, scorers=scorers
        )

    got = [search(x, p) for x, p in (peaky, flat)]
    jax.clear_caches()
    monkeypatch.setattr(_beam, "_bounded", lambda scorers: False)
    for (x, p), hyp in zip((peaky, flat), got, strict=True):
        want = search(x, p)
        np.testing.assert_array_equal(hyp.labels, want.labels)
        np.testing.assert_allclose(hyp.log_probs, want.log_probs, rtol=1e-6)
        np.testing.assert_allclose(hyp.scores, want.scores, rtol=1e-6)
    jax.clear_caches()


# K = 6: every candidate at once; K = 81: the step tries each frame's 4 best
# classes first and re-runs on the W + 1 best when the scorers' bound says that
# another could enter the beam (scale 2.5: often; scale 6: peaky, rarely).
@pytest.mark.parametrize("vocab,scale", [(5, 2.5), (80, 2.5), (80, 6.0)])
def test_token_lm_equals_textbook_search_with_fusion(tmp_path, vocab, scale):
    rng = np.random.default_rng(7)
    path = tmp_path / "tokens.arpa"
    words = aref.write_random_arpa(path, 4, order=3, vocab=vocab)
    model, order = aref.read_model(path)
    labels = [""] + words  # the blank first
    lm = NGramLM.from_arpa(path, labels, weight=0.6, token_bonus=0.3)

    def partial(labelling):
        seq = [labels[k] for k in labelling]
        return 0.6 * sum(
            aref.sentence_log_probs(model, order, seq, eos=False)
        ) + 0.3 * len(seq)

    def final(labelling):
        seq = [labels[k] for k in labelling]
        return 0.6 * aref.sentence_log_probs(model, order, seq)[-1]

    logits, paddings = ref.random_batch(rng, 4, 9, len(labels), scale=scale)
    logits = logits.astype(np.float32)
    width = 4
    hyp = jaxctc.prefix_beam_search(
        logits, paddings, beam_width=width, top_paths=2, scorers=(lm,)
    )
    # A scorer without a bound: every candidate at once, the same result.
    unbounded = jaxctc.prefix_beam_search(
        logits, paddings, beam_width=width, top_paths=2, scorers=(_NoBound(lm),)
    )
    np.testing.assert_array_equal(unbounded.labels, hyp.labels)
    np.testing.assert_allclose(unbounded.scores, hyp.scores, rtol=1e-6)
    for b in range(4):
        lp = ref.log_softmax(logits[b][paddings[b] == 0])
        allowed = [set(np.argsort(-row[1:])[: width + 1] + 1) for row in lp]
        want = ref.beam_search(lp, width, 0, allowed=allowed, fusion=(partial, final))[
            :2
        ]
        for p, (labelling, log_prob, score) in enumerate(want):
            assert ref.unpad(hyp.labels[b, p], hyp.label_paddings[b, p]) == labelling
            np.testing.assert_allclose(
                hyp.log_probs[b, p], log_prob, rtol=1e-5, atol=1e-5
            )
            np.testing.assert_allclose(hyp.scores[b, p], score, rtol=1e-5, atol=1e-4)


def test_every_scorer_contribution_is_at_most_its_bound(tmp_path):
    # The search trusts `bound()` to skip classes: no `score` may exceed it,
    # from any state (here: the states along random token sequences).
    path = tmp_path / "words.arpa"
    aref.write_random_arpa(path, 5, order=3, words=WORDS)
    rng = np.random.default_rng(0)
    # BPE labels whose word-initial pieces begin no LM word ("▁z"): a
    # word-initial class may add unk_score twice.
    bpe = ref.random_bpe_labels(rng, WORDS + ["zab"], 6)
    scorers = [
        NGramLM.from_arpa(path, WORD_LABELS, weight=0.8, word_bonus=0.5, unk_score=2.0),
        NGramLM.from_arpa(path, WORD_LABELS, weight=0.3, word_bonus=-1.0),
        NGramLM.from_arpa(path, bpe, word_delimiter="▁", unk_score=2.0),
        jaxctc.Hotwords(["ab", "ba c", "c"], WORD_LABELS, weight=1.5),
        jaxctc.Hotwords(["ab"], WORD_LABELS, weight=-2.0),
        jaxctc.Lexicon(WORDS[:4], WORD_LABELS),
    ]
    # Per class for a word-level LM: only the delimiter ends a word (bonus 0.5
    # and, OOV, unk_score 2); a letter adds at most unk_score.
    np.testing.assert_array_equal(scorers[0].bound()[1:], [2.0, 2.0, 2.0, 2.5, 2.0])
    for scorer in scorers:
        size = len(bpe) if scorer is scorers[2] else len(WORD_LABELS)
        classes = jnp.arange(1, size)
        # A scalar, or one per class (the word-level LMs).
        bound = np.broadcast_to(np.asarray(scorer.bound()), (size,))[1:]
        state = scorer.init((20,))
        score = jax.jit(type(scorer).score)
        for _ in range(6):
            delta, after = score(
                scorer, state, jnp.broadcast_to(classes, (20, size - 1))
            )
            assert np.all(np.asarray(delta) <= bound + 1e-6), type(scorer).__name__
            pick = jnp.asarray(rng.integers(0, size - 1, 20))
            state = jax.tree.map(lambda a, p=pick: a[jnp.arange(20), p], after)


def test_token_lm_contribution_is_at_most_its_bound(tmp_path):
    path = tmp_path / "tokens.arpa"
    labels = [""] + aref.write_random_arpa(path, 6, order=3, vocab=5)
    for weight, bonus in ((0.6, 0.3), (0.0, -1.0)):
        lm = NGramLM.from_arpa(path, labels, weight=weight, token_bonus=bonus)
        state = lm.init((4,))
        for k in range(1, 6):
            delta, after = lm.score(state, jnp.broadcast_to(jnp.arange(1, 6), (4, 5)))
            assert float(jnp.max(delta)) <= float(lm.bound()) + 1e-6
            state = jax.tree.map(lambda a, k=k: a[:, k - 1], after)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _NeuralLM:
    """A user's own scorer: a small neural token LM (an MLP over the
    embeddings of the last two tokens), fused through the protocol alone."""

    embed: jax.Array  # [K + 1, D]: the classes, then "before the start"
    hidden: jax.Array  # [2D, H]
    out: jax.Array  # [H, K + 1]: the classes, then the end
    weight: float = dataclasses.field(metadata=dict(static=True))

    def init(self, shape=()):
        start = self.embed.shape[0] - 1
        return (jnp.full(shape, start, jnp.int32), jnp.full(shape, start, jnp.int32))

    def _log_probs(self, state):
        x = jnp.concatenate([self.embed[state[0]], self.embed[state[1]]], axis=-1)
        return jax.nn.log_softmax(jnp.tanh(x @ self.hidden) @ self.out, axis=-1)

    def score(self, state, tokens):
        log_probs = self._log_probs(state)  # S + [K + 1]
        delta = jnp.take_along_axis(log_probs, tokens, axis=-1)
        last = jnp.broadcast_to(state[1][..., None], tokens.shape)
        return self.weight * delta, (last, tokens)

    def final(self, state):
        return self.weight * self._log_probs(state)[..., -1]


def test_a_neural_scorer_equals_the_search_with_its_scores_tabulated():
    rng = np.random.default_rng(3)
    classes, dim, hid = 6, 4, 8
    params = [
        rng.normal(size=s)
        for s in ((classes + 1, dim), (2 * dim, hid), (hid, classes + 1))
    ]
    lm = _NeuralLM(*(jnp.asarray(p, jnp.float32) for p in params), weight=0.7)

    def table(prev2, prev1):  # float64 NumPy, from the prefix alone
        x = np.concatenate([params[0][prev2], params[0][prev1]])
        z = np.tanh(x @ params[1]) @ params[2]
        return z - np.logaddexp.reduce(z)

    def contexts(labelling):
        padded = [classes, classes, *labelling]
        return [(padded[i], padded[i + 1]) for i in range(len(labelling) + 1)]

    def partial(labelling):
        return 0.7 * sum(
            table(*c)[k] for c, k in zip(contexts(labelling), labelling, strict=False)
        )

    def final(labelling):
        return 0.7 * table(*contexts(labelling)[-1])[-1]

    _assert_equals_textbook_fusion(lm, partial, final, rng, classes)


def _assert_equals_textbook_fusion(scorer, partial, final, rng, classes, jit=False):
    """The search with ``scorer`` on a random batch against the textbook
    search with its contributions ``partial`` / ``final`` (float64)."""
    logits, paddings = ref.random_batch(rng, 3, 8, classes, scale=2.0)
    logits = logits.astype(np.float32)
    width = 3

    def search(x, p, s):
        return jaxctc.prefix_beam_search(
            x, p, beam_width=width, top_paths=2, scorers=(s,)
        )

    hyp = (jax.jit(search) if jit else search)(logits, paddings, scorer)
    for b in range(3):
        lp = ref.log_softmax(logits[b][paddings[b] == 0])
        allowed = [set(np.argsort(-row[1:])[: width + 1] + 1) for row in lp]
        want = ref.beam_search(lp, width, 0, allowed=allowed, fusion=(partial, final))
        for p, (labelling, log_prob, score) in enumerate(want[:2]):
            assert ref.unpad(hyp.labels[b, p], hyp.label_paddings[b, p]) == labelling
            np.testing.assert_allclose(hyp.log_probs[b, p], log_prob, atol=1e-5)
            np.testing.assert_allclose(hyp.scores[b, p], score, rtol=1e-5, atol=1e-4)


def test_a_flax_nnx_language_model_fuses_through_the_protocol():
    """A Flax NNX character LM (embeddings of the last two tokens, an MLP),
    wrapped as a scorer by ``nnx.split``: the fused search equals the
    textbook search with the model's own scores tabulated."""
    nnx = pytest.importorskip("flax.nnx")
    classes, dim, hid = 6, 4, 8

    class CharLM(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(classes + 1, dim, rngs=rngs)  # + "before"
            self.hidden = nnx.Linear(2 * dim, hid, rngs=rngs)
            self.out = nnx.Linear(hid, classes + 1, rngs=rngs)  # + the end

        def __call__(self, prev2, prev1):
            x = jnp.concatenate([self.embed(prev2), self.embed(prev1)], axis=-1)
            return jax.nn.log_softmax(self.out(jnp.tanh(self.hidden(x))), axis=-1)

    @jax.tree_util.register_dataclass
    @dataclasses.dataclass(frozen=True)
    class NNXScorer:
        graphdef: object = dataclasses.field(metadata=dict(static=True))
        params: object
        weight: float = dataclasses.field(metadata=dict(static=True))

        def _model(self):
            return nnx.merge(self.graphdef, self.params)

        def init(self, shape=()):
            start = jnp.full(shape, classes, jnp.int32)
            return (start, start)

        def score(self, state, tokens):
            log_probs = self._model()(*state)  # S + [K + 1]
            delta = jnp.take_along_axis(log_probs, tokens, axis=-1)
            last = jnp.broadcast_to(state[1][..., None], tokens.shape)
            return self.weight * delta, (last, tokens)

        def final(self, state):
            return self.weight * self._model()(*state)[..., -1]

    model = CharLM(nnx.Rngs(0))
    scorer = NNXScorer(*nnx.split(model), weight=0.7)
    # The model's scores of every context, tabulated (float64 for the sums).
    grid = jnp.arange(classes + 1, dtype=jnp.int32)
    prev2, prev1 = jnp.meshgrid(grid, grid, indexing="ij")
    table = np.asarray(model(prev2, prev1), np.float64)

    def contexts(labelling):
        padded = [classes, classes, *labelling]
        return [(padded[i], padded[i + 1]) for i in range(len(labelling) + 1)]

    def partial(labelling):
        pairs = zip(contexts(labelling), labelling, strict=False)
        return 0.7 * sum(table[c][k] for c, k in pairs)

    def final(labelling):
        return 0.7 * table[contexts(labelling)[-1]][-1]

    rng = np.random.default_rng(5)
    _assert_equals_textbook_fusion(scorer, partial, final, rng, classes, jit=True)
