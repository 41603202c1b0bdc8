"""Decoders against brute force over all alignments, a dict-based reference
prefix beam search, and TensorFlow's beam search decoder."""

import itertools
import math
import pathlib
import warnings
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxctc

DATA = pathlib.Path(__file__).parent / "data"


# ----------------------------------------------------------------------------
# References (float64, obvious, slow)
# ----------------------------------------------------------------------------


def log_softmax(x):
    x = np.asarray(x, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.max(x, axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        s = np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))
        return x - m - s


def collapse(path, blank, merge=True):
    out, prev = [], None
    for c in path:
        if c != blank and (not merge or c != prev):
            out.append(c)
        prev = c
    return tuple(out)


def brute_force(log_probs, blank):
    """Every alignment of one ``[T', K]`` sequence (valid frames only).

    Returns ``{labelling: (log P(labelling), best alignment, its log-prob)}``.
    """
    frames, classes = log_probs.shape
    table = {}
    for path in itertools.product(range(classes), repeat=frames):
        score = sum(log_probs[t, c] for t, c in enumerate(path))
        key = collapse(path, blank)
        total, best, best_score = table.get(key, (-np.inf, None, -np.inf))
        total = np.logaddexp(total, score)
        if score > best_score:
            best, best_score = path, score
        table[key] = (total, best, best_score)
    return table


def alignment_spans(path, blank):
    """First and last frame of each token of a (valid-frames) alignment."""
    starts, ends, prev = [], [], None
    for t, c in enumerate(path):
        if c != blank and c != prev:
            starts.append(t)
            ends.append(t)
        elif c != blank:
            ends[-1] = t
        prev = c
    return starts, ends


def reference_beam_search(
    log_probs, width, blank, max_length=None, allowed=None, skip=None
):
    """Textbook prefix beam search with a dict of prefixes (Hannun et al.).

    ``allowed[t]``: the classes that may extend a prefix at frame ``t``;
    ``skip[t]``: the frame extends nothing. Returns ``[(labelling, log_prob)]``
    best first, only prefixes with nonzero probability.
    """
    frames, classes = log_probs.shape
    beams = {(): (0.0, -np.inf)}
    for t in range(frames):
        lp = log_probs[t]
        new = defaultdict(lambda: [-np.inf, -np.inf])
        tokens = [k for k in range(classes) if k != blank]
        if allowed is not None:
            tokens = [k for k in tokens if k in allowed[t]]
        if skip is not None and skip[t]:
            tokens = []
        for prefix, (pb, pnb) in beams.items():
            total = np.logaddexp(pb, pnb)
            new[prefix][0] = np.logaddexp(new[prefix][0], total + lp[blank])
            if prefix:
                new[prefix][1] = np.logaddexp(new[prefix][1], pnb + lp[prefix[-1]])
            if max_length is not None and len(prefix) >= max_length:
                continue
            for k in tokens:
                base = pb if prefix and prefix[-1] == k else total
                child = prefix + (k,)
                new[child][1] = np.logaddexp(new[child][1], base + lp[k])
        ranked = sorted(new.items(), key=lambda kv: -np.logaddexp(*kv[1]))
        beams = {k: tuple(v) for k, v in ranked[:width] if np.logaddexp(*v) > -np.inf}
    ranked = sorted(beams.items(), key=lambda kv: -np.logaddexp(*kv[1]))
    return [(k, float(np.logaddexp(*v))) for k, v in ranked]


def random_batch(rng, batch, frames, classes, scale=2.0, pad=True):
    logits = scale * rng.standard_normal((batch, frames, classes))
    paddings = np.zeros((batch, frames))
    if pad:  # paddings anywhere in time, and one sequence without frames
        paddings = (rng.random((batch, frames)) < 0.25).astype(np.float64)
        paddings[-1] = 1.0
    return logits, paddings


def unpad(labels, paddings):
    return tuple(int(x) for x, p in zip(labels, paddings, strict=True) if p == 0)


