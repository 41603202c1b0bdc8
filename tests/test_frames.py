"""The decoders' per-frame pass: the best classes in two levels, exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxctc import _frames
from tests import references


@pytest.mark.parametrize(
    ("classes", "blank"),
    [(2, 0), (7, 3), (300, 0), (1000, 999), (1009, 5), (18000, 77)],
)
@pytest.mark.parametrize("num_best", [1, 4, 17])
def test_best_classes_are_the_top_of_each_frame(classes, blank, num_best):
    """Against a sort, with ties (in any order), -inf rows, and a bound above
    every class that is not returned."""
    rng = np.random.default_rng(classes + num_best)
    x = rng.standard_normal((3, 5, classes)).astype(np.float32)
    x[0, 0] = np.round(x[0, 0])  # many ties
    x[0, 1] = -np.inf
    x[1, 2, : classes // 2] = -np.inf
    best = jax.jit(lambda x: _frames.best_classes(x, blank, num_best))(x)
    shift = np.max(np.where(np.isfinite(x), x, -np.inf), -1)
    shift = np.where(np.isfinite(shift), shift, 0.0)
    tokens = np.where(np.arange(classes) == blank, -np.inf, x)
    order = np.argsort(-tokens, axis=-1, kind="stable")
    k = min(num_best, classes - 1)
    for b in range(3):
        for t in range(5):
            want = tokens[b, t, order[b, t, :k]] - shift[b, t]
            got = np.asarray(best.scores[b, t, :k])
            np.testing.assert_array_equal(got, want)
            finite = np.isfinite(want)
            classes_ = np.asarray(best.classes[b, t, :k])[finite]
            assert len(set(classes_.tolist())) == len(classes_)
            assert blank not in classes_.tolist()
            np.testing.assert_array_equal(x[b, t, classes_] - shift[b, t], want[finite])
            rest = tokens[b, t, order[b, t, k:]] - shift[b, t]
            assert np.all(rest <= best.bound[b, t]), (b, t)
    np.testing.assert_array_equal(best.blank, x[..., blank] - shift)
    assert not np.any(best.nan)


@pytest.mark.parametrize("classes", [3, 100, 1000, 1009, 18000])
def test_argmax_is_numpy_argmax(classes):
    rng = np.random.default_rng(classes)
    x = rng.standard_normal((2, 6, classes)).astype(np.float32)
    x[0, 0] = 1.0  # all tied: class 0
    x[0, 1, [5 % classes, classes - 1]] = 9.0  # tie: the lower one
    best, top = jax.jit(_frames.argmax)(jnp.asarray(x, jnp.bfloat16))
    xb = np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_array_equal(best, np.argmax(xb, -1))
    np.testing.assert_array_equal(top, np.max(xb, -1))
    assert top.dtype == jnp.float32


@pytest.mark.parametrize("offset", [0.0, -59.0, 55.0, 70.0, -1e4, 1e30])
def test_log_sum_is_the_log_normalizer(offset):
    """Both sums: unshifted while every frame's best logit is in [-60, 60]
    (offsets 0, -59, 55), shifted beyond (one frame at 70 moves them all)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 500)).astype(np.float32) * 4
    x[0, 1:] += np.float32(offset)
    x[1, 1] = -np.inf
    x[1, 2, :400] = -np.inf
    best = _frames.best_classes(x, 0, 4)
    norm = np.asarray(jax.jit(_frames.log_sum)(x, best.shift))
    with np.errstate(invalid="ignore", divide="ignore"):  # the frame of -inf
        want = -references.log_softmax(x)[..., 0] + x[..., 0].astype(np.float64)
        shift = np.asarray(best.shift, np.float64)[..., None]
        shifted = np.log(np.sum(np.exp(x.astype(np.float64) - shift), -1))
    got = np.asarray(best.shift, np.float64) + norm
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-6)
    assert norm[1, 1] == 0.0  # a frame of -inf: 0, its scores stay -inf
    # In [0, log K], and as exact as the shifted sum's float32 rounding.
    assert np.all((norm >= 0) & (norm <= np.log(500) + 1e-6))
    np.testing.assert_allclose(norm[finite], shifted[finite], atol=2e-6)


def test_nan_is_flagged():
    x = np.zeros((1, 3, 300), np.float32)
    x[0, 1, 200] = np.nan
    x[0, 2, 0] = np.nan
    np.testing.assert_array_equal(_frames.best_classes(x, 0, 4).nan, [[0, 1, 1]])


@pytest.mark.parametrize(
    ("n", "k"),
    [(5, 5), (64, 5), (128, 8), (129, 3), (300, 17), (9, 9), (29, 18), (64, 64)],
)
def test_top_k_is_a_stable_sort(n, k):
    """The three paths of `top_k` (rounds for a few of a short row, ranks for
    more of a row of at most 64, XLA's TopK otherwise) against a stable sort:
    values exact and sorted, indices distinct and pointing at them, with ties,
    -inf entries, the lowest finite float and rows that are all -inf; rows
    given as a batch of rows (the ranks move the row axis)."""
    rng = np.random.default_rng(n * 100 + k)
    x = np.round(rng.standard_normal((6, n)) * 2).astype(np.float32)  # many ties
    x[1, : n // 2] = -np.inf
    x[2] = -np.inf
    x[3, ::2] = np.finfo(np.float32).min
    x[3, 1::4] = -np.inf
    values, indices = jax.jit(lambda x: _frames.top_k(x, k))(x.reshape(2, 3, n))
    values, indices = np.asarray(values), np.asarray(indices)
    assert values.shape == indices.shape == (2, 3, k)
    values, indices = values.reshape(6, k), indices.reshape(6, k)
    order = np.argsort(-x, axis=-1, kind="stable")[:, :k]
    np.testing.assert_array_equal(values, np.take_along_axis(x, order, -1))
    np.testing.assert_array_equal(np.take_along_axis(x, indices, -1), values)
    for row in indices:
        assert len(set(row.tolist())) == k
    rounds = k <= _frames._ROUNDS_MAX_K and n <= _frames._ROUNDS_MAX_N
    if rounds or n <= _frames._RANKS_MAX_N:
        np.testing.assert_array_equal(indices, order)  # ties lower index first
