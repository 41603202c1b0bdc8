"""Property tests (hypothesis) over the public API, on small fixed shapes.

Each property draws its inputs at one shape (or a few), so that the jitted
computations compile once and every further example only runs them; the
profiles (a few hundred examples in CI) are in the root ``conftest.py``.
The bad-input properties check that every bad value either raises an error
that names it (eagerly, under ``jit`` with ``checked=True`` and under an
eager ``jax.grad``) or gives its documented result.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.experimental import checkify

import jaxctc
from tests import references

# ----------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------

# One float32 shape for most properties, so that they share compilations (one
# per blank_id); float64 where a property is compared to brute force.
_SHAPE = (3, 6, 4, 3)


def _min_frames(labels):
    return len(labels) + sum(
        int(a == b) for a, b in zip(labels[:-1], labels[1:], strict=True)
    )


@st.composite
def batches(draw, shape, dtype=np.float64, scale=10.0, masks=False, feasible=True):
    """``(logits, logit_paddings, labels, label_paddings, blank_id)`` at
    ``shape = (B, T, K, N)``: paddings anywhere in time, right-padded labels
    with any values in their padding, and (``masks``) ``-inf`` logits, whole
    frames of them included. ``feasible``: each sequence has enough frames.
    """
    batch, frames, classes, n = shape
    blank_id = draw(st.integers(0, classes - 1))
    width = 32 if dtype == np.float32 else 64
    values = st.floats(-scale, scale, width=width)
    logits = draw(hnp.arrays(dtype, (batch, frames, classes), elements=values))
    if masks:
        masked = draw(hnp.arrays(np.bool_, (batch, frames, classes)))
        whole = draw(hnp.arrays(np.bool_, (batch, frames)))
        logits = np.where(masked & whole[:, :, None], -np.inf, logits).astype(dtype)
    logit_paddings = draw(hnp.arrays(np.bool_, (batch, frames))).astype(dtype)
    others = [k for k in range(classes) if k != blank_id]
    labels = np.zeros((batch, n), np.int32)
    label_paddings = np.ones((batch, n), dtype)
    for b in range(batch):
        row = draw(st.lists(st.sampled_from(others), max_size=n))
        if feasible:
            while row and _min_frames(row) > int(np.sum(logit_paddings[b] == 0)):
                row = row[:-1]
        padding = n - len(row)
        junk = st.lists(
            st.integers(-5, 2 * classes), min_size=padding, max_size=padding
        )
        labels[b] = row + draw(junk)
        label_paddings[b, : len(row)] = 0.0
    return logits, logit_paddings, labels, label_paddings, blank_id


def _unpadded(labels, paddings):
    return [int(y) for y, p in zip(labels, paddings, strict=True) if p == 0]


def _valid_log_probs(logits, logit_paddings, b):
    return references.log_softmax(logits[b])[logit_paddings[b] == 0]


# ----------------------------------------------------------------------------
# Jitted callers, compiled once per shape and static option
# ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("blank_id", "grad_mode"))
def _loss_grad(logits, logit_paddings, labels, label_paddings, blank_id, grad_mode):
    def total(x):
        loss = jaxctc.ctc_loss(
            x,
            logit_paddings,
            labels,
            label_paddings,
            blank_id=blank_id,
            grad_mode=grad_mode,
        )
        return jnp.sum(loss * jnp.arange(1, loss.shape[0] + 1, dtype=loss.dtype))

    return jax.grad(total)(logits)


_CHECKED = {
    "ctc_loss": jaxctc.ctc_loss,
    "forced_align": jaxctc.forced_align,
    "posteriors": jaxctc.posteriors,
}


@functools.cache
def _checked(name, blank_id):
    """``name`` under ``jit`` with ``checked=True``, checkified."""
    fn = functools.partial(_CHECKED[name], blank_id=blank_id, checked=True)
    return jax.jit(checkify.checkify(fn))


# ----------------------------------------------------------------------------
# The loss
# ----------------------------------------------------------------------------


@given(batches(_SHAPE, np.float32))
def test_loss_is_nonnegative_and_finite_on_feasible_inputs(batch):
    *args, blank_id = batch
    loss = jaxctc.ctc_loss(*args, blank_id=blank_id)
    assert np.all(np.isfinite(loss)) and np.all(loss >= 0.0)
    # Feasible with finite logits: far from the log_epsilon floor (1e5).
    assert np.all(loss < 1e3)


@given(batches((2, 5, 3, 3)))
def test_loss_equals_brute_force(batch):
    *args, blank_id = batch
    logits, logit_paddings, labels, label_paddings = args
    loss = jaxctc.ctc_loss(*args, blank_id=blank_id)
    for b in range(2):
        want = -references.log_prob(
            _valid_log_probs(logits, logit_paddings, b),
            _unpadded(labels[b], label_paddings[b]),
            blank_id,
        )
        np.testing.assert_allclose(loss[b], want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("grad_mode", ["posterior", "autodiff"])
@given(batch=batches(_SHAPE, np.float32, masks=True, feasible=False))
def test_gradients_are_finite(grad_mode, batch):
    # Masked classes, masked frames and infeasible sequences included: the
    # loss floors their emissions and stays differentiable.
    *args, blank_id = batch
    grad = _loss_grad(*args, blank_id=blank_id, grad_mode=grad_mode)
    assert np.all(np.isfinite(grad))
    assert np.all(np.asarray(grad)[args[1] == 1] == 0.0)  # padded frames


# ----------------------------------------------------------------------------
# Decoders and alignment
# ----------------------------------------------------------------------------


@given(batches(_SHAPE, np.float32, masks=True))
def test_decoder_scores_are_log_probabilities(batch):
    logits, logit_paddings, _, _, blank_id = batch
    for hyp in [
        jaxctc.greedy_decode(logits, logit_paddings, blank_id=blank_id),
        jaxctc.prefix_beam_search(
            logits, logit_paddings, beam_width=2, top_paths=2, blank_id=blank_id
        ),
        jaxctc.prefix_search(logits, logit_paddings, blank_id=blank_id),
    ]:
        scores = np.asarray(hyp.log_probs)
        assert not np.any(np.isnan(scores)) and np.all(scores <= 0.0)


@given(batches(_SHAPE, np.float32, masks=True))
def test_beam_scores_are_at_most_the_exact_rescoring(batch):
    # The beam sums only the alignments it kept: a lower bound (up to float32
    # rounding).
    logits, logit_paddings, _, _, blank_id = batch
    hyp = jaxctc.prefix_beam_search(
        logits, logit_paddings, beam_width=2, top_paths=2, blank_id=blank_id
    )
    exact = jaxctc.sequence_log_probs(
        logits, logit_paddings, hyp.labels, hyp.label_paddings, blank_id=blank_id
    )
    assert np.all(np.asarray(hyp.log_probs) <= np.asarray(exact) + 1e-4)


@given(batches(_SHAPE, np.float32, masks=True, feasible=False))
def test_forced_align_score_is_at_most_minus_the_loss(batch):
    # One alignment's probability is at most that of all of them (up to
    # float32 rounding).
    *args, blank_id = batch
    out = jaxctc.forced_align(*args, blank_id=blank_id)
    exact = np.asarray(jaxctc.sequence_log_probs(*args, blank_id=blank_id))
    loss = np.asarray(jaxctc.ctc_loss(*args, blank_id=blank_id))
    score = np.asarray(out.log_probs)
    assert not np.any(np.isnan(score))
    assert np.all(score <= exact + 1e-4) and np.all(score <= -loss + 1e-4)
    # No alignment of nonzero probability: -inf in both.
    np.testing.assert_array_equal(score == -np.inf, exact == -np.inf)


@given(batches(_SHAPE, np.float32, masks=True, feasible=False))
def test_posteriors_sum_to_one_on_valid_frames(batch):
    # Also where no alignment exists (the floored model's posteriors).
    *args, blank_id = batch
    post = np.asarray(jaxctc.posteriors(*args, blank_id=blank_id))
    assert np.all(post >= 0.0)
    np.testing.assert_allclose(post.sum(-1), 1.0 - args[1], atol=1e-5)


# ----------------------------------------------------------------------------
# Edit distance
# ----------------------------------------------------------------------------


def _label_sets(count, n, classes=4):
    labels = hnp.arrays(np.int32, (2, n), elements=st.integers(0, classes - 1))
    paddings = hnp.arrays(np.bool_, (2, n)).map(lambda a: a.astype(np.float32))
    return st.tuples(*[st.tuples(labels, paddings)] * count)


@pytest.mark.parametrize("separator_id", [None, 0])
@given(sets=_label_sets(3, 5))
def test_edit_distance_is_a_metric(separator_id, sets):
    (a, pa), (b, pb), (c, pc) = sets

    def d(x, px, y, py):
        return np.asarray(jaxctc.edit_distance(x, px, y, py, separator_id=separator_id))

    assert np.all(d(a, pa, a, pa) == 0)
    np.testing.assert_array_equal(d(a, pa, b, pb), d(b, pb, a, pa))
    assert np.all(d(a, pa, c, pc) <= d(a, pa, b, pb) + d(b, pb, c, pc))


# ----------------------------------------------------------------------------
# Bad inputs: a clear error everywhere, or the documented result
# ----------------------------------------------------------------------------

_PADDING_VALUES = st.sampled_from([0.5, 2.0, -1.0, np.nan])

# kind: (message of the loss, aligner and rescoring; of the decoders or None
# where they do not take the input).
_KINDS = {
    "nan": ("`logits` contain NaN", "`logits` contain NaN"),
    "+inf": (r"`logits` contain \+inf", r"`logits` contain NaN or \+inf"),
    "logit_paddings": ("`logit_paddings` must contain only 0 and 1",) * 2,
    "label_paddings": ("`label_paddings` must contain only 0 and 1", None),
    "left_padded": ("`label_paddings` must be right-padded", None),
    "blank": ("must not contain `blank_id`", None),
    "high": (r"must lie in \[0, K\)", None),
    "negative": (r"must lie in \[0, K\)", None),
}


def _inject(kind, batch, data):
    """``batch`` with one bad value of ``kind`` at a drawn position."""
    logits, logit_paddings, labels, label_paddings, blank_id = batch
    logits, logit_paddings = logits.copy(), logit_paddings.copy()
    labels, label_paddings = labels.copy(), label_paddings.copy()
    batch_size, frames, classes, n = _SHAPE
    b = data.draw(st.integers(0, batch_size - 1))
    t = data.draw(st.integers(0, frames - 1))
    u = data.draw(st.integers(0, n - 1))
    others = [c for c in range(classes) if c != blank_id]
    if kind in ("nan", "+inf"):
        k = data.draw(st.integers(0, classes - 1))
        logits[b, t, k] = np.nan if kind == "nan" else np.inf
    elif kind == "logit_paddings":
        logit_paddings[b, t] = data.draw(_PADDING_VALUES)
    elif kind == "label_paddings":
        label_paddings[b, u] = data.draw(_PADDING_VALUES)
    elif kind == "left_padded":  # a padded label before a valid one
        labels[b] = others[:n]
        label_paddings[b] = 0.0
        label_paddings[b, min(u, n - 2)] = 1.0
    else:  # a bad class at label u, outside the padding
        labels[b, : u + 1] = others[: u + 1]
        labels[b, u] = {"blank": blank_id, "high": classes, "negative": -1}[kind]
        label_paddings[b, : u + 1] = 0.0
    return logits, logit_paddings, labels, label_paddings, blank_id


@given(
    kind=st.sampled_from(sorted(_KINDS)),
    batch=batches(_SHAPE, np.float32, masks=True, feasible=False),
    data=st.data(),
)
def test_bad_values_raise_eagerly_under_grad_and_under_checkify(kind, batch, data):
    *args, blank_id = _inject(kind, batch, data)
    message, decoder_message = _KINDS[kind]
    for name, fn in _CHECKED.items():
        with pytest.raises(ValueError, match=message):
            fn(*args, blank_id=blank_id)
        err, _ = _checked(name, blank_id)(*args)
        with pytest.raises(checkify.JaxRuntimeError, match=message):
            err.throw()

    def total(x):
        return jnp.sum(jaxctc.ctc_loss(x, *args[1:], blank_id=blank_id))

    with pytest.raises(ValueError, match=message):
        jax.grad(total)(args[0])
    with pytest.raises(ValueError, match=message):
        jaxctc.sequence_log_probs(*args, blank_id=blank_id)
    if decoder_message is not None:
        for decode in (
            jaxctc.greedy_decode,
            jaxctc.prefix_beam_search,
            jaxctc.prefix_search,
        ):
            match = message if decode is jaxctc.prefix_search else decoder_message
            with pytest.raises(ValueError, match=match):
                decode(args[0], args[1], blank_id=blank_id)


@given(batch=batches(_SHAPE, np.float32), data=st.data())
def test_padded_labels_and_minus_inf_logits_give_documented_results(batch, data):
    # Any value in the label padding changes nothing; -inf logits (a masked
    # class, a masked frame) give finite losses and gradients, posteriors
    # summing to one and alignments of log-probability <= 0 or -inf.
    logits, logit_paddings, labels, label_paddings, blank_id = batch
    values = hnp.arrays(np.int32, labels.shape, elements=st.integers(-99, 99))
    junk = np.where(label_paddings == 1, data.draw(values), labels)
    np.testing.assert_array_equal(
        jaxctc.ctc_loss(
            logits, logit_paddings, junk, label_paddings, blank_id=blank_id
        ),
        jaxctc.ctc_loss(*batch[:4], blank_id=blank_id),
    )
    mask = data.draw(hnp.arrays(np.bool_, logits.shape))
    masked = np.where(mask, -np.inf, logits).astype(np.float32)
    args = (masked, logit_paddings, labels, label_paddings)
    loss = np.asarray(jaxctc.ctc_loss(*args, blank_id=blank_id))
    assert np.all(np.isfinite(loss)) and np.all(loss >= 0.0)

    def total(x):
        return jnp.sum(jaxctc.ctc_loss(x, *args[1:], blank_id=blank_id))

    assert np.all(np.isfinite(jax.grad(total)(masked)))
    post = np.asarray(jaxctc.posteriors(*args, blank_id=blank_id))
    np.testing.assert_allclose(post.sum(-1), 1.0 - logit_paddings, atol=1e-5)
    score = np.asarray(jaxctc.forced_align(*args, blank_id=blank_id).log_probs)
    assert not np.any(np.isnan(score)) and np.all(score <= 0.0)


@given(
    st.one_of(
        st.floats(min_value=0.0, width=32),
        st.floats(max_value=float(np.float32(-1.01e20)), width=32),
        st.sampled_from([np.nan, -np.inf]),
    )
)
def test_bad_log_epsilon_raises(log_epsilon):
    args = (
        np.zeros((1, 3, 3), np.float32),
        np.zeros((1, 3), np.float32),
        np.ones((1, 1), np.int32),
        np.zeros((1, 1), np.float32),
    )
    with pytest.raises(ValueError, match="`log_epsilon` must be finite and negative"):
        jaxctc.ctc_loss(*args, log_epsilon=log_epsilon)
    err, _ = _checked("ctc_loss", 0)(*args, log_epsilon=jnp.float32(log_epsilon))
    with pytest.raises(checkify.JaxRuntimeError, match="`log_epsilon` must be"):
        err.throw()
