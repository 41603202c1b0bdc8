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


@pytest.mark.parametrize(
    "call",
    [
        lambda x, p, y, q: jaxctc.greedy_decode(x, p),
        lambda x, p, y, q: jaxctc.prefix_beam_search(x, p, beam_width=4),
        jaxctc.ctc_loss,
        jaxctc.forced_align,
        jaxctc.posteriors,
        jaxctc.sequence_log_probs,
    ],
)
def test_nan_logits_raise_when_concrete(call):
    x, p, y, q = _inputs(2, 5)
    x[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="`logits` contain NaN"):
        call(x, p, y, q)
