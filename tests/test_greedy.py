"""Greedy decoding against brute force over all alignments and NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxctc
from tests import references


@pytest.mark.parametrize("merge_repeated", [True, False])
def test_greedy_is_the_collapsed_best_path(rng, merge_repeated):
    logits, paddings = references.random_batch(rng, 5, 7, 4)
    blank = 2
    hyp = jax.jit(
        lambda x, p: jaxctc.greedy_decode(
            x, p, blank_id=blank, merge_repeated=merge_repeated
        )
    )(logits, paddings)
    assert hyp.labels.shape == (5, 7) and hyp.labels.dtype == jnp.int32
    assert hyp.label_paddings.dtype == jnp.float32
    lp = references.log_softmax(logits)
    for b in range(5):
        valid = paddings[b] == 0
        frames = np.flatnonzero(valid)
        best = np.argmax(lp[b, valid], axis=-1)
        want = references.collapse(best, blank, merge_repeated)
        assert references.unpad(hyp.labels[b], hyp.label_paddings[b]) == want
        np.testing.assert_allclose(
            hyp.log_probs[b], np.sum(np.max(lp[b, valid], -1)), rtol=1e-12
        )
        if merge_repeated:
            starts, ends = references.alignment_spans(best, blank)
        else:
            starts = ends = [t for t, c in enumerate(best) if c != blank]
        n = len(want)
        np.testing.assert_array_equal(hyp.starts[b, :n], frames[starts])
        np.testing.assert_array_equal(hyp.ends[b, :n], frames[ends])
        assert np.all(hyp.starts[b, n:] == -1) and np.all(hyp.ends[b, n:] == -1)
    assert hyp.log_probs[-1] == 0.0 and np.all(hyp.label_paddings[-1] == 1)


def test_greedy_is_the_best_alignment_of_brute_force(rng):
    logits, _ = references.random_batch(rng, 1, 5, 3, pad=False)
    hyp = jaxctc.greedy_decode(logits, np.zeros((1, 5)))
    table = references.alignments(references.log_softmax(logits[0]), 0)
    best = max(table, key=lambda k: table[k][2])
    assert references.unpad(hyp.labels[0], hyp.label_paddings[0]) == best
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
