"""Graves' prefix search against brute force over all alignments."""

import jax
import numpy as np
import pytest

import jaxctc
from tests import references


def test_prefix_search_is_the_brute_force_best(rng):
    logits, paddings = references.random_batch(rng, 6, 6, 3, scale=1.0)
    logits[0, :, 2] = -np.inf
    hyp = jaxctc.prefix_search(logits, paddings, blank_id=1)
    assert hyp.labels.shape == (6, 6) and hyp.starts is None
    lp = references.log_softmax(logits)
    for b in range(6):
        table = references.alignments(lp[b, paddings[b] == 0], 1)
        best = max(table, key=lambda k: table[k][0])
        assert references.unpad(hyp.labels[b], hyp.label_paddings[b]) == best
        np.testing.assert_allclose(hyp.log_probs[b], table[best][0], rtol=1e-9)
    assert hyp.log_probs[-1] == 0.0


def test_prefix_search_split_sections(rng):
    """Splitting after a near-certain blank: each section's best labelling,
    concatenated, scored exactly over the whole sequence (brute force)."""
    logits = rng.standard_normal((1, 7, 3))
    logits[0, 3] = [12.0, 0.0, 0.0]
    split = jaxctc.prefix_search(logits, np.zeros((1, 7)), split_threshold=0.99)
    lp = references.log_softmax(logits[0])
    want = ()
    for section in (lp[:4], lp[4:]):
        table = references.alignments(section, 0)
        want += max(table, key=lambda k: table[k][0])
    assert references.unpad(split.labels[0], split.label_paddings[0]) == want
    table = references.alignments(lp, 0)
    np.testing.assert_allclose(split.log_probs[0], table[want][0], rtol=1e-9)
    with pytest.raises(TypeError, match="host"):
        jax.jit(jaxctc.prefix_search)(logits, np.zeros((1, 7)))


@pytest.mark.parametrize(
    "where,value,match",
    [
        ("logits", np.nan, "`logits` contain NaN"),
        ("logits", np.inf, r"`logits` contain \+inf"),
        ("paddings", 0.5, "`logit_paddings` must contain only 0 and 1"),
        ("paddings", np.nan, "`logit_paddings` must contain only 0 and 1"),
    ],
)
def test_prefix_search_checks_its_inputs(where, value, match):
    # Issue 11, item 13: NaN logits gave a finite score, paddings of 0.5 were
    # taken as padded.
    logits, paddings = np.zeros((2, 3, 3)), np.zeros((2, 3))
    (logits if where == "logits" else paddings)[1, 1] = value
    with pytest.raises(ValueError, match=match):
        jaxctc.prefix_search(logits, paddings)
