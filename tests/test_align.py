"""forced_align and posteriors against brute force over every alignment."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxctc
from tests import references

# ----------------------------------------------------------------------------
# References: enumerate every alignment of the valid frames (float64, NumPy).
# ----------------------------------------------------------------------------


def _unpadded(labels, paddings):
    return [int(y) for y, p in zip(labels, paddings, strict=True) if p == 0]


def _states(path, labels, blank):
    """The extended-state sequence of ``path`` if it spells ``labels``, else None."""
    states, emitted, prev = [], 0, blank
    for c in path:
        if c == blank:
            states.append(2 * emitted)
        elif c == prev:
            states.append(2 * emitted - 1)
        else:
            if emitted == len(labels) or labels[emitted] != c:
                return None
            emitted += 1
            states.append(2 * emitted - 1)
        prev = c
    return states if emitted == len(labels) else None


def _alignments(log_probs, paddings, labels, blank):
    """``(path, states, score)`` for every alignment of one sequence.

    ``score`` is the sum of log-probabilities in frame order, so equal-valued
    alignments give bitwise-equal scores.
    """
    frames = [t for t in range(len(paddings)) if paddings[t] == 0]
    num_classes = log_probs.shape[1]
    out = []
    for path in itertools.product(range(num_classes), repeat=len(frames)):
        states = _states(path, labels, blank)
        if states is not None:
            score = 0.0
            for t, c in zip(frames, path, strict=True):
                score += log_probs[t, c]
            out.append((path, states, score))
    return frames, out


def brute_force_align(logits, logit_paddings, labels, label_paddings, blank):
    """Best alignment per sequence with the documented tie-break."""
    batch, time, _ = logits.shape
    n = labels.shape[1]
    log_probs = references.log_softmax(logits)
    frame_labels = np.full((batch, time), -1)
    scores = np.full(batch, -np.inf)
    starts = np.full((batch, n), -1)
    ends = np.full((batch, n), -1)
    for b in range(batch):
        lab = _unpadded(labels[b], label_paddings[b])
        frames, paths = _alignments(log_probs[b], logit_paddings[b], lab, blank)
        if not paths:
            continue
        best = max(score for _, _, score in paths)
        # Ties are exact here (see _tie_logits); the margin only absorbs nothing.
        tied = [p for p in paths if p[2] >= best - 1e-9]
        path, states, score = max(tied, key=lambda p: p[1][::-1])
        scores[b] = score
        for t, c, s in zip(frames, path, states, strict=True):
            frame_labels[b, t] = c
            if s % 2 == 1:
                u = (s - 1) // 2
                starts[b, u] = t if starts[b, u] < 0 else starts[b, u]
                ends[b, u] = t
    return frame_labels, scores, starts, ends


def brute_force_posteriors(logits, logit_paddings, labels, label_paddings, blank):
    """``P(pi_t = k | y, x)`` ``[B, T, K]`` by summing over every alignment."""
    log_probs = references.log_softmax(logits)
    post = np.zeros(logits.shape)
    for b in range(logits.shape[0]):
        lab = _unpadded(labels[b], label_paddings[b])
        frames, paths = _alignments(log_probs[b], logit_paddings[b], lab, blank)
        weights = np.exp(np.array([score for _, _, score in paths]))
        for (path, _, _), w in zip(paths, weights, strict=True):
            for t, c in zip(frames, path, strict=True):
                post[b, t, c] += w / weights.sum()
    return post


def numpy_viterbi(log_probs, paddings, labels, blank):
    """Textbook Viterbi with a backpointer table, for one sequence (float64).

    Same tie-break as ``forced_align`` (larger predecessor state wins), written
    the slow, obvious way; for inputs too long to enumerate.
    """
    ext = [blank]
    for y in labels:
        ext += [y, blank]
    size = len(ext)
    frames = [t for t in range(len(paddings)) if paddings[t] == 0]
    alpha = np.full(size, -np.inf)
    back = []
    for i, t in enumerate(frames):
        new = np.full(size, -np.inf)
        ptr = np.zeros(size, int)
        for s in range(size):
            if i == 0:
                preds = [p for p in (0, 1) if p == s]
                prev = {p: 0.0 for p in preds}
            else:
                preds = [s, s - 1] + (
                    [s - 2] if s >= 2 and ext[s] != ext[s - 2] else []
                )
                prev = {p: alpha[p] for p in preds if p >= 0}
            if prev:
                best = max(prev.values())
                p = max(p for p, v in prev.items() if v == best)
                new[s], ptr[s] = best + log_probs[t, ext[s]], p
        alpha = new
        back.append(ptr)
    finals = [size - 1, size - 2] if labels else [0]
    state = max(finals, key=lambda s: (alpha[s], s))
    score = alpha[state]
    path = np.full(len(paddings), -1)
    for i in range(len(frames) - 1, -1, -1):
        path[frames[i]] = ext[state]
        state = back[i][state]
    return path, score


# ----------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------


def _tie_logits(rng, batch, time, num_classes):
    """Logits with exact ties: each frame takes only two values (some one value).

    Alignments tie exactly when they pick equal logits frame by frame; other
    score differences are of order one, far above rounding.
    """
    levels = rng.normal(size=(batch, time, 2)) * 2.0
    pick = rng.integers(0, 2, size=(batch, time, num_classes))
    logits = np.take_along_axis(levels, pick, axis=2)
    uniform = rng.random((batch, time, 1)) < 0.2
    return np.where(uniform, 0.0, logits)


def _batch(rng, batch=5, time=6, num_classes=3, n=3, blank=0, ties=True):
    if ties:
        logits = _tie_logits(rng, batch, time, num_classes)
    else:
        logits = rng.normal(size=(batch, time, num_classes)) * 2.0
    logit_paddings = (rng.random((batch, time)) < 0.25).astype(np.float64)
    num_labels = rng.integers(0, n + 1, size=batch)
    label_paddings = (np.arange(n)[None, :] >= num_labels[:, None]).astype(np.float64)
    others = [k for k in range(num_classes) if k != blank]
    labels = rng.choice(others, size=(batch, n))
    labels = np.where(
        label_paddings == 1, rng.integers(0, num_classes, (batch, n)), labels
    )
    return logits, logit_paddings, labels.astype(np.int32), label_paddings


def _check_alignment(out, expected):
    frame_labels, scores, starts, ends = expected
    np.testing.assert_array_equal(out.frame_labels, frame_labels)
    np.testing.assert_array_equal(out.starts, starts)
    np.testing.assert_array_equal(out.ends, ends)
    np.testing.assert_allclose(out.log_probs, scores, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------
# forced_align
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("blank", [0, 2])
def test_forced_align_matches_brute_force_with_ties(seed, blank):
    rng = np.random.default_rng(seed)
    inputs = _batch(rng, blank=blank)
    out = jax.jit(jaxctc.forced_align, static_argnames="blank_id")(
        *inputs, blank_id=blank
    )
    assert out.frame_labels.dtype == jnp.int32 and out.starts.dtype == jnp.int32
    assert out.log_probs.dtype == jnp.float64
    _check_alignment(out, brute_force_align(*inputs, blank))


def test_forced_align_all_ties_prefers_early_labels():
    # Uniform frames: every alignment of [1, 2] over 4 frames ties. The rule
    # (largest reversed state sequence) ends in the blank state 4 and stays
    # there while it is reachable (from frame 2 on), then 3, then 1.
    out = jaxctc.forced_align(
        np.zeros((1, 4, 3)), np.zeros((1, 4)), np.array([[1, 2]]), np.zeros((1, 2))
    )
    inputs = (
        np.zeros((1, 4, 3)),
        np.zeros((1, 4)),
        np.array([[1, 2]]),
        np.zeros((1, 2)),
    )
    _check_alignment(out, brute_force_align(*inputs, 0))
    assert out.frame_labels.tolist() == [[1, 2, 0, 0]]


def test_forced_align_repeats_need_a_blank():
    # [1, 1] over exactly 3 frames has one alignment: 1 - 1.
    logits = np.random.default_rng(0).normal(size=(1, 3, 2))
    out = jaxctc.forced_align(
        logits, np.zeros((1, 3)), np.array([[1, 1]]), np.zeros((1, 2))
    )
    assert out.frame_labels.tolist() == [[1, 0, 1]]
    assert out.starts.tolist() == [[0, 2]] and out.ends.tolist() == [[0, 2]]
    log_probs = references.log_softmax(logits)[0]
    expected = log_probs[0, 1] + log_probs[1, 0] + log_probs[2, 1]
    np.testing.assert_allclose(out.log_probs[0], expected, rtol=1e-12)


def test_forced_align_matches_textbook_viterbi_on_longer_inputs():
    # Continuous random logits (no ties), T = 40: too long to enumerate.
    rng = np.random.default_rng(1)
    inputs = _batch(rng, batch=4, time=40, num_classes=6, n=12, blank=3, ties=False)
    logits, logit_paddings, labels, label_paddings = inputs
    out = jax.jit(jaxctc.forced_align, static_argnames="blank_id")(*inputs, blank_id=3)
    out = jax.tree.map(np.asarray, out)
    log_probs = references.log_softmax(logits)
    for b in range(4):
        lab = _unpadded(labels[b], label_paddings[b])
        path, score = numpy_viterbi(log_probs[b], logit_paddings[b], lab, 3)
        np.testing.assert_array_equal(out.frame_labels[b], path)
        np.testing.assert_allclose(out.log_probs[b], score, rtol=1e-10)
    # starts/ends: the runs of equal non-blank classes over the valid frames.
    for b in range(4):
        frames = np.flatnonzero(logit_paddings[b] == 0)
        runs = []  # [class, first frame, last frame]
        for t in frames:
            c = out.frame_labels[b, t]
            if runs and runs[-1][0] == c:
                runs[-1][2] = t
            else:
                runs.append([c, t, t])
        runs = [r for r in runs if r[0] != 3]
        n = labels.shape[1]
        starts = [r[1] for r in runs] + [-1] * (n - len(runs))
        ends = [r[2] for r in runs] + [-1] * (n - len(runs))
        assert out.starts[b].tolist() == starts and out.ends[b].tolist() == ends


def test_forced_align_infeasible_and_empty():
    # Row 0: [1, 1] needs 3 frames, has 2 -> no alignment.
    # Row 1: no labels -> all blank. Row 2: every frame padded, no labels.
    logits = np.random.default_rng(0).normal(size=(3, 2, 3))
    paddings = np.array([[0, 0], [0, 0], [1, 1]], np.float64)
    labels = np.array([[1, 1], [2, 2], [1, 1]])
    label_paddings = np.array([[0, 0], [1, 1], [1, 1]], np.float64)
    out = jaxctc.forced_align(logits, paddings, labels, label_paddings)
    assert out.log_probs[0] == -np.inf
    assert out.frame_labels.tolist() == [[-1, -1], [0, 0], [-1, -1]]
    assert np.all(out.starts == -1) and np.all(out.ends == -1)
    log_probs = references.log_softmax(logits)
    np.testing.assert_allclose(out.log_probs[1], log_probs[1, :, 0].sum(), rtol=1e-12)
    assert out.log_probs[2] == 0.0
    _check_alignment(
        out, brute_force_align(logits, paddings, labels, label_paddings, 0)
    )


def test_forced_align_masked_class_gives_minus_inf():
    # Class 1 is masked at frame 1 (blank has probability 1 there): [1] over 2
    # frames aligns as "1 -", the only alignment avoiding it, probability 1/2.
    # Masking frame 0 too leaves only zero-probability alignments: log_probs
    # = -inf, with a valid alignment still.
    logits = np.zeros((2, 2, 2))
    logits[:, 1, 1] = -np.inf
    logits[1, 0, 1] = -np.inf
    out = jaxctc.forced_align(
        logits, np.zeros((2, 2)), np.array([[1], [1]]), np.zeros((2, 1))
    )
    assert out.frame_labels[0].tolist() == [1, 0]
    np.testing.assert_allclose(out.log_probs[0], math.log(0.5), rtol=1e-12)
    assert out.log_probs[1] == -np.inf
    assert _states(out.frame_labels[1].tolist(), [1], 0) is not None


def test_forced_align_float32_and_vmap():
    rng = np.random.default_rng(2)
    inputs = _batch(rng, batch=6, time=6, ties=False)
    direct = jaxctc.forced_align(*inputs)
    f32 = jaxctc.forced_align(inputs[0].astype(np.float32), *inputs[1:])
    assert f32.log_probs.dtype == jnp.float32
    np.testing.assert_array_equal(f32.frame_labels, direct.frame_labels)
    np.testing.assert_allclose(f32.log_probs, direct.log_probs, rtol=1e-5)
    # vmap over a leading group axis: same as the flat batch.
    grouped = [x.reshape((2, 3) + x.shape[1:]) for x in inputs]
    out = jax.jit(jax.vmap(jaxctc.forced_align))(*grouped)
    for a, b in zip(out, direct, strict=True):
        np.testing.assert_array_equal(np.reshape(a, b.shape), b)


def test_forced_align_checked_under_jit():
    from jax.experimental import checkify

    x, p, q = np.zeros((1, 3, 3)), np.zeros((1, 3)), np.zeros((1, 1))

    @jax.jit
    @checkify.checkify
    def align(labels):
        return jaxctc.forced_align(x, p, labels, q, checked=True)

    err, out = align(np.array([[2]]))
    err.throw()  # valid labels: no error
    assert out.frame_labels.tolist() == [[2, 0, 0]]
    err, _ = align(np.array([[0]]))
    with pytest.raises(checkify.JaxRuntimeError, match="must not contain `blank_id`"):
        err.throw()


def test_forced_align_static_errors():
    x, p, y, q = (
        np.zeros((1, 2, 3)),
        np.zeros((1, 2)),
        np.array([[1]]),
        np.zeros((1, 1)),
    )
    with pytest.raises(ValueError, match="`logits` must have rank 3"):
        jaxctc.forced_align(x[0], p, y, q)
    with pytest.raises(ValueError, match="`blank_id`"):
        jaxctc.forced_align(x, p, y, q, blank_id=3)
    with pytest.raises(ValueError, match="must not contain `blank_id`"):
        jaxctc.forced_align(x, p, y, q, blank_id=1)
    with pytest.raises(TypeError, match="`labels` must be an integer"):
        jaxctc.forced_align(x, p, y.astype(np.float32), q)


# ----------------------------------------------------------------------------
# posteriors
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_posteriors_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    inputs = list(_batch(rng, ties=False, blank=1))
    # Keep every sequence feasible: brute force has no alignment otherwise.
    ok = np.asarray(jaxctc.feasible(*inputs[1:]))
    inputs[3] = np.where(ok[:, None], inputs[3], 1.0)
    post = jax.jit(jaxctc.posteriors, static_argnames="blank_id")(*inputs, blank_id=1)
    assert post.dtype == jnp.float64
    np.testing.assert_allclose(post, brute_force_posteriors(*inputs, 1), atol=1e-12)
    sums = np.sum(post, axis=2)
    np.testing.assert_allclose(sums, 1.0 - inputs[1], atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_posteriors_are_softmax_minus_loss_gradient(dtype):
    # d loss_b / d logits = softmax * valid - posteriors: the identity behind
    # the loss's gradient, checked through jax.grad of the public loss
    # (including an infeasible row, where both use the log_epsilon floor).
    rng = np.random.default_rng(3)
    logits, paddings, labels, label_paddings = _batch(rng, batch=6, time=8, n=4)
    logits = logits.astype(dtype)
    grad = jax.jit(
        jax.grad(
            lambda x: jaxctc.ctc_loss(
                x, paddings, labels, label_paddings, reduction="sum"
            )
        )
    )(logits)
    post = jax.jit(jaxctc.posteriors)(logits, paddings, labels, label_paddings)
    assert post.dtype == dtype
    softmax = jax.nn.softmax(logits, axis=-1) * (1 - paddings.astype(dtype))[:, :, None]
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(softmax - post, grad, atol=tol)


# ----------------------------------------------------------------------------
# Reliability (issue 11)
# ----------------------------------------------------------------------------


def test_forced_align_and_posteriors_with_empty_labels():
    # Item 1: label arrays with N = 0. The only alignment is all blank.
    logits = np.random.default_rng(0).normal(size=(2, 4, 3))
    paddings = np.array([[0, 0, 0, 0], [0, 1, 0, 1]], np.float64)
    labels, label_paddings = np.zeros((2, 0), np.int32), np.zeros((2, 0))
    out = jaxctc.forced_align(logits, paddings, labels, label_paddings, blank_id=2)
    assert out.starts.shape == out.ends.shape == (2, 0)
    _check_alignment(
        out, brute_force_align(logits, paddings, labels, label_paddings, 2)
    )
    post = jaxctc.posteriors(logits, paddings, labels, label_paddings, blank_id=2)
    np.testing.assert_allclose(
        post, brute_force_posteriors(logits, paddings, labels, label_paddings, 2)
    )


def test_forced_align_and_posteriors_on_a_frame_of_only_minus_inf_logits():
    # Item 4: every class masked on a valid frame. Each alignment passes it at
    # log_epsilon: forced_align still returns one (the best of the floored
    # model, here that of a uniform frame) with log_probs -inf, and the
    # posteriors are the floored model's, summing to one.
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 5, 3))
    labels, label_paddings = np.array([[1, 2]]), np.zeros((1, 2))
    paddings = np.zeros((1, 5))
    masked, uniform = logits.copy(), logits.copy()
    masked[0, 2] = -np.inf
    uniform[0, 2] = 0.0
    out = jaxctc.forced_align(masked, paddings, labels, label_paddings)
    want = jaxctc.forced_align(uniform, paddings, labels, label_paddings)
    np.testing.assert_array_equal(out.frame_labels, want.frame_labels)
    np.testing.assert_array_equal(out.starts, want.starts)
    assert out.log_probs[0] == -np.inf
    post = jaxctc.posteriors(masked, paddings, labels, label_paddings)
    np.testing.assert_allclose(
        post,
        brute_force_posteriors(uniform, paddings, labels, label_paddings, 0),
        atol=1e-12,
    )


def test_posteriors_sum_to_one_on_infeasible_and_masked_sequences():
    # Item 9: sequences with no alignment (too few frames; a label on a masked
    # class) got rows summing to 1.002-1.006 in float32: log Z of about 1e5
    # carries an ulp of 0.008.
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(4, 6, 4)).astype(np.float32)
    logits[1, :, 3] = -np.inf
    logits[3, 2] = -np.inf
    paddings = np.zeros((4, 6), np.float32)
    paddings[2, 3:] = 1.0
    labels = np.array([[1, 1, 1, 1], [3, 2, 1, 2], [1, 2, 3, 1], [2, 1, 3, 3]])
    label_paddings = np.zeros((4, 4), np.float32)
    enough_frames = jaxctc.feasible(paddings, labels, label_paddings)
    assert enough_frames.tolist() == [False, True, False, True]
    post = jaxctc.posteriors(logits, paddings, labels, label_paddings)
    np.testing.assert_allclose(post.sum(-1), 1.0 - paddings, atol=1e-6)


def test_posteriors_of_long_sequences_keep_float32_accuracy():
    # Item 10: exp(alpha + beta - log Z) lost float32 digits (rows 0.25% off
    # one here, 2.3e-3 off float64); the gradient's smoothing pass keeps
    # probabilities in [0, 1] (measured 1.5e-6 and 1.9e-4).
    rng = np.random.default_rng(3)
    logits = (2 * rng.normal(size=(2, 1000, 32))).astype(np.float32)
    labels = rng.integers(1, 32, size=(2, 400)).astype(np.int32)
    paddings, label_paddings = np.zeros((2, 1000)), np.zeros((2, 400))
    post = jaxctc.posteriors(logits, paddings, labels, label_paddings)
    truth = jaxctc.posteriors(
        logits.astype(np.float64), paddings, labels, label_paddings
    )
    assert post.dtype == jnp.float32
    np.testing.assert_allclose(post.sum(-1), 1.0, atol=2e-5)
    np.testing.assert_allclose(post, truth, atol=6e-4)
