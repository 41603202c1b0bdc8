"""Tests of the CTC loss against brute force, optax and finite differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import checkify
from jax.test_util import check_grads

import jaxctc
from tests import references


def random_batch(
    rng, batch, frames, classes, labels, *, blank_id=0, scale=1.0, dtype=np.float32
):
    """A padded batch: frame paddings anywhere in time, right-padded labels
    (with repeats, lengths from 0 to ``labels``), every sequence feasible."""
    logits = (rng.normal(size=(batch, frames, classes)) * scale).astype(dtype)
    logit_paddings = (rng.random((batch, frames)) < 0.25).astype(np.float32)
    logit_paddings[0] = 0.0  # one full-length sequence
    non_blank = [k for k in range(classes) if k != blank_id]
    ids = rng.choice(non_blank, size=(batch, labels)).astype(np.int32)
    ids[:, 1::3] = ids[:, 0::3][:, : ids[:, 1::3].shape[1]]  # force repeats
    label_paddings = np.zeros((batch, labels), np.float32)
    for b in range(batch):
        num_frames = int((logit_paddings[b] == 0).sum())
        n = int(rng.integers(0, labels + 1))
        while n and _min_frames(ids[b, :n]) > num_frames:
            n -= 1
        label_paddings[b, n:] = 1.0
        ids[b, n:] = rng.integers(0, classes, size=labels - n)  # any padding value
    return logits, logit_paddings, ids, label_paddings


def optax_ref(fn):
    """optax under standard promotion: with x64 on, its one-hot matmul mixes
    float64 into float32 inputs, which strict promotion (conftest) rejects."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.numpy_dtype_promotion("standard"):
            return fn(*args, **kwargs)

    return wrapped


def _min_frames(labels):
    return len(labels) + sum(
        int(a == b) for a, b in zip(labels[:-1], labels[1:], strict=True)
    )


def valid_part(logits, logit_paddings, labels, label_paddings, b):
    lp = references.log_softmax(logits[b])[logit_paddings[b] == 0]
    return lp, list(labels[b][label_paddings[b] == 0])


# ----------------------------------------------------------------------------
# Exactness against brute force (float64)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("blank_id", [0, 1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_matches_brute_force(blank_id, seed):
    rng = np.random.default_rng(seed)
    batch = random_batch(
        rng, 4, 6, 4, 3, blank_id=blank_id, scale=2.0, dtype=np.float64
    )
    loss = jax.jit(functools.partial(jaxctc.ctc_loss, blank_id=blank_id))(*batch)
    assert loss.dtype == jnp.float64
    for b in range(4):
        lp, y = valid_part(*batch, b)
        np.testing.assert_allclose(
            loss[b], -references.log_prob(lp, y, blank_id), rtol=1e-10
        )


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_probs_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    logits, lpad, labels, lab_pad = random_batch(rng, 3, 5, 3, 3, dtype=np.float64)
    lpad[:] = 0.0  # brute force alphas are per frame index: no frame padding
    lab_pad[:, :] = 0.0
    labels[:] = [[1, 2, 2], [2, 1, 2], [1, 1, 1]][: len(labels)]
    logits = logits[:, :, :3]
    _, blank, label = jaxctc.ctc_loss_with_forward_probs(logits, lpad, labels, lab_pad)
    for b in range(3):
        ref_blank, ref_label = references.forward_variables(
            references.log_softmax(logits[b]), labels[b], 0
        )
        reach_b, reach_l = np.isfinite(ref_blank), np.isfinite(ref_label)
        # The last row of logalpha_blank holds blank + label ("all n emitted").
        ref_blank[-1, 1:] = np.logaddexp(ref_blank[-1, 1:], ref_label[-1])
        reach_b[-1] = np.isfinite(ref_blank[-1])
        np.testing.assert_allclose(blank[:, b][reach_b], ref_blank[reach_b], rtol=1e-10)
        np.testing.assert_allclose(label[:, b][reach_l], ref_label[reach_l], rtol=1e-10)
        # Unreachable states hold log_epsilon-scale values, as in optax.
        assert np.all(np.asarray(blank[:, b])[~reach_b] < -1e4)
        assert np.all(np.asarray(label[:, b])[~reach_l] < -1e4)


def test_empty_labels_and_fully_padded_frames():
    logits = np.random.default_rng(0).normal(size=(3, 4, 3))
    lpad = np.zeros((3, 4))
    lpad[2] = 1.0  # no valid frame
    labels = np.array([[1, 2], [0, 0], [0, 0]], np.int32)
    lab_pad = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    loss = jaxctc.ctc_loss(logits, lpad, labels, lab_pad)
    lp = references.log_softmax(logits)
    np.testing.assert_allclose(loss[0], -references.log_prob(lp[0], [1, 2], 0))
    np.testing.assert_allclose(loss[1], -lp[1, :, 0].sum())  # all blank
    np.testing.assert_allclose(loss[2], 0.0)  # empty labelling of nothing


