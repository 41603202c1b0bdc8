"""The prefix beam search against brute force over all alignments, a float64
textbook search over every class, and TensorFlow's beam search decoder."""

import math
import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxctc
from tests import references

DATA = pathlib.Path(__file__).parent / "data"


def test_wide_beam_finds_exact_labellings(rng):
    """A beam wider than every prefix set is the brute-force ranking."""
    logits, paddings = references.random_batch(rng, 4, 6, 3)
    paths, blank = 5, 2
    hyp = jax.jit(
        lambda x, p: jaxctc.prefix_beam_search(
            x, p, beam_width=64, top_paths=paths, blank_id=blank
        )
    )(logits, paddings)
    assert hyp.labels.shape == (4, paths, 6)
    rescored = jaxctc.sequence_log_probs(
        logits, paddings, hyp.labels, hyp.label_paddings, blank_id=blank
    )
    lp = references.log_softmax(logits)
    for b in range(3):
        valid = np.flatnonzero(paddings[b] == 0)
        table = references.alignments(lp[b, valid], blank)
        ranked = sorted(table, key=lambda k: -table[k][0])[:paths]
        for p, key in enumerate(ranked):
            assert references.unpad(hyp.labels[b, p], hyp.label_paddings[b, p]) == key
            np.testing.assert_allclose(hyp.log_probs[b, p], table[key][0], rtol=1e-9)
            np.testing.assert_allclose(rescored[b, p], table[key][0], rtol=1e-9)
            starts, ends = references.alignment_spans(table[key][1], blank)
            n = len(key)
            np.testing.assert_array_equal(hyp.starts[b, p, :n], valid[starts])
            np.testing.assert_array_equal(hyp.ends[b, p, :n], valid[ends])
            assert np.all(hyp.starts[b, p, n:] == -1)
    # No valid frame: the empty labelling with probability one, then nothing.
    assert hyp.log_probs[3, 0] == 0.0 and np.all(hyp.label_paddings[3] == 1)
    assert np.all(hyp.log_probs[3, 1:] == -np.inf)


@pytest.mark.parametrize("width", [1, 3])
def test_narrow_beam_matches_reference_search(rng, width):
    """Pruning and merging of identical prefixes, as the textbook search."""
    logits, paddings = references.random_batch(rng, 6, 12, 6, scale=1.5)
    paths = min(width, 3)
    hyp = jaxctc.prefix_beam_search(
        logits, paddings, beam_width=width, top_paths=paths, blank_id=1
    )
    lp = references.log_softmax(logits)
    for b in range(6):
        want = references.beam_search(lp[b, paddings[b] == 0], width, 1)[:paths]
        for p, (key, score) in enumerate(want):
            assert references.unpad(hyp.labels[b, p], hyp.label_paddings[b, p]) == key
            np.testing.assert_allclose(hyp.log_probs[b, p], score, rtol=1e-9)


def test_pruning_options_match_reference(rng):
    logits, paddings = references.random_batch(rng, 4, 10, 9, scale=2.0)
    lp = references.log_softmax(logits)
    top_k, min_lp, skip_lp = 3, -3.0, -0.3
    runs = {
        "top_k": dict(token_top_k=top_k),
        "min": dict(token_min_log_prob=min_lp),
        "skip": dict(blank_skip_log_prob=skip_lp),
        "length": dict(max_label_length=3),
    }
    for name, options in runs.items():
        hyp = jaxctc.prefix_beam_search(
            logits, paddings, beam_width=4, top_paths=2, **options
        )
        assert hyp.labels.shape[-1] == (3 if name == "length" else 10)
        for b in range(4):
            x = lp[b, paddings[b] == 0]
            ranked = [
                set(np.argsort(-np.where(np.arange(9) == 0, -np.inf, r))[:top_k])
                for r in x
            ]
            kwargs = {
                "top_k": dict(allowed=ranked),
                "min": dict(allowed=[set(np.flatnonzero(r >= min_lp)) for r in x]),
                "skip": dict(skip=x[:, 0] > skip_lp),
                "length": dict(max_length=3),
            }[name]
            want = references.beam_search(x, 4, 0, **kwargs)[:2]
            for p, (key, score) in enumerate(want):
                assert (
                    references.unpad(hyp.labels[b, p], hyp.label_paddings[b, p]) == key
                ), name
                np.testing.assert_allclose(hyp.log_probs[b, p], score, rtol=1e-9)
    # Pruning that keeps every class is the exact search.
    exact = jaxctc.prefix_beam_search(logits, paddings, beam_width=4)
    same = jaxctc.prefix_beam_search(logits, paddings, beam_width=4, token_top_k=9)
    np.testing.assert_array_equal(exact.labels, same.labels)


