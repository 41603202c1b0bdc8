"""A trie's child map ``(node, class) -> child``, as fixed-shape device tables.

Built once on the host from the spellings (lists of class ids) of the words
of a trie over classes, or from any such map's edges. Node 0 is the root.
Two layouts, chosen by the number of classes ``K`` and the map's shape:

- **child masks** (``K <= 64``, character vocabularies): the nodes are
  numbered breadth first with each node's children consecutive in class
  order, so a node needs only a bit mask of its children's classes and its
  first child: the child by class ``k`` is ``first + popcount(mask & (2^k -
  1))``. A lookup is one gather per node and arithmetic per class, which
  matters because the beam search looks up ``W x C`` (beam, class) pairs per
  frame; 8 bytes per node and 32 classes.
- **hashed pairs** (larger ``K``, or a map that is no trie over classes, e.g.
  the walks of BPE classes over a trie of characters): the ``(node, class)
  -> child`` map in a :class:`jaxctc._buckets.BucketTable`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxctc import _buckets

# Up to this many 32-bit mask words per node (K <= 64), the mask layout.
_MAX_MASK_WORDS = 2


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Children:
    """A trie over classes, for child lookups (see the module docstring).

    Attributes:
      mask: ``[num_nodes, words]`` uint32, bit ``k % 32`` of word ``k // 32``
        set where the node has a child by class ``k``; ``None`` for the
        hashed layout.
      base: ``[num_nodes, words]`` int32, the id of the node's first child by
        a class of that word or later (mask layout).
      pairs: the hashed layout's ``(node, class) -> child`` table, else
        ``None``.
      num_nodes: the number of nodes, the root included.
    """

    mask: jax.Array | None
    base: jax.Array | None
    pairs: _buckets.BucketTable | None
    num_nodes: int = dataclasses.field(metadata=dict(static=True))

    @property
    def nbytes(self) -> int:
        """Bytes of the device tables."""
        leaves = jax.tree.leaves(self)
        return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in leaves)

    def child(self, node, tokens):
        """``(found, child)`` of each ``node`` by each of ``tokens``
        (int32 arrays of one shape, ``node >= 0``); ``child`` is -1 where
        the node has no child by that class."""
        node = jnp.asarray(node, jnp.int32)
        tokens = jnp.asarray(tokens, jnp.int32)
        if self.mask is None:
            assert self.pairs is not None  # the hashed layout
            return _buckets.lookup(self.pairs, node, tokens)
        word = tokens >> 5 if self.mask.shape[1] > 1 else jnp.zeros_like(tokens)
        mask = _buckets.take(self.mask, node, word)
        bit = (tokens & 31).astype(jnp.uint32)
        found = ((mask >> bit) & np.uint32(1)) == 1
        below = mask & ((np.uint32(1) << bit) - np.uint32(1))
        rank = jax.lax.population_count(below).astype(jnp.int32)
        child = jnp.where(found, _buckets.take(self.base, node, word) + rank, -1)
        return found, child


def build(spellings, num_classes: int) -> tuple[Children, np.ndarray]:
    """The trie of ``spellings`` (sequences of class ids in ``[0, K)``).

    Returns the trie and ``[len(spellings)]`` int32, the node each spelling
    ends at (0 for an empty one).
    """
    children: dict[tuple[int, int], int] = {}
    ends = np.zeros(len(spellings), np.int64)
    for i, spelling in enumerate(spellings):
        node = 0
        for k in spelling:
            node = children.setdefault((node, int(k)), len(children) + 1)
        ends[i] = node
    edges = np.array([(p, k, c) for (p, k), c in children.items()], np.int64)
    edges = edges.reshape(-1, 3)
    parent, token, child = edges.T
    trie, new = from_edges(parent, token, child, len(children) + 1, num_classes)
    return trie, new[ends].astype(np.int32)


def from_edges(
    parent, token, child, num_nodes: int, num_classes: int
) -> tuple[Children, np.ndarray]:
    """The tables of the map ``(parent[i], token[i]) -> child[i]`` over nodes
    ``0 .. num_nodes - 1`` (NumPy integer arrays, distinct pairs).

    The mask layout needs ``K <= 64`` and a trie over classes: no node the
    child of two edges, every parent reached from the root (nodes without
    edges may be left over). Any other map (e.g. the walks of BPE classes
    over a trie of characters, which reach a node by several edges) gets the
    hashed layout.

    Returns the tables and ``[num_nodes]`` int64, each node's new id (the
    mask layout renumbers the nodes; the hashed one keeps them).
    """
    parent, token, child = (np.asarray(a, np.int64) for a in (parent, token, child))
    words = -(-max(num_classes, 1) // 32)
    new = None
    if words <= _MAX_MASK_WORDS and np.unique(child).size == child.size:
        new = _breadth_first(parent, token, child, num_nodes)
    if new is None:
        pairs = _buckets.build(parent, token, (child.astype(np.int32),), empty=(-1,))
        trie = Children(mask=None, base=None, pairs=pairs, num_nodes=num_nodes)
        return trie, np.arange(num_nodes)
    parent, child = new[parent], new[child]
    mask = np.zeros((num_nodes, words), np.uint32)
    np.bitwise_or.at(mask, (parent, token >> 5), np.uint32(1) << (token & 31))
    counts = np.zeros((num_nodes, words), np.int64)
    np.add.at(counts, (parent, token >> 5), 1)
    first = np.full(num_nodes, num_nodes, np.int64)
    np.minimum.at(first, parent, child)
    base = first[:, None] + np.cumsum(counts, axis=1) - counts
    trie = Children(
        mask=jnp.asarray(mask),
        base=jnp.asarray(base.astype(np.int32)),
        pairs=None,
        num_nodes=num_nodes,
    )
    return trie, new


def _breadth_first(parent, token, child, num_nodes):
    """New node ids, breadth first from the root with each node's children
    consecutive in class order (nodes without edges last); ``None`` unless
    every edge is reached from the root."""
    new = np.full(num_nodes, -1, np.int64)
    new[0] = 0
    assigned = 1
    while True:
        level = (new[parent] >= 0) & (new[child] < 0)
        if not level.any():
            break
        order = np.lexsort((token[level], new[parent[level]]))
        new[child[level][order]] = assigned + np.arange(order.size)
        assigned += order.size
    if np.any(new[parent] < 0) or np.any(child == 0):
        return None
    rest = new < 0
    new[rest] = assigned + np.arange(int(rest.sum()))
    return new