@pytest.mark.parametrize("grad_mode", ["posterior", "autodiff"])
def test_grad_of_loss_with_empty_labels(grad_mode):
    # Issue 11, item 1: label arrays with N = 0 (e.g. a decoder's output on no
    # frames). The only labelling is all blank: loss -sum log p(blank), and
    # the gradient softmax minus the blank's one-hot on valid frames.
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 4))
    lpad = np.zeros((3, 5))
    lpad[1, 3:] = 1.0
    lpad[2] = 1.0
    labels, lab_pad = np.zeros((3, 0), np.int32), np.zeros((3, 0))
    lp = references.log_softmax(logits)

    def total(x):
        return jnp.sum(jaxctc.ctc_loss(x, lpad, labels, lab_pad, grad_mode=grad_mode))

    loss = jaxctc.ctc_loss(logits, lpad, labels, lab_pad)
    for b in range(3):
        want = -references.log_prob(lp[b][lpad[b] == 0], [], 0)
        np.testing.assert_allclose(loss[b], want, rtol=1e-12, atol=1e-12)
    expected = (np.exp(lp) - np.eye(4)[0]) * (1 - lpad)[:, :, None]
    np.testing.assert_allclose(jax.grad(total)(logits), expected, atol=1e-12)
    np.testing.assert_allclose(jax.jit(jax.grad(total))(logits), expected, atol=1e-12)


def test_forward_probs_with_empty_labels():
    # Issue 11, item 1: the blank alphas are the all-blank prefix scores.
    logits = np.random.default_rng(1).normal(size=(2, 4, 3))
    lpad = np.zeros((2, 4))
    loss, blank, label = jaxctc.ctc_loss_with_forward_probs(
        logits, lpad, np.zeros((2, 0), np.int32), np.zeros((2, 0))
    )
    assert blank.shape == (4, 2, 1) and label.shape == (4, 2, 0)
    lp = references.log_softmax(logits)
    np.testing.assert_allclose(
        blank[:, :, 0], np.cumsum(lp[:, :, 0], axis=1).T, rtol=1e-12
    )
    np.testing.assert_allclose(loss, -lp[:, :, 0].sum(1), rtol=1e-12)


# ----------------------------------------------------------------------------
# Parity with optax (float32, padded batches)
# ----------------------------------------------------------------------------

OPTAX_CASES = [
    # (blank_id, scale, frames, classes, labels): flat and peaky, blank first,
    # last and in the middle.
    (0, 1.0, 30, 8, 8),
    (7, 1.0, 30, 8, 8),
    (3, 5.0, 40, 8, 10),
    (0, 10.0, 25, 12, 6),
]


@pytest.mark.parametrize("blank_id,scale,frames,classes,labels", OPTAX_CASES)
def test_matches_optax(blank_id, scale, frames, classes, labels):
    rng = np.random.default_rng(blank_id)
    batch = random_batch(
        rng, 6, frames, classes, labels, blank_id=blank_id, scale=scale
    )
    ours = jax.jit(
        functools.partial(jaxctc.ctc_loss_with_forward_probs, blank_id=blank_id)
    )(*batch)
    ref = jax.jit(
        functools.partial(
            optax_ref(optax.ctc_loss_with_forward_probs), blank_id=blank_id
        )
    )(*batch)
    assert ours[0].dtype == jnp.float32
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-5, atol=1e-4)
    _, lpad, _, lab_pad = batch
    for b in range(6):
        t_ok = lpad[b] == 0
        u = int((lab_pad[b] == 0).sum())
        for mine, theirs in [
            (ours[1][t_ok, b, : u + 1], ref[1][t_ok, b, : u + 1]),
            (ours[2][t_ok, b, :u], ref[2][t_ok, b, :u]),
        ]:
            mine, theirs = np.asarray(mine), np.asarray(theirs)
            # States no path reaches yet hold log_epsilon-scale values whose
            # digits depend on how "impossible" is accumulated: compare the
            # reachable ones, and that the others are unreachable in both.
            reach = theirs > -5e4
            np.testing.assert_allclose(mine[reach], theirs[reach], rtol=1e-5, atol=1e-4)
            assert np.all(mine[~reach] < -5e4)

    def total(fn, x):
        return jnp.sum(
            fn(x, *batch[1:], blank_id=blank_id).astype(x.dtype)
            * jnp.arange(1.0, 7.0, dtype=x.dtype)
        )

    # float64: the posterior gradient equals optax's autodiff one exactly.
    x64 = batch[0].astype(np.float64)
    g_ours = jax.jit(jax.grad(functools.partial(total, jaxctc.ctc_loss)))(x64)
    g_ref = jax.jit(jax.grad(functools.partial(total, optax_ref(optax.ctc_loss))))(x64)
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-9, atol=1e-11)
    # float32: within float32 rounding of that truth (measured: jaxctc's error
    # 1.0e-4 and 1.3e-4 at scales 5 and 10, optax's 1.3e-4 and 1.4e-4).
    g32 = jax.jit(jax.grad(functools.partial(total, jaxctc.ctc_loss)))(batch[0])
    assert g32.dtype == jnp.float32
    np.testing.assert_allclose(g32, g_ref, atol=3e-4)


def test_float32_gradient_of_long_sequences_is_close_to_float64():
    # Losses of 1000+ nats: exp(alpha + beta - log Z) of two large log-scores
    # loses digits in float32 (measured error 1.2e-3 here); the default
    # gradient carries posteriors in [0, 1] back frame by frame instead
    # (measured 7.2e-5).
    batch = random_batch(np.random.default_rng(0), 4, 400, 29, 80, scale=2.0)

    def grad(x):
        return jax.jit(jax.grad(lambda x: jnp.sum(jaxctc.ctc_loss(x, *batch[1:]))))(x)

    truth = grad(batch[0].astype(np.float64))
    assert float(jnp.min(jaxctc.ctc_loss(*batch))) > 1000
    np.testing.assert_allclose(grad(batch[0]), truth, atol=3e-4)


