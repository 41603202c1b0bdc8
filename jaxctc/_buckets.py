"""A static hash map from pairs of int32 keys to values, for the device.

Built once on the host: the entries are sorted by the hash bucket of their key
(about one entry per bucket), each bucket's first entry is stored, and a
lookup reads the ``probes`` entries from there (``probes``: the fullest
bucket, about 7-10 for a million entries): one gather of fixed shape, no
loops, no int64. Keys of other buckets never match, so bucket ends need not be
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
      keys: ``[num_entries + probes, 2]`` int32 (``-1`` past the end), the
        two keys side by side so that a probe reads them in one gather.
      values: a tuple of ``[num_entries + probes]`` arrays.
      probes: the entries a lookup reads.
    """

    bucket_start: jax.Array
    keys: jax.Array
    values: tuple
    probes: int = dataclasses.field(metadata=dict(static=True))


def build(key_a, key_b, values, empty) -> BucketTable:
    """The table of the distinct pairs ``(key_a[i], key_b[i])`` (NumPy int32)
    with ``values[j][i]``; ``empty[j]`` is what a missed lookup returns."""
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

    return BucketTable(
        bucket_start=jnp.asarray(starts),
        keys=jnp.stack([column(key_a, -1), column(key_b, -1)], axis=1),
        values=tuple(column(v, e) for v, e in zip(values, empty, strict=True)),
        probes=probes,
    )


def take(table, *index):
    """``table[index]`` of a replicated ``table`` at (possibly batch-sharded)
    int32 ``index`` arrays: the result is sharded like the index, which a mesh
    with explicit axes needs said (a plain gather there is ambiguous)."""
    return table.at[index].get(out_sharding=jax.typeof(index[0]).sharding)


def lookup(table: BucketTable, a, b):
    """``(found, *values)`` of the keys ``(a, b)``, elementwise (int32 arrays
    of one shape); a missed key gives each column's ``empty`` value."""
    num_buckets = table.bucket_start.shape[0]
    bucket = _hash(a, b, jnp) & np.uint32(num_buckets - 1)
    first = take(table.bucket_start, bucket.astype(jnp.int32))
    offsets = jnp.arange(table.probes, dtype=jnp.int32)
    pos = first[..., None] + offsets.reshape((1,) * first.ndim + (table.probes,))
    keys = take(table.keys, pos)
    hit = (keys[..., 0] == a[..., None]) & (keys[..., 1] == b[..., None])
    found = jnp.any(hit, axis=-1)
    entry = jnp.take_along_axis(pos, jnp.argmax(hit, axis=-1)[..., None], -1)[..., 0]
    # Past the end the padding holds the empty values.
    entry = jnp.where(found, entry, table.keys.shape[0] - 1)
    return (found, *(take(v, entry) for v in table.values))
