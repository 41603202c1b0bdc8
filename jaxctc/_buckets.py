"""A static hash map from pairs of int32 keys to values, for the device.

Built once on the host: the entries are sorted by the hash bucket of their key
(about one entry per bucket), each bucket's first entry is stored, and a
lookup reads the ``probes`` entries from there (``probes``: the fullest
bucket, about 7-10 for a million entries) as one window: one gather of
fixed shape, no loops, no int64. A pair of keys is stored as one int32 when
every packed value fits, else as two. Keys of other buckets never match, so bucket ends need not be
stored; the arrays are padded by ``probes`` entries so that every read stays
in bounds.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

_M1, _M2 = np.uint32(0x9E3779B1), np.uint32(0x85EBCA77)


def _hash(a, b, xp):
    """A 32-bit hash of the int32 pair ``(a, b)``, in NumPy or JAX alike."""
    h = a.astype(xp.uint32) * _M1 + b.astype(xp.uint32) * _M2
    h = h ^ (h >> 15)
    h = h * np.uint32(0x2C1B3C6D)
    return h ^ (h >> 13)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BucketTable:
    """Keys ``(key_a, key_b)`` and their ``values``, in bucket order.

    Attributes:
      bucket_start: ``[num_buckets]`` int32, each bucket's first entry
        (``num_buckets`` a power of two).
      keys: ``[num_entries + probes]`` int32, each key packed as ``key_a *
        stride + key_b`` when every such number fits in an int32, else
        ``[num_entries + probes, 2]``, the two side by side (``-1`` past the
        end); a lookup reads a bucket's keys as one window.
      values: a tuple of ``[num_entries + probes]`` arrays.
      probes: the entries a lookup reads.
      stride: ``max(key_b) + 1`` when the keys are packed, else 0.
      max_a: the largest ``key_a`` (a packed key is exact only up to it).
    """

    bucket_start: jax.Array
    keys: jax.Array
    values: tuple
    probes: int = dataclasses.field(metadata=dict(static=True))
    stride: int = dataclasses.field(default=0, metadata=dict(static=True))
    max_a: int = dataclasses.field(default=0, metadata=dict(static=True))


def build(key_a, key_b, values, empty) -> BucketTable:
    """The table of the distinct pairs ``(key_a[i], key_b[i])`` (NumPy int32,
    non-negative) with ``values[j][i]``; ``empty[j]`` is what a missed lookup
    returns."""
    key_a = np.asarray(key_a, np.int32)
    key_b = np.asarray(key_b, np.int32)
    count = len(key_a)
    num_buckets = 1 << max(4, int(np.ceil(np.log2(max(count, 1)))))
    bucket = _hash(key_a, key_b, np) & np.uint32(num_buckets - 1)
    order = np.argsort(bucket, kind="stable")
    sizes = np.bincount(bucket, minlength=num_buckets)
    probes = max(int(sizes.max(initial=0)), 1)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)

    def column(x, fill):
        x = np.asarray(x)[order]
        return jnp.asarray(np.concatenate([x, np.full(probes, fill, x.dtype)]))

    max_a = int(key_a.max(initial=0))
    stride = int(key_b.max(initial=0)) + 1
    if (max_a + 1) * stride <= np.iinfo(np.int32).max:
        # One int32 per key: half the reads and compares of a pair.
        keys = column(key_a * np.int32(stride) + key_b, -1)
    else:
        keys = jnp.stack([column(key_a, -1), column(key_b, -1)], axis=1)
        stride = 0
    return BucketTable(
        bucket_start=jnp.asarray(starts),
        keys=keys,
        values=tuple(column(v, e) for v, e in zip(values, empty, strict=True)),
        probes=probes,
        stride=stride,
        max_a=max_a,
    )


def take(table, *index):
    """``table[index]`` of a replicated ``table`` at (possibly batch-sharded)
    int32 ``index`` arrays: the result is sharded like the index, which a mesh
    with explicit axes needs said (a plain gather there is ambiguous)."""
    return table.at[index].get(out_sharding=jax.typeof(index[0]).sharding)


def _explicit(x):
    """Whether ``x`` is traced on a mesh with explicit axes."""
    mesh = jax.typeof(x).sharding.mesh
    explicit = jax.sharding.AxisType.Explicit
    return any(t == explicit for t in getattr(mesh, "axis_types", ()))


def _window(keys, first, probes):
    """``keys[first + i]`` for ``i < probes``, ``first.shape + [probes] +
    keys.shape[1:]``: one gather of a window of rows per lookup (a copy of
    contiguous memory, not ``probes`` separate reads)."""
    dims = jax.lax.GatherDimensionNumbers(
        offset_dims=tuple(range(first.ndim, first.ndim + keys.ndim)),
        collapsed_slice_dims=(),
        start_index_map=(0,),
    )
    return jax.lax.gather(
        keys,
        first[..., None],
        dims,
        slice_sizes=(probes,) + keys.shape[1:],
        mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS,
    )


def lookup(table: BucketTable, a, b):
    """``(found, *values)`` of the keys ``(a, b)``, elementwise (int32 arrays
    of one shape); a missed key gives each column's ``empty`` value."""
    num_buckets = table.bucket_start.shape[0]
    bucket = _hash(a, b, jnp) & np.uint32(num_buckets - 1)
    first = take(table.bucket_start, bucket.astype(jnp.int32))
    offsets = jnp.arange(table.probes, dtype=jnp.int32)
    if _explicit(first):
        # A gather's output sharding cannot be said on a mesh with explicit
        # axes: read the window's rows one by one there.
        keys = take(table.keys, first[..., None] + offsets)
    else:
        keys = _window(table.keys, first, table.probes)
    if table.stride:
        # A pair outside the table's ranges would pack onto another's key.
        inside = (a >= 0) & (a <= table.max_a) & (b >= 0) & (b < table.stride)
        packed = jnp.where(inside, a * table.stride + b, -2)
        hit = keys == packed[..., None]
    else:
        hit = (keys[..., 0] == a[..., None]) & (keys[..., 1] == b[..., None])
    found = jnp.any(hit, axis=-1)
    # Keys are distinct, so at most one probe hits: its offset is a sum (an
    # argmax is a variadic reduce, which XLA:CPU does not vectorize).
    offset = jnp.sum(jnp.where(hit, offsets, 0), -1, dtype=jnp.int32)
    # Past the end the padding holds the empty values.
    entry = jnp.where(found, first + offset, table.keys.shape[0] - 1)
    return (found, *(take(v, entry) for v in table.values))