def test_gradient_of_full_length_peaky_batch_is_close_to_float64():
    # Model-like output (blank p >= 0.99 on most frames, the rest far below)
    # that spells its labels, every frame and label valid: the forward pass
    # combines blank n's incoming sum into label n's, so check that path on
    # the batches it is tuned for, against float64 and optax.
    rng = np.random.default_rng(4)
    batch, frames, classes, num = 4, 300, 29, 60
    labels = rng.integers(1, classes, size=(batch, num)).astype(np.int32)
    logits = rng.uniform(-25, -12, size=(batch, frames, classes))
    for b in range(batch):
        # One frame per label at random distinct times, blanks elsewhere.
        times = np.sort(rng.choice(np.arange(1, frames, 2), size=num, replace=False))
        top = np.zeros(frames, np.int64)
        top[times] = labels[b]
        p_top = np.where(top == 0, 0.995, 0.95)
        logits[b, np.arange(frames), top] = np.log(p_top)
    logits = logits.astype(np.float32)
    paddings = np.zeros((batch, frames), np.float32)
    label_paddings = np.zeros((batch, num), np.float32)

    def value_and_grad(loss_fn, x):
        return jax.jit(
            jax.value_and_grad(
                lambda x: jnp.sum(loss_fn(x, paddings, labels, label_paddings))
            )
        )(x)

    loss, grad = value_and_grad(jaxctc.ctc_loss, logits)
    truth_loss, truth = value_and_grad(jaxctc.ctc_loss, logits.astype(np.float64))
    optax_loss, optax_grad = value_and_grad(optax_ref(optax.ctc_loss), logits)
    # Losses of 0.004 nats each: float32 log-space rounding over 300 frames
    # (measured 9.5e-5 in the sum, as before the forward pass changed).
    np.testing.assert_allclose(loss, truth_loss, atol=2e-4)
    np.testing.assert_allclose(loss, optax_loss, atol=2e-4)
    np.testing.assert_allclose(grad, truth, atol=1e-5)
    np.testing.assert_allclose(grad, optax_grad, atol=1e-4)


def test_alpha_gradients_match_optax():
    """A cotangent on the alphas takes the autodiff path; reachable entries
    (above log_epsilon scale) must give optax's gradient."""
    rng = np.random.default_rng(5)
    batch = random_batch(rng, 3, 12, 5, 4)
    _, ref_blank, ref_label = optax_ref(optax.ctc_loss_with_forward_probs)(*batch)
    # Reachable entries of the valid region: valid frames, n <= U (n < U).
    frame_ok = (batch[1] == 0).T[:, :, None]
    u = (batch[3] == 0).sum(1)[None, :, None]
    n_blank = np.arange(ref_blank.shape[-1])[None, None]
    n_label = np.arange(ref_label.shape[-1])[None, None]
    masks = [
        ((np.asarray(ref_blank) > -5e4) & frame_ok & (n_blank <= u)).astype(np.float32),
        ((np.asarray(ref_label) > -5e4) & frame_ok & (n_label < u)).astype(np.float32),
    ]

    def reach(fn, x):
        _, blank, label = fn(x, *batch[1:])
        return jnp.sum(blank.astype(x.dtype) * masks[0]) + jnp.sum(
            label.astype(x.dtype) * masks[1]
        )

    g_ours = jax.grad(functools.partial(reach, jaxctc.ctc_loss_with_forward_probs))(
        batch[0]
    )
    g_ref = jax.grad(
        functools.partial(reach, optax_ref(optax.ctc_loss_with_forward_probs))
    )(batch[0])
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------


def _f64_batch(seed=0):
    rng = np.random.default_rng(seed)
    return random_batch(rng, 3, 7, 4, 3, scale=1.5, dtype=np.float64)


def test_posterior_gradient_finite_differences():
    logits, *rest = _f64_batch()
    weights = jnp.asarray([1.0, -0.5, 2.0])

    def f(x):
        return jnp.sum(jaxctc.ctc_loss(x, *rest) * weights)

    check_grads(
        f, (jnp.asarray(logits),), order=1, modes=("rev",), atol=1e-6, rtol=1e-6
    )