def test_beam_robust_inputs(rng):
    logits = rng.standard_normal((3, 6, 4)).astype(np.float32)
    logits[0, :, 2] = -np.inf  # a masked class
    logits[0, 3, :] = -np.inf  # a frame where nothing is possible
    logits[1, :, 0] = 30.0  # all blank
    logits[2, 2, 1:] = -np.inf  # only blank possible at one frame
    paddings = np.zeros((3, 6))
    hyp = jax.jit(
        lambda x: jaxctc.prefix_beam_search(x, paddings, beam_width=4, top_paths=4)
    )(jnp.asarray(logits, jnp.bfloat16))
    assert hyp.log_probs.dtype == jnp.float32
    assert not np.any(np.isnan(hyp.log_probs))
    assert np.all(hyp.log_probs[0] == -np.inf) and np.all(hyp.label_paddings[0] == 1)
    assert np.all(hyp.label_paddings[1, 0] == 1) and hyp.log_probs[1, 0] > -1e-6
    assert np.all(np.isfinite(hyp.log_probs[2])) and np.all(hyp.log_probs[2] <= 0)
    assert np.all(np.diff(hyp.log_probs[2]) <= 0)
    # bf16 decodes like its float32 values.
    want = jaxctc.prefix_beam_search(
        jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32),
        paddings,
        beam_width=4,
        top_paths=4,
    )
    np.testing.assert_array_equal(hyp.labels[2], want.labels[2])
    # Fewer distinct labellings than top_paths: the rest are marked, not repeated.
    one = np.full((1, 1, 2), -np.inf)
    one[0, 0, 1] = 0.0
    hyp = jaxctc.prefix_beam_search(one, np.zeros((1, 1)), beam_width=3, top_paths=3)
    assert hyp.labels[0, 0, 0] == 1 and hyp.log_probs[0, 0] == 0.0
    assert np.all(hyp.log_probs[0, 1:] == -np.inf)
    assert np.all(hyp.label_paddings[0, 1:] == 1)


def test_beam_argument_errors():
    x, p = np.zeros((1, 3, 3), np.float32), np.zeros((1, 3))
    with pytest.raises(ValueError, match="top_paths"):
        jaxctc.prefix_beam_search(x, p, beam_width=2, top_paths=3)
    with pytest.raises(ValueError, match="beam_width"):
        jaxctc.prefix_beam_search(x, p, beam_width=0)
    with pytest.raises(ValueError, match="token_top_k"):
        jaxctc.prefix_beam_search(x, p, token_top_k=0)
    with pytest.raises(TypeError, match="beam_width"):
        jaxctc.prefix_beam_search(x, p, beam_width=2.0)
    with pytest.raises(ValueError, match="logits"):
        jaxctc.prefix_beam_search(np.zeros((3, 3), np.float32), p)