# ----------------------------------------------------------------------------
# Greedy
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("merge_repeated", [True, False])
def test_greedy_is_the_collapsed_best_path(rng, merge_repeated):
    logits, paddings = random_batch(rng, 5, 7, 4)
    blank = 2
    hyp = jax.jit(
        lambda x, p: jaxctc.greedy_decode(
            x, p, blank_id=blank, merge_repeated=merge_repeated
        )
    )(logits, paddings)
    assert hyp.labels.shape == (5, 7) and hyp.labels.dtype == jnp.int32
    assert hyp.label_paddings.dtype == jnp.float32
    lp = log_softmax(logits)
    for b in range(5):
        valid = paddings[b] == 0
        frames = np.flatnonzero(valid)
        best = np.argmax(lp[b, valid], axis=-1)
        want = collapse(best, blank, merge_repeated)
        assert unpad(hyp.labels[b], hyp.label_paddings[b]) == want
        np.testing.assert_allclose(
            hyp.log_probs[b], np.sum(np.max(lp[b, valid], -1)), rtol=1e-12
        )
        if merge_repeated:
            starts, ends = alignment_spans(best, blank)
        else:
            starts = ends = [t for t, c in enumerate(best) if c != blank]
        n = len(want)
        np.testing.assert_array_equal(hyp.starts[b, :n], frames[starts])
        np.testing.assert_array_equal(hyp.ends[b, :n], frames[ends])
        assert np.all(hyp.starts[b, n:] == -1) and np.all(hyp.ends[b, n:] == -1)
    assert hyp.log_probs[-1] == 0.0 and np.all(hyp.label_paddings[-1] == 1)


def test_greedy_is_the_best_alignment_of_brute_force(rng):
    logits, _ = random_batch(rng, 1, 5, 3, pad=False)
    hyp = jaxctc.greedy_decode(logits, np.zeros((1, 5)))
    table = brute_force(log_softmax(logits[0]), 0)
    best = max(table, key=lambda k: table[k][2])
    assert unpad(hyp.labels[0], hyp.label_paddings[0]) == best
    np.testing.assert_allclose(hyp.log_probs[0], table[best][2], rtol=1e-12)


def test_greedy_robust_inputs():
    logits = np.zeros((2, 4, 3), np.float32)
    logits[0, :, 1] = 5.0
    logits[0, 1, :] = -np.inf  # a frame with nothing possible
    logits[1, :, 2] = -np.inf
    hyp = jaxctc.greedy_decode(jnp.asarray(logits, jnp.bfloat16), np.zeros((2, 4)))
    assert hyp.log_probs.dtype == jnp.float32
    assert hyp.log_probs[0] == -np.inf and np.isfinite(hyp.log_probs[1])
    assert not np.any(np.isnan(hyp.log_probs))
    with pytest.raises(ValueError, match="blank_id"):
        jaxctc.greedy_decode(logits, np.zeros((2, 4)), blank_id=3)
    with pytest.raises(ValueError, match="logit_paddings"):
        jaxctc.greedy_decode(logits, np.zeros((2, 5)))


# ----------------------------------------------------------------------------
# Rescoring
# ----------------------------------------------------------------------------


def test_sequence_log_probs_against_brute_force(rng):
    logits, paddings = random_batch(rng, 3, 5, 3)
    paddings[0] = 0.0
    labels = np.array(
        [[[1, 2, 1], [2, 2, 0], [1, 0, 0]], [[2, 0, 0], [1, 1, 0], [0, 0, 0]]] * 2
    )[:3]
    label_paddings = np.array(
        [[[0, 0, 0], [0, 0, 1], [0, 1, 1]], [[0, 1, 1], [0, 0, 1], [1, 1, 1]]] * 2,
        np.float64,
    )[:3]
    got = jax.jit(jaxctc.sequence_log_probs)(logits, paddings, labels, label_paddings)
    assert got.shape == (3, 3)
    flat = jaxctc.sequence_log_probs(
        logits, paddings, labels[:, 0], label_paddings[:, 0]
    )
    np.testing.assert_allclose(flat, got[:, 0], rtol=1e-12)
    lp = log_softmax(logits)
    for b in range(3):
        table = brute_force(lp[b, paddings[b] == 0], 0)
        for p in range(3):
            key = unpad(labels[b, p], label_paddings[b, p])
            want = table[key][0] if key in table else -np.inf
            np.testing.assert_allclose(got[b, p], want, rtol=1e-9)


# ----------------------------------------------------------------------------
# Prefix beam search
# ----------------------------------------------------------------------------


