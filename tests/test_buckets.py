"""The static hash map against a dict: packed (one int32 per key) and paired
keys, present and absent keys, keys outside the table's ranges."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxctc import _buckets


@st.composite
def tables(draw):
    # Large keys make a * stride + b overflow int32: the paired layout.
    big = draw(st.booleans())
    high = 2**31 - 1 if big else draw(st.integers(1, 3000))
    count = draw(st.integers(0, 300))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    pairs = np.unique(rng.integers(0, high, (count, 2)), axis=0).astype(np.int32)
    return pairs, big, rng


# Each example compiles a lookup for its table's shape: fewer than the profile's.
@settings(max_examples=40)
@given(tables())
def test_lookups_equal_a_dict(case):
    pairs, big, rng = case
    values = np.arange(len(pairs), dtype=np.int32) * 7 + 1
    scores = rng.normal(size=len(pairs)).astype(np.float32)
    table = _buckets.build(pairs[:, 0], pairs[:, 1], (values, scores), (-1, -np.inf))
    if not big:  # the small keys fit one int32 once packed
        assert table.stride == int(pairs[:, 1].max(initial=0)) + 1
        assert table.keys.ndim == 1
    elif len(pairs) > 10:
        assert table.stride == 0 and table.keys.shape[1:] == (2,)
    want = {tuple(p): (v, s) for p, v, s in zip(pairs, values, scores, strict=True)}
    # The stored keys, their neighbours (absent or present), and keys outside
    # the ranges (negative, beyond the largest), which a packed key could
    # alias onto a stored one.
    queries = [pairs, pairs + [0, 1], pairs - [1, 0], rng.integers(-3, 5, (20, 2))]
    if len(pairs):
        top = pairs.max(axis=0)
        queries.append(np.stack([pairs[:, 0] - 1, pairs[:, 1] + top[1] + 1], 1))
        queries.append(np.stack([pairs[:, 0] + top[0] + 1, pairs[:, 1]], 1))
    q = np.concatenate(queries).astype(np.int64)
    q = np.clip(q, -(2**31), 2**31 - 1).astype(np.int32)
    found, got_v, got_s = jax.jit(_buckets.lookup)(
        table, jnp.asarray(q[:, 0]), jnp.asarray(q[:, 1])
    )
    expect = [want.get((a, b)) for a, b in q.tolist()]
    np.testing.assert_array_equal(np.asarray(found), [e is not None for e in expect])
    np.testing.assert_array_equal(
        np.asarray(got_v), [-1 if e is None else e[0] for e in expect]
    )
    np.testing.assert_array_equal(
        np.asarray(got_s), [-np.inf if e is None else e[1] for e in expect]
    )
    # Elementwise on any shape: a [2, n] query gives the same answers.
    if len(q) % 2 == 0:
        shaped = _buckets.lookup(
            table,
            jnp.asarray(q[:, 0].reshape(2, -1)),
            jnp.asarray(q[:, 1].reshape(2, -1)),
        )
        np.testing.assert_array_equal(np.asarray(shaped[1]).ravel(), np.asarray(got_v))