# Small vocabularies take the class sums after the backward scan, large ones
# scatter them per frame (the switch is at K = 64): both against autodiff, with
# the blank first, in the middle and last, a masked class and padded frames.
@pytest.mark.parametrize("classes", [4, 100])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_posterior_gradient_equals_autodiff(classes, where):
    blank_id = {"first": 0, "middle": classes // 2, "last": classes - 1}[where]
    logits, *rest = random_batch(
        np.random.default_rng(classes),
        3,
        9,
        classes,
        3,
        blank_id=blank_id,
        scale=1.5,
        dtype=np.float64,
    )
    # Mask a class in sequence 1 (-inf logits) that its labels do not use.
    masked, other = (blank_id + 1) % classes, (blank_id + 2) % classes
    logits[1, :, masked] = -np.inf
    labels = rest[1]
    labels[1][labels[1] == masked] = other

    def f(mode, x):
        loss = jaxctc.ctc_loss(x, *rest, blank_id=blank_id, grad_mode=mode)
        return jnp.sum(loss * jnp.arange(1.0, 4.0, dtype=x.dtype))

    posterior = jax.grad(functools.partial(f, "posterior"))(logits)
    assert bool(jnp.all(jnp.isfinite(posterior)))
    np.testing.assert_allclose(
        posterior, jax.grad(functools.partial(f, "autodiff"))(logits), atol=1e-10
    )


def test_autodiff_gradient_at_exact_ties():
    # Issue 11, item 2: all-zero logits (a zero-initialised output layer) tie
    # every predecessor exactly; autodiff through abs() took d|x|/dx = 1 at 0.
    args = (np.zeros((1, 4)), np.array([[1]]), np.zeros((1, 1)))

    def f(mode, x):
        return jnp.sum(jaxctc.ctc_loss(x, *args, grad_mode=mode))

    def g(fn, x):
        return jax.grad(lambda v: jnp.sum(fn(v, *args)))(x)

    zeros = jnp.zeros((1, 4, 2))
    autodiff = jax.grad(functools.partial(f, "autodiff"))(zeros)
    np.testing.assert_allclose(autodiff, g(optax_ref(optax.ctc_loss), zeros), atol=1e-6)
    np.testing.assert_allclose(
        autodiff, jax.grad(functools.partial(f, "posterior"))(zeros), atol=1e-6
    )
    check_grads(
        functools.partial(f, "autodiff"),
        (zeros.astype(jnp.float64),),
        order=1,
        modes=("rev",),
        atol=1e-6,
        rtol=1e-6,
    )
    # Integer-valued logits: ties on every frame of a padded batch.
    rng = np.random.default_rng(0)
    logits, *rest = random_batch(rng, 4, 8, 3, 3, dtype=np.float64)
    logits = np.round(logits).astype(np.float64)
    modes = [
        jax.grad(lambda x, m=m: jnp.sum(jaxctc.ctc_loss(x, *rest, grad_mode=m)))(logits)
        for m in ("posterior", "autodiff")
    ]
    np.testing.assert_allclose(modes[0], modes[1], atol=1e-10)


def test_higher_order_and_forward_mode_with_autodiff():
    logits, lpad, labels, lab_pad = _f64_batch(2)
    x = jnp.asarray(logits[:2, :5])
    rest = (lpad[:2, :5], labels[:2], lab_pad[:2])

    def f(x):
        return jnp.sum(jaxctc.ctc_loss(x, *rest, grad_mode="autodiff"))

    # Forward mode (jvp) against finite differences.
    check_grads(f, (x,), order=1, modes=("fwd",), atol=1e-6, rtol=1e-6)
    v = jnp.asarray(np.random.default_rng(0).normal(size=x.shape))
    eps = 1e-5
    fd = (jax.grad(f)(x + eps * v) - jax.grad(f)(x - eps * v)) / (2 * eps)
    # Hessian-vector product, forward-over-reverse.
    _, hvp = jax.jvp(jax.grad(f), (x,), (v,))
    np.testing.assert_allclose(hvp, fd, atol=1e-6)
    # Reverse-over-reverse: the full Hessian by jacrev of grad.
    hessian = jax.jacrev(jax.grad(f))(x)
    np.testing.assert_allclose(jnp.tensordot(hessian, v, axes=3), fd, atol=1e-6)


def test_posterior_mode_rejects_forward_mode_clearly():
    logits, *rest = _f64_batch(2)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda x: jaxctc.ctc_loss(x, *rest), (logits,), (logits,))


def test_gradient_of_valid_frames_sums_to_zero_and_padded_is_zero():
    logits, lpad, labels, lab_pad = _f64_batch(3)
    g = jax.grad(lambda x: jnp.sum(jaxctc.ctc_loss(x, lpad, labels, lab_pad)))(logits)
    # softmax - posterior: both sum to one over classes on a valid frame.
    np.testing.assert_allclose(np.asarray(g).sum(-1), 0.0, atol=1e-12)
    assert np.all(np.asarray(g)[lpad == 1] == 0.0)


def test_vmap_and_jit():
    logits, lpad, labels, lab_pad = _f64_batch(4)
    stacked = [np.stack([a, a[::-1]]) for a in (logits, lpad, labels, lab_pad)]
    vm = jax.jit(jax.vmap(jaxctc.ctc_loss))(*stacked)
    np.testing.assert_allclose(vm[0], jaxctc.ctc_loss(logits, lpad, labels, lab_pad))
    np.testing.assert_allclose(
        vm[1], jaxctc.ctc_loss(*(a[::-1] for a in (logits, lpad, labels, lab_pad)))
    )
    g = jax.vmap(jax.grad(lambda *a: jnp.sum(jaxctc.ctc_loss(*a))))(*stacked)
    assert g.shape == stacked[0].shape and np.all(np.isfinite(g))


# ----------------------------------------------------------------------------
# Numerics and dtypes
# ----------------------------------------------------------------------------