def test_hypotheses_feed_the_loss(rng):
    logits, paddings = references.random_batch(rng, 3, 8, 5, pad=False)
    hyp = jaxctc.prefix_beam_search(logits, paddings, beam_width=8, top_paths=1)
    loss = jaxctc.ctc_loss(logits, paddings, hyp.labels[:, 0], hyp.label_paddings[:, 0])
    # A beam score counts only kept alignments: a lower bound on log P.
    assert np.all(-loss >= hyp.log_probs[:, 0] - 1e-9)
    greedy = jaxctc.greedy_decode(logits, paddings)
    loss = jaxctc.ctc_loss(logits, paddings, greedy.labels, greedy.label_paddings)
    assert np.all(-loss >= greedy.log_probs - 1e-9)


# ----------------------------------------------------------------------------
# TensorFlow
# ----------------------------------------------------------------------------

# The inputs of TF's ctc_decoder_ops_test.py::testCTCDecoderBeamSearch: these
# probabilities plus 2.0, used as logits, blank last, 5 valid frames of 7.
TF_PROBS = np.array(
    [
        [0.30999, 0.309938, 0.0679938, 0.0673362, 0.0708352, 0.173908],
        [0.215136, 0.439699, 0.0370931, 0.0393967, 0.0381581, 0.230517],
        [0.199959, 0.489485, 0.0233221, 0.0251417, 0.0233289, 0.238763],
        [0.279611, 0.452966, 0.0204795, 0.0209126, 0.0194803, 0.20655],
        [0.51286, 0.288951, 0.0243026, 0.0220788, 0.0219297, 0.129878],
    ],
    np.float32,
)


def test_tf_published_beam_search_vector():
    logits = np.concatenate([TF_PROBS + 2.0, np.zeros((2, 6), np.float32)])[None]
    paddings = np.array([[0, 0, 0, 0, 0, 1, 1]], np.float32)
    hyp = jaxctc.prefix_beam_search(
        logits, paddings, beam_width=2, top_paths=2, blank_id=5
    )
    assert references.unpad(hyp.labels[0, 0], hyp.label_paddings[0, 0]) == (1, 0)
    assert references.unpad(hyp.labels[0, 1], hyp.label_paddings[0, 1]) == (1,)
    # TF's expected scores; our float64 reference search agrees with them.
    np.testing.assert_allclose(hyp.log_probs[0], [-5.811451, -6.63339], rtol=1e-6)
    want = references.beam_search(references.log_softmax(TF_PROBS + 2.0), 2, 5)
    np.testing.assert_allclose([s for _, s in want], [-5.811451, -6.63339], rtol=1e-6)


def test_tf_published_zero_probability_vector():
    """ctc_beam_search_test.cc: zero probabilities (-inf log-probs), beam 30."""
    probs = np.zeros((5, 6))
    probs[:, 1] = [0.6, 0.5, 0.4, 0.4, 0.4]
    probs[:, 3] = 1.0 - probs[:, 1]
    with np.errstate(divide="ignore"):
        logits = np.log(probs)[None]
    hyp = jaxctc.prefix_beam_search(
        logits, np.zeros((1, 5)), beam_width=30, top_paths=3, blank_id=5
    )
    got = [
        references.unpad(hyp.labels[0, p], hyp.label_paddings[0, p]) for p in range(3)
    ]
    assert got == [(1, 3), (1, 3, 1), (3, 1, 3)]
    table = references.alignments(references.log_softmax(logits[0]), 5)
    np.testing.assert_allclose(hyp.log_probs[0], [table[k][0] for k in got], rtol=1e-9)