def test_wide_beam_finds_exact_labellings(rng):
    """A beam wider than every prefix set is the brute-force ranking."""
    logits, paddings = random_batch(rng, 4, 6, 3)
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
    lp = log_softmax(logits)
    for b in range(3):
        valid = np.flatnonzero(paddings[b] == 0)
        table = brute_force(lp[b, valid], blank)
        ranked = sorted(table, key=lambda k: -table[k][0])[:paths]
        for p, key in enumerate(ranked):
            assert unpad(hyp.labels[b, p], hyp.label_paddings[b, p]) == key
            np.testing.assert_allclose(hyp.log_probs[b, p], table[key][0], rtol=1e-9)
            np.testing.assert_allclose(rescored[b, p], table[key][0], rtol=1e-9)
            starts, ends = alignment_spans(table[key][1], blank)
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
    logits, paddings = random_batch(rng, 6, 12, 6, scale=1.5)
    paths = min(width, 3)
    hyp = jaxctc.prefix_beam_search(
        logits, paddings, beam_width=width, top_paths=paths, blank_id=1
    )
    lp = log_softmax(logits)
    for b in range(6):
        want = reference_beam_search(lp[b, paddings[b] == 0], width, 1)[:paths]
        for p, (key, score) in enumerate(want):
            assert unpad(hyp.labels[b, p], hyp.label_paddings[b, p]) == key
            np.testing.assert_allclose(hyp.log_probs[b, p], score, rtol=1e-9)


def test_pruning_options_match_reference(rng):
    logits, paddings = random_batch(rng, 4, 10, 9, scale=2.0)
    lp = log_softmax(logits)
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
            want = reference_beam_search(x, 4, 0, **kwargs)[:2]
            for p, (key, score) in enumerate(want):
                assert unpad(hyp.labels[b, p], hyp.label_paddings[b, p]) == key, name
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
    logits, paddings = random_batch(rng, 3, 8, 5, pad=False)
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
    assert unpad(hyp.labels[0, 0], hyp.label_paddings[0, 0]) == (1, 0)
    assert unpad(hyp.labels[0, 1], hyp.label_paddings[0, 1]) == (1,)
    # TF's expected scores; our float64 reference search agrees with them.
    np.testing.assert_allclose(hyp.log_probs[0], [-5.811451, -6.63339], rtol=1e-6)
    want = reference_beam_search(log_softmax(TF_PROBS + 2.0), 2, 5)
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
    got = [unpad(hyp.labels[0, p], hyp.label_paddings[0, p]) for p in range(3)]
    assert got == [(1, 3), (1, 3, 1), (3, 1, 3)]
    table = brute_force(log_softmax(logits[0]), 5)
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
        ours = [unpad(hyp.labels[b, p], hyp.label_paddings[b, p]) for p in range(paths)]
        theirs = [tuple(int(x) for x in labels[b, p] if x >= 0) for p in range(paths)]
        close = np.allclose(hyp.log_probs[b], log_probs[b], rtol=2e-5, atol=2e-5)
        if ours == theirs and close:
            continue
        differ += 1
        assert np.all(log_probs[b] >= hyp.log_probs[b] - 2e-5)
        ref = reference_beam_search(
            log_softmax(logits[b, paddings[b] == 0]), width, blank
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


# ----------------------------------------------------------------------------
# Graves' prefix search
# ----------------------------------------------------------------------------


def test_prefix_search_is_the_brute_force_best(rng):
    logits, paddings = random_batch(rng, 6, 6, 3, scale=1.0)
    logits[0, :, 2] = -np.inf
    hyp = jaxctc.prefix_search(logits, paddings, blank_id=1)
    assert hyp.labels.shape == (6, 6) and hyp.starts is None
    lp = log_softmax(logits)
    for b in range(6):
        table = brute_force(lp[b, paddings[b] == 0], 1)
        best = max(table, key=lambda k: table[k][0])
        assert unpad(hyp.labels[b], hyp.label_paddings[b]) == best
        np.testing.assert_allclose(hyp.log_probs[b], table[best][0], rtol=1e-9)
    assert hyp.log_probs[-1] == 0.0


def test_prefix_search_split_sections(rng):
    """Splitting after a near-certain blank: each section's best labelling,
    concatenated, scored exactly over the whole sequence (brute force)."""
    logits = rng.standard_normal((1, 7, 3))
    logits[0, 3] = [12.0, 0.0, 0.0]
    split = jaxctc.prefix_search(logits, np.zeros((1, 7)), split_threshold=0.99)
    lp = log_softmax(logits[0])
    want = ()
    for section in (lp[:4], lp[4:]):
        table = brute_force(section, 0)
        want += max(table, key=lambda k: table[k][0])
    assert unpad(split.labels[0], split.label_paddings[0]) == want
    table = brute_force(lp, 0)
    np.testing.assert_allclose(split.log_probs[0], table[want][0], rtol=1e-9)
    with pytest.raises(TypeError, match="host"):
        jax.jit(jaxctc.prefix_search)(logits, np.zeros((1, 7)))