def test_loss_is_never_negative_for_confident_alignments():
    # Near-certain alignments: float32 rounding puts optax slightly below 0.
    labels = np.arange(1, 21, dtype=np.int32)[None] % 7 + 1
    logits = np.full((1, 20, 8), -30.0, np.float32)
    logits[0, np.arange(20), labels[0]] = 30.0
    args = (
        logits,
        np.zeros((1, 20), np.float32),
        labels,
        np.zeros((1, 20), np.float32),
    )
    loss = jaxctc.ctc_loss(*args)
    assert loss[0] >= 0.0 and loss[0] < 1e-5


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_inputs_compute_in_float32(dtype):
    logits, lpad, labels, lab_pad = random_batch(np.random.default_rng(0), 4, 20, 6, 5)
    low = jnp.asarray(logits, dtype)
    loss = jaxctc.ctc_loss(low, lpad, labels, lab_pad)
    assert loss.dtype == jnp.float32
    ref = jaxctc.ctc_loss(low.astype(jnp.float32), lpad, labels, lab_pad)
    np.testing.assert_allclose(loss, ref, rtol=1e-6)
    grad = jax.grad(lambda x: jnp.sum(jaxctc.ctc_loss(x, lpad, labels, lab_pad)))(low)
    assert grad.dtype == dtype and np.all(np.isfinite(np.asarray(grad, np.float32)))


def test_float32_stays_float32_with_x64_enabled():
    assert jax.config.read("jax_enable_x64")  # set by conftest.py
    batch = random_batch(np.random.default_rng(0), 2, 10, 5, 3)
    loss, blank, label = jaxctc.ctc_loss_with_forward_probs(*batch)
    assert loss.dtype == blank.dtype == label.dtype == jnp.float32
    grad = jax.grad(lambda x: jnp.sum(jaxctc.ctc_loss(x, *batch[1:])))(batch[0])
    assert grad.dtype == jnp.float32


def test_masked_classes_give_finite_loss_and_gradient():
    logits, lpad, labels, lab_pad = random_batch(np.random.default_rng(1), 4, 15, 6, 4)
    masked = np.array(logits)
    masked[:, :, 5] = -np.inf  # a class no label uses
    labels = np.where(labels == 5, 1, labels).astype(np.int32)
    loss = jaxctc.ctc_loss(masked, lpad, labels, lab_pad)
    grad = jax.grad(lambda x: jnp.sum(jaxctc.ctc_loss(x, lpad, labels, lab_pad)))(
        masked
    )
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    # Masking an unused class changes nothing but the normalisation.
    np.testing.assert_allclose(
        loss,
        optax_ref(optax.ctc_loss)(logits[:, :, :5], lpad, labels, lab_pad),
        rtol=1e-5,
    )
    # A label on a masked class: probability 0, a large finite loss, and
    # zero_infinity removes it.
    labels[0, 0] = 5
    lab_pad[0, 0] = 0.0
    loss = jaxctc.ctc_loss(masked, lpad, labels, lab_pad)
    grad = jax.grad(lambda x: jnp.sum(jaxctc.ctc_loss(x, lpad, labels, lab_pad)))(
        masked
    )
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad)) and loss[0] > 5e4
    z = jaxctc.ctc_loss(masked, lpad, labels, lab_pad, zero_infinity=True)
    assert z[0] == 0.0
    np.testing.assert_allclose(z[1:], loss[1:])


# K = 100 takes the large-vocabulary gradient (the softmax's exps taken
# before the forward scan).
@pytest.mark.parametrize("classes", [4, 100])
@pytest.mark.parametrize("grad_mode", ["posterior", "autodiff"])
def test_frame_of_only_minus_inf_logits_gives_finite_loss_and_gradient(
    grad_mode, classes
):
    # Issue 11, item 4: every class masked on a valid frame. Each of its
    # emissions is floored to log_epsilon, as a uniform frame (p = 1/K) times
    # K * exp(log_epsilon): the loss is that of a uniform frame, minus
    # log_epsilon and log K; finite, and so is the gradient.
    logits, lpad, labels, lab_pad = random_batch(
        np.random.default_rng(2), 3, 8, classes, 3, dtype=np.float64
    )
    lpad[0] = 0.0
    masked, uniform = logits.copy(), logits.copy()
    masked[0, 3] = -np.inf
    uniform[0, 3] = 0.0
    log_epsilon = -1e5
    loss = jaxctc.ctc_loss(masked, lpad, labels, lab_pad, grad_mode=grad_mode)
    want = jaxctc.ctc_loss(uniform, lpad, labels, lab_pad)
    want = want.at[0].add(-log_epsilon - np.log(classes))
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    grad = jax.grad(
        lambda x: jnp.sum(
            jaxctc.ctc_loss(x, lpad, labels, lab_pad, grad_mode=grad_mode)
        )
    )(masked)
    assert np.all(np.isfinite(grad))
    # The other sequences are untouched.
    np.testing.assert_allclose(
        grad[1:],
        jax.grad(lambda x: jnp.sum(jaxctc.ctc_loss(x, lpad, labels, lab_pad)))(uniform)[
            1:
        ],
        atol=1e-12,
    )