def _check_tf_case(logits, paddings, width, labels, log_probs):
    """TF's hypotheses and scores on most rows. On the others TF's scores
    exceed the textbook search's (TF sometimes counts alignments of prefixes
    its beam had dropped), which can reorder its lower hypotheses; there ours
    must equal the textbook search (float64 reference above)."""
    paths = labels.shape[1]
    blank = logits.shape[-1] - 1
    hyp = jaxctc.prefix_beam_search(
        jnp.asarray(logits),
        paddings,
        beam_width=width,
        top_paths=paths,
        blank_id=blank,
    )
    differ = 0
    for b in range(logits.shape[0]):
        ours = [
            references.unpad(hyp.labels[b, p], hyp.label_paddings[b, p])
            for p in range(paths)
        ]
        theirs = [tuple(int(x) for x in labels[b, p] if x >= 0) for p in range(paths)]
        close = np.allclose(hyp.log_probs[b], log_probs[b], rtol=2e-5, atol=2e-5)
        if ours == theirs and close:
            continue
        differ += 1
        assert np.all(log_probs[b] >= hyp.log_probs[b] - 2e-5)
        ref = references.beam_search(
            references.log_softmax(logits[b, paddings[b] == 0]), width, blank
        )[:paths]
        assert ours == [k for k, _ in ref]
        np.testing.assert_allclose(hyp.log_probs[b], [s for _, s in ref], atol=1e-5)
    assert differ <= logits.shape[0] // 2


def test_agrees_with_stored_tf_beam_search():
    """Vectors from tests/data/make_tf_vectors.py (TF 2.21, float32)."""
    data = np.load(DATA / "tf_beam_search.npz")
    for i in range(int(data["num_cases"])):
        _check_tf_case(
            data[f"logits_{i}"],
            data[f"logit_paddings_{i}"],
            int(data[f"beam_width_{i}"]),
            data[f"labels_{i}"],
            data[f"log_probs_{i}"],
        )


def test_agrees_with_live_tf_beam_search(rng):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf = pytest.importorskip("tensorflow")
    logits = (3.0 * rng.standard_normal((4, 15, 5))).astype(np.float32)
    lengths = np.array([15, 9, 1, 12], np.int32)
    paddings = (np.arange(15)[None, :] >= lengths[:, None]).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decoded, log_probs = tf.nn.ctc_beam_search_decoder(
            np.transpose(logits, (1, 0, 2)), lengths, beam_width=6, top_paths=3
        )
        labels = np.full((4, 3, 15), -1)
        for p, sparse in enumerate(decoded):
            dense = tf.sparse.to_dense(sparse, default_value=-1).numpy()
            labels[:, p, : dense.shape[1]] = dense
    _check_tf_case(logits, paddings, 6, labels, log_probs.numpy())


def test_beam_score_is_log_of_kept_mass():
    """Uniform frames: every labelling's mass is countable by hand."""
    # One frame, K = 3 uniform: [], [1], [2] each 1/3.
    hyp = jaxctc.prefix_beam_search(np.zeros((1, 1, 3)), np.zeros((1, 1)), top_paths=3)
    np.testing.assert_allclose(np.exp(hyp.log_probs[0]), [1 / 3] * 3, rtol=1e-12)
    assert math.isclose(float(jnp.sum(jnp.exp(hyp.log_probs))), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize(("classes", "width"), [(12, 8), (29, 16), (300, 6)])
def test_staircase_prune_equals_full_prune(monkeypatch, classes, width):
    """The prune reads only the staircase of the extensions of sorted beams;
    with every extension read instead it must give the same hypotheses and
    scores (wide beams, so that most of the staircase's cut is exercised)."""
    from jaxctc import _beam

    rng = np.random.default_rng(classes)
    peaky, peaky_pad = references.model_like_logits(rng, 4, 16, classes)
    flat = rng.standard_normal((3, 12, classes)).astype(np.float32)
    cases = ((peaky, peaky_pad), (flat, np.zeros((3, 12), np.float32)))

    def search(x, p):
        return jaxctc.prefix_beam_search(x, p, beam_width=width, top_paths=width)

    cut = [len(_beam.staircase(width, c)) for c in (4, width + 1)]
    assert cut[1] < width * (width + 1)  # the test exercises a real cut
    got = [search(x, p) for x, p in cases]
    jax.clear_caches()
    monkeypatch.setattr(
        _beam, "staircase", lambda w, c: np.arange(w * c, dtype=np.int32)
    )
    for (x, p), hyp in zip(cases, got, strict=True):
        want = search(x, p)
        np.testing.assert_array_equal(hyp.labels, want.labels)
        np.testing.assert_allclose(hyp.log_probs, want.log_probs, rtol=1e-6)
    jax.clear_caches()


# ----------------------------------------------------------------------------
# Large vocabularies: candidates in two levels and the exact re-run
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("classes", "width", "blank"), [(300, 3, 0), (300, 8, 141), (1009, 5, 1008)]
)
def test_large_vocabulary_equals_textbook_search(classes, width, blank):
    """K > 64: each frame first tries its 4 best classes and re-runs a
    sequence's frame with W + 1 when another could enter; the result must be
    the search over every class, on model-like and on flat (random) frames."""
    rng = np.random.default_rng(classes + width)
    peaky, peaky_pad = references.model_like_logits(rng, 3, 14, classes, blank)
    flat = rng.standard_normal((2, 9, classes)) * 0.5
    cases = ((peaky.astype(np.float64), peaky_pad), (flat, np.zeros((2, 9))))
    for logits, paddings in cases:
        hyp = jax.jit(
            lambda x, p: jaxctc.prefix_beam_search(
                x, p, beam_width=width, top_paths=width, blank_id=blank
            )
        )(logits, paddings)
        lp = references.log_softmax(logits)
        for b in range(logits.shape[0]):
            want = references.beam_search(lp[b, paddings[b] == 0], width, blank)
            for p, (key, score) in enumerate(want):
                got = references.unpad(hyp.labels[b, p], hyp.label_paddings[b, p])
                assert got == key, (b, p)
                np.testing.assert_allclose(hyp.log_probs[b, p], score, rtol=1e-9)


