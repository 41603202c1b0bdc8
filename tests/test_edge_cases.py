"""Edge cases across the public API: empty batches, no frames, NaN logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxctc


def _inputs(batch, frames, labels=((1, 2), (0, 0)), label_pads=((0, 0), (1, 1))):
    x = np.zeros((batch, frames, 4), np.float32)
    p = np.zeros((batch, frames), np.float32)
    y = np.asarray(labels, np.int32)[:batch]
    q = np.asarray(label_pads, np.float32)[:batch]
    return x, p, y, q


def _label_fns():
    return {
        "ctc_loss": jaxctc.ctc_loss,
        "forced_align": jaxctc.forced_align,
        "posteriors": jaxctc.posteriors,
        "sequence_log_probs": jaxctc.sequence_log_probs,
    }


@pytest.mark.parametrize("name", sorted(_label_fns()))
def test_empty_batch(name):
    out = _label_fns()[name](*_inputs(0, 5))
    assert all(leaf.shape[0] == 0 for leaf in jax.tree.leaves(out))


@pytest.mark.parametrize("decode", ["greedy_decode", "prefix_beam_search"])
@pytest.mark.parametrize("batch,frames", [(0, 5), (2, 0)])
def test_decoders_on_empty_inputs(decode, batch, frames):
    x, p, _, _ = _inputs(batch, frames)
    hyp = getattr(jaxctc, decode)(x, p)
    assert hyp.log_probs.shape[0] == batch
    # No frame: the empty hypothesis, with probability 1.
    if batch:
        top = hyp.log_probs if hyp.log_probs.ndim == 1 else hyp.log_probs[:, 0]
        np.testing.assert_array_equal(top, 0.0)


def test_no_frames_means_no_alignment_unless_no_labels():
    x, p, y, q = _inputs(2, 0)  # sequence 0 has 2 labels, sequence 1 none
    loss = jaxctc.ctc_loss(x, p, y, q)
    assert loss[0] > 5e4 and loss[1] == 0.0  # about -log_epsilon, and exact 0
    grad = jax.grad(lambda a: jnp.sum(jaxctc.ctc_loss(a, p, y, q)))(x)
    assert grad.shape == x.shape
    _, blank, label = jaxctc.ctc_loss_with_forward_probs(x, p, y, q)
    assert blank.shape == (0, 2, 3) and label.shape == (0, 2, 2)
    np.testing.assert_array_equal(jaxctc.sequence_log_probs(x, p, y, q), [-np.inf, 0.0])
    alignment = jaxctc.forced_align(x, p, y, q)
    np.testing.assert_array_equal(alignment.log_probs, [-np.inf, 0.0])
    assert jaxctc.posteriors(x, p, y, q).shape == (2, 0, 4)


_CALLS = [
    lambda x, p, y, q: jaxctc.greedy_decode(x, p),
    lambda x, p, y, q: jaxctc.prefix_beam_search(x, p, beam_width=4),
    lambda x, p, y, q: jaxctc.prefix_search(x, p),
    jaxctc.ctc_loss,
    jaxctc.ctc_loss_with_forward_probs,
    jaxctc.forced_align,
    jaxctc.posteriors,
    jaxctc.sequence_log_probs,
]


@pytest.mark.parametrize("call", _CALLS)
def test_nan_logits_raise_when_concrete(call):
    x, p, y, q = _inputs(2, 5)
    x[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="`logits` contain NaN"):
        call(x, p, y, q)


@pytest.mark.parametrize("call", _CALLS)
@pytest.mark.parametrize("where", ["blank", "label", "other"])
def test_plus_inf_logits_raise_when_concrete(call, where):
    # Issue 11, item 5: +inf logits gave NaN (the beam search reported 0.0).
    x, p, y, q = _inputs(2, 5)
    x[1, 2, {"blank": 0, "label": 1, "other": 3}[where]] = np.inf
    with pytest.raises(ValueError, match=r"`logits` contain (NaN or )?\+inf"):
        call(x, p, y, q)


@pytest.mark.parametrize("call", _CALLS)
def test_float16_overflow_raises_when_concrete(call):
    # Issue 11, item 5: f16 logits above 65504 are +inf.
    x, p, y, q = _inputs(2, 5)
    x[0, 1, 2] = 1e5
    with np.errstate(over="ignore"):
        x16 = x.astype(np.float16)
    with pytest.raises(ValueError, match=r"`logits` contain (NaN or )?\+inf"):
        call(x16, p, y, q)


def test_empty_label_arrays_across_the_api():
    # Issue 11, item 1: labels [B, 0], including the decoders' own output on
    # no frames or with max_label_length=0, fed back into every function that
    # takes labels. With no labels the only labelling is the empty one.
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32)
    p = np.zeros((2, 4), np.float32)
    all_blank = np.sum(jax.nn.log_softmax(x)[:, :, 0], axis=1)
    beams = jaxctc.prefix_beam_search(x, p, beam_width=2, max_label_length=0)
    greedy = jaxctc.greedy_decode(x[:, :0], p[:, :0])
    for y, q in [
        (np.zeros((2, 0), np.int32), np.zeros((2, 0), np.float32)),
        (beams.labels[:, 0], beams.label_paddings[:, 0]),
        (greedy.labels, greedy.label_paddings),
    ]:
        assert y.shape == (2, 0)
        np.testing.assert_allclose(jaxctc.ctc_loss(x, p, y, q), -all_blank, rtol=1e-6)
        grad = jax.grad(lambda v, y=y, q=q: jnp.sum(jaxctc.ctc_loss(v, p, y, q)))(x)
        assert np.all(np.isfinite(grad))
        loss, blank, label = jaxctc.ctc_loss_with_forward_probs(x, p, y, q)
        assert blank.shape == (4, 2, 1) and label.shape == (4, 2, 0)
        np.testing.assert_allclose(
            jaxctc.forced_align(x, p, y, q).log_probs, all_blank, rtol=1e-6
        )
        np.testing.assert_allclose(
            jaxctc.posteriors(x, p, y, q).sum(-1), np.ones((2, 4)), rtol=1e-6
        )
        np.testing.assert_allclose(
            jaxctc.sequence_log_probs(x, p, y, q), all_blank, rtol=1e-6
        )
    np.testing.assert_allclose(
        jaxctc.sequence_log_probs(x, p, beams.labels, beams.label_paddings)[:, 0],
        beams.log_probs[:, 0],
        rtol=1e-6,
    )


def test_feasible_checks_ranks_and_paddings():
    # Issue 11, item 13.
    y, q = np.ones((2, 3), np.int32), np.zeros((2, 3))
    with pytest.raises(ValueError, match="`logit_paddings` must have rank 2"):
        jaxctc.feasible(np.zeros((2, 5, 1)), y, q)
    with pytest.raises(ValueError, match="`labels` must have rank 2"):
        jaxctc.feasible(np.zeros((2, 5)), y[0], q[0])
    with pytest.raises(ValueError, match="batch size B = 1 .from `logit_paddings`"):
        jaxctc.feasible(np.zeros((1, 5)), y, q)
    with pytest.raises(ValueError, match="`logit_paddings` must contain only 0 and 1"):
        jaxctc.feasible(np.full((2, 5), 0.5), y, q)
    with pytest.raises(ValueError, match="`label_paddings` must contain only 0 and 1"):
        jaxctc.feasible(np.zeros((2, 5)), y, np.full((2, 3), 2.0))


@pytest.mark.parametrize("flag", [jnp.array(True), 1, "yes"])
def test_greedy_merge_repeated_must_be_a_bool(flag):
    # Issue 11, item 13: an array failed deep inside jit, naming nothing.
    x, p, _, _ = _inputs(1, 3)
    with pytest.raises(TypeError, match="`merge_repeated` must be a Python bool"):
        jaxctc.greedy_decode(x, p, merge_repeated=flag)
    with pytest.raises(TypeError, match="`zero_infinity` must be a Python bool"):
        jaxctc.ctc_loss(*_inputs(1, 3), zero_infinity=flag)