def test_loss_is_shift_invariant_at_large_logits():
    # Issue 11, item 6: log-softmax is (x - max) - log sum exp(x - max); the
    # rounded sum max + log sum would lose an ulp of 1e5 per frame (0.1-0.2
    # nats over 1000 frames, measured) and all of log K at 3e38.
    rng = np.random.default_rng(3)
    logits, lpad, labels, lab_pad = random_batch(rng, 2, 1000, 8, 100)
    shifted = (logits + np.float32(1e5)).astype(np.float32)
    loss32 = jaxctc.ctc_loss(shifted, lpad, labels, lab_pad)
    loss64 = jaxctc.ctc_loss(shifted.astype(np.float64), lpad, labels, lab_pad)
    assert float(jnp.min(loss64)) > 100
    np.testing.assert_allclose(loss32, loss64, atol=5e-3)
    # Uniform logits at the top of float32: the loss of uniform frames.
    args = (np.zeros((1, 3)), np.array([[1]]), np.zeros((1, 1)))
    lp = references.log_softmax(np.zeros((3, 5)))
    want = -references.log_prob(lp, [1], 0)
    for value in (3e38, -3e38):
        x = np.full((1, 3, 5), value, np.float32)
        np.testing.assert_allclose(jaxctc.ctc_loss(x, *args), [want], rtol=1e-6)
        post = jaxctc.posteriors(x, *args)
        np.testing.assert_allclose(post, jaxctc.posteriors(0 * x, *args), atol=1e-6)


def test_very_long_sequences():
    rng = np.random.default_rng(0)
    frames = 20000
    logits = rng.normal(size=(2, frames, 5)).astype(np.float32)
    labels = rng.integers(1, 5, size=(2, 50)).astype(np.int32)
    pads = np.zeros((2, 50), np.float32)
    lpad = np.zeros((2, frames), np.float32)
    loss, grad = jax.jit(
        jax.value_and_grad(lambda x: jnp.sum(jaxctc.ctc_loss(x, lpad, labels, pads)))
    )(logits)
    ref = optax_ref(optax.ctc_loss)(logits, lpad, labels, pads)
    np.testing.assert_allclose(loss, jnp.sum(ref), rtol=1e-4)
    assert np.all(np.isfinite(grad))


# ----------------------------------------------------------------------------
# Reductions, zero_infinity, feasibility
# ----------------------------------------------------------------------------


def test_reductions():
    batch = random_batch(np.random.default_rng(2), 5, 12, 5, 4)
    per_seq = np.asarray(jaxctc.ctc_loss(*batch))
    lengths = np.maximum((batch[3] == 0).sum(1), 1)
    for name, expected in [
        ("sum", per_seq.sum()),
        ("mean", per_seq.mean()),
        ("mean_by_label_length", (per_seq / lengths).mean()),
    ]:
        np.testing.assert_allclose(
            jaxctc.ctc_loss(*batch, reduction=name), expected, rtol=1e-6
        )


def test_mean_by_label_length_matches_torch():
    torch = pytest.importorskip("torch")
    logits, lpad, labels, lab_pad = random_batch(np.random.default_rng(3), 5, 16, 6, 5)
    lab_pad[:, 0] = 0.0  # torch needs U >= 1 for its mean
    lab_pad[lab_pad.sum(1) == 5, 0] = 0.0
    labels[lab_pad == 0] = np.maximum(labels[lab_pad == 0], 1)
    ours = jaxctc.ctc_loss(
        logits, lpad, labels, lab_pad, reduction="mean_by_label_length"
    )
    # torch takes lengths, so compact the frame padding first.
    frames = (lpad == 0).sum(1)
    compact = np.zeros_like(logits)
    for b in range(5):
        compact[b, : frames[b]] = logits[b, lpad[b] == 0]
    lp = torch.log_softmax(torch.from_numpy(compact), -1).transpose(0, 1)
    ref = torch.nn.functional.ctc_loss(
        lp,
        torch.from_numpy(labels.astype(np.int64)),
        torch.from_numpy(frames),
        torch.from_numpy((lab_pad == 0).sum(1)),
        reduction="mean",
    )
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-5)


def test_zero_infinity_and_feasible():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3, 4, 4)).astype(np.float32)
    lpad = np.zeros((3, 4), np.float32)
    labels = np.array([[1, 1, 2], [1, 2, 3], [1, 2, 2]], np.int32)  # need 4, 3, 4
    lab_pad = np.zeros((3, 3), np.float32)
    lpad[2, 3] = 1.0  # sequence 2 has 3 frames: too few
    assert jaxctc.feasible(lpad, labels, lab_pad).tolist() == [True, True, False]
    raw = jaxctc.ctc_loss(logits, lpad, labels, lab_pad)
    assert raw[2] > 5e4  # about -log_epsilon
    z = jaxctc.ctc_loss(logits, lpad, labels, lab_pad, zero_infinity=True)
    np.testing.assert_allclose(z, [raw[0], raw[1], 0.0])
    g = jax.grad(
        lambda x: jnp.sum(jaxctc.ctc_loss(x, lpad, labels, lab_pad, zero_infinity=True))
    )(logits)
    assert np.all(g[2] == 0.0) and np.any(g[0] != 0.0)