def test_large_vocabulary_pruning_options_match_reference():
    rng = np.random.default_rng(7)
    classes = 200
    logits, paddings = references.model_like_logits(rng, 3, 12, classes)
    logits = logits.astype(np.float64)
    # Runners-up that pruning can cut (distinct: equal classes tie arbitrarily).
    logits[:, :, 5:9] = np.log([0.02, 0.019, 0.018, 0.017])
    lp = references.log_softmax(logits)
    for options in (
        dict(token_top_k=2),
        dict(token_top_k=6),
        dict(token_min_log_prob=-5.0),
        dict(blank_skip_log_prob=-0.05),
    ):
        hyp = jaxctc.prefix_beam_search(
            logits, paddings, beam_width=4, top_paths=2, **options
        )
        for b in range(3):
            x = lp[b, paddings[b] == 0]
            tokens = np.where(np.arange(classes) == 0, -np.inf, x)
            kwargs = {}
            if "token_top_k" in options:
                k = options["token_top_k"]
                kwargs["allowed"] = [
                    set(np.argsort(-r, kind="stable")[:k]) for r in tokens
                ]
            if "token_min_log_prob" in options:
                kwargs["allowed"] = [set(np.flatnonzero(r >= -5.0)) for r in tokens]
            if "blank_skip_log_prob" in options:
                kwargs["skip"] = x[:, 0] > -0.05
            want = references.beam_search(x, 4, 0, **kwargs)[:2]
            for p, (key, score) in enumerate(want):
                got = references.unpad(hyp.labels[b, p], hyp.label_paddings[b, p])
                assert got == key, options
                np.testing.assert_allclose(hyp.log_probs[b, p], score, rtol=1e-9)


def test_large_vocabulary_bf16_reads_as_float32():
    rng = np.random.default_rng(3)
    logits, paddings = references.model_like_logits(rng, 4, 20, 1024)
    x16 = jnp.asarray(logits, jnp.bfloat16)
    got = jaxctc.prefix_beam_search(x16, paddings, top_paths=2)
    want = jaxctc.prefix_beam_search(x16.astype(jnp.float32), paddings, top_paths=2)
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_allclose(got.log_probs, want.log_probs, rtol=1e-6)
    assert got.log_probs.dtype == jnp.float32