def test_zero_infinity_keeps_long_feasible_sequences():
    # Issue 11, item 11: a feasible sequence whose loss exceeds -log_epsilon / 2
    # (5e4 nats) was taken for an impossible one. Infeasibility is now read
    # off the lattice; the loss, its gradient and its rescoring stay (torch
    # keeps such losses too).
    rng = np.random.default_rng(5)
    logits = (20 * rng.normal(size=(2, 3000, 8))).astype(np.float32)
    lpad = np.zeros((2, 3000), np.float32)
    labels = rng.integers(1, 8, size=(2, 50)).astype(np.int32)
    lab_pad = np.zeros((2, 50), np.float32)
    labels[1, 0] = 7
    logits[1, :, 7] = -np.inf  # sequence 1 has no path: zeroed

    def value_and_grad(zero_infinity):
        return jax.jit(
            jax.value_and_grad(
                lambda x: jnp.sum(
                    jaxctc.ctc_loss(
                        x, lpad, labels, lab_pad, zero_infinity=zero_infinity
                    )
                    * jnp.array([1.0, 0.0], jnp.float32)
                )
            )
        )(logits)

    plain = jaxctc.ctc_loss(logits, lpad, labels, lab_pad)
    ref = optax_ref(optax.ctc_loss)(logits[:1], lpad[:1], labels[:1], lab_pad[:1])
    assert float(plain[0]) > 5e4  # the old rule zeroed it
    np.testing.assert_allclose(plain[0], ref[0], rtol=1e-4)
    zeroed = jaxctc.ctc_loss(logits, lpad, labels, lab_pad, zero_infinity=True)
    np.testing.assert_array_equal(zeroed, [plain[0], 0.0])
    (l0, g0), (l1, g1) = value_and_grad(False), value_and_grad(True)
    np.testing.assert_array_equal(l1, l0)
    np.testing.assert_array_equal(g1, g0)
    assert np.any(g1 != 0.0)
    rescored = jaxctc.sequence_log_probs(logits, lpad, labels, lab_pad)
    np.testing.assert_allclose(rescored[0], -plain[0], rtol=1e-6)
    assert rescored[1] == -np.inf


@pytest.mark.parametrize("reduction", ["mean", "mean_by_label_length"])
def test_mean_reductions_of_an_empty_batch_are_zero(reduction):
    # Issue 11, item 12: the mean over no sequence is 0, as the sum is.
    args = [np.zeros((0,) + a.shape[1:], a.dtype) for a in GOOD]

    def f(x):
        return jaxctc.ctc_loss(x, *args[1:], reduction=reduction)

    assert float(f(args[0])) == 0.0
    grad = jax.grad(f)(args[0])
    assert grad.shape == args[0].shape


# ----------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------

GOOD = (
    np.zeros((2, 5, 4), np.float32),
    np.zeros((2, 5), np.float32),
    np.ones((2, 3), np.int32),
    np.zeros((2, 3), np.float32),
)


def _with(index, value):
    args = list(GOOD)
    args[index] = value
    return args


@pytest.mark.parametrize(
    "args,kwargs,error,match",
    [
        (_with(0, np.zeros((2, 5))), {}, ValueError, "`logits` must have rank 3"),
        (
            _with(1, np.zeros((2, 6))),
            {},
            ValueError,
            "`logit_paddings` must have shape",
        ),
        (
            _with(2, np.ones((2, 3, 1), np.int32)),
            {},
            ValueError,
            "`labels` must have rank 2",
        ),
        (
            _with(3, np.zeros((2, 4))),
            {},
            ValueError,
            "`label_paddings` must have the shape",
        ),
        (
            [GOOD[0], GOOD[1], np.ones((3, 3), np.int32), np.zeros((3, 3))],
            {},
            ValueError,
            "`labels` must have batch size",
        ),
        (
            _with(2, np.ones((2, 3), np.float32)),
            {},
            TypeError,
            "`labels` must be an integer",
        ),
        (
            _with(0, np.zeros((2, 5, 4), np.int32)),
            {},
            TypeError,
            "`logits` must be a float",
        ),
        (GOOD, {"blank_id": 4}, ValueError, r"`blank_id` must be in \[0, K\)"),
        (GOOD, {"blank_id": -1}, ValueError, r"`blank_id` must be in \[0, K\)"),
        (GOOD, {"reduction": "avg"}, ValueError, "`reduction` must be one of"),
        (GOOD, {"grad_mode": "fast"}, ValueError, "`grad_mode` must be one of"),
        (
            GOOD,
            {"log_epsilon": np.zeros(2)},
            ValueError,
            "`log_epsilon` must be a scalar",
        ),
    ],
)
def test_static_errors_at_trace_time(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        jax.jit(functools.partial(jaxctc.ctc_loss, **kwargs)).lower(*args)


BAD_VALUES = [
    (
        _with(2, np.array([[1, 0, 1], [1, 1, 1]], np.int32)),
        "must not contain `blank_id`",
    ),
    (_with(2, np.array([[1, 4, 1], [1, 1, 1]], np.int32)), r"must lie in \[0, K\)"),
    (_with(2, np.array([[1, -1, 1], [1, 1, 1]], np.int32)), r"must lie in \[0, K\)"),
    (
        _with(1, np.full((2, 5), 0.5, np.float32)),
        "`logit_paddings` must contain only 0 and 1",
    ),
    (
        _with(3, np.full((2, 3), 0.5, np.float32)),
        "`label_paddings` must contain only 0 and 1",
    ),
    (_with(3, np.array([[1, 0, 0], [0, 0, 0]], np.float32)), "must be right-padded"),
    (_with(0, np.full((2, 5, 4), np.nan, np.float32)), "`logits` contain NaN"),
    # Issue 11, item 5: +inf logits (also f16 logits above 65504) are rejected.
    (_with(0, np.full((2, 5, 4), np.inf, np.float32)), r"`logits` contain \+inf"),
]


@pytest.mark.parametrize("args,match", BAD_VALUES)
def test_value_errors_when_concrete(args, match):
    with pytest.raises(ValueError, match=match):
        jaxctc.ctc_loss(*args)


@pytest.mark.parametrize("args,match", BAD_VALUES)
def test_value_errors_under_jit_with_checkify(args, match):
    checked = checkify.checkify(
        jax.jit(functools.partial(jaxctc.ctc_loss, checked=True))
    )
    err, _ = checked(*args)
    with pytest.raises(checkify.JaxRuntimeError, match=match):
        err.throw()
    err, _ = checked(*GOOD)
    err.throw()  # good input: no error


@pytest.mark.parametrize("grad_mode", ["posterior", "autodiff"])
@pytest.mark.parametrize("args,match", BAD_VALUES)
def test_value_errors_under_eager_grad(args, match, grad_mode):
    # Issue 11, item 3: the values under an eager jax.grad are concrete, so
    # the checks run there as on a plain call.
    def f(x):
        return jnp.sum(jaxctc.ctc_loss(x, *args[1:], grad_mode=grad_mode))

    with pytest.raises(ValueError, match=match):
        jax.grad(f)(args[0])
    with pytest.raises(ValueError, match=match):
        jax.grad(
            lambda x: jnp.sum(jaxctc.ctc_loss_with_forward_probs(x, *args[1:])[0])
        )(args[0])


@pytest.mark.parametrize("value", [-np.inf, np.nan, 0.0, 5.0, -1e30])
def test_log_epsilon_must_be_finite_and_negative(value):
    # Issue 11, item 7: -inf and NaN gave NaN, 0 and above a loss of 0 for any
    # input, and below -1e20 the floor reaches the lattice's own fill.
    with pytest.raises(ValueError, match="`log_epsilon` must be finite and negative"):
        jaxctc.ctc_loss(*GOOD, log_epsilon=value)
    with pytest.raises(ValueError, match="`log_epsilon` must be finite and negative"):
        jaxctc.forced_align(*GOOD, log_epsilon=value)
    checked = checkify.checkify(
        jax.jit(lambda e: jaxctc.ctc_loss(*GOOD, log_epsilon=e, checked=True))
    )
    err, _ = checked(jnp.float32(value))
    with pytest.raises(checkify.JaxRuntimeError, match="`log_epsilon` must be"):
        err.throw()


def test_log_epsilon_range_limits_are_accepted():
    # The loss of a sequence whose emissions are all above the floor does not
    # depend on it.
    logits, lpad, labels, lab_pad = random_batch(np.random.default_rng(1), 3, 6, 4, 3)
    want = jaxctc.ctc_loss(logits, lpad, labels, lab_pad)
    for value in (-1e20, -50.0):
        np.testing.assert_allclose(
            jaxctc.ctc_loss(logits, lpad, labels, lab_pad, log_epsilon=value),
            want,
            rtol=1e-6,
        )


@pytest.mark.parametrize("label", [2**32 + 1, 2**32, -(2**32) + 1])
def test_int64_labels_are_range_checked_before_narrowing(label):
    # Issue 11, item 8: with x64, label 2**32 + 1 was narrowed to 1 (and
    # 2**32 to the blank) before the range check.
    assert jax.config.read("jax_enable_x64")  # set by conftest.py
    args = _with(2, np.array([[1, label, 1], [1, 1, 1]], np.int64))
    with pytest.raises(ValueError, match=r"must lie in \[0, K\)"):
        jaxctc.ctc_loss(*args)
    checked = checkify.checkify(
        jax.jit(functools.partial(jaxctc.ctc_loss, checked=True))
    )
    err, _ = checked(*args)
    with pytest.raises(checkify.JaxRuntimeError, match=r"must lie in \[0, K\)"):
        err.throw()
    # In range, int64 labels give the int32 result.
    ok = _with(2, np.array([[1, 3, 1], [1, 2, 1]], np.int64))
    np.testing.assert_array_equal(
        jaxctc.ctc_loss(*ok), jaxctc.ctc_loss(*ok[:2], ok[2].astype(np.int32), ok[3])
    )


def test_padded_labels_may_hold_any_value():
    args = _with(2, np.array([[1, 2, -7], [1, 99, 0]], np.int32))
    args[3] = np.array([[0, 0, 1], [0, 1, 1]], np.float32)
    loss = jaxctc.ctc_loss(*args)
    clean = _with(2, np.array([[1, 2, 1], [1, 1, 1]], np.int32))
    clean[3] = args[3]
    np.testing.assert_allclose(loss, jaxctc.ctc_loss(*clean))


def test_empty_batch():
    args = [np.zeros((0,) + a.shape[1:], a.dtype) for a in GOOD]
    loss = jaxctc.ctc_loss(*args)
    assert loss.shape == (0,)
    assert jaxctc.ctc_loss(*args, reduction="sum") == 0.0


# ----------------------------------------------------------------------------
# Rescoring: sequence_log_probs
# ----------------------------------------------------------------------------


def test_sequence_log_probs_against_brute_force(rng):
    logits, paddings = references.random_batch(rng, 3, 5, 3)
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
    lp = references.log_softmax(logits)
    for b in range(3):
        table = references.alignments(lp[b, paddings[b] == 0], 0)
        for p in range(3):
            key = references.unpad(labels[b, p], label_paddings[b, p])
            want = table[key][0] if key in table else -np.inf
            np.testing.assert_allclose(got[b, p], want, rtol=1e-9)
