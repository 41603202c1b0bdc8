"""Per-frame statistics of ``logits [B, T, K]`` that the decoders start from.

Decoding needs, per frame, the log-normalizer and the few most probable
classes, never the whole ``[B, T, K]`` log-softmax. Both come from passes that
read the logits in place:

- **Best classes in two levels.** The classes are cut into blocks of ``bs``
  (a divisor of ``K``, so the view ``[B, T, K / bs, bs]`` is free) and each
  block's maximum is taken in one vectorized, memory-bound pass. The ``C`` best
  classes of a frame lie in its ``C`` best blocks (a class outside them is
  beaten by ``C`` block maxima), so a top-``C`` over the block maxima and one
  over the ``C * bs`` classes of those blocks give them exactly. XLA:CPU's
  ``argmax`` and ``top_k`` over all ``K`` classes are 5-20x slower than this.
- **The log-normalizer** :math:`\\log \\sum_k e^{x_k}` as ``shift + log_sum``
  with ``shift`` the frame's largest logit and ``log_sum`` the log of
  :math:`\\sum_k e^{x_k - \\mathrm{shift}}`. It is one more pass (one ``exp``
  per logit, the costliest part on a CPU), and only the scores need it: which
  class or prefix wins on a frame does not change when every class of the
  frame moves by the same constant, so the searches run on ``x - shift`` and
  subtract the ``log_sum`` of the valid frames from their scores at the end.
  Under ``jit`` a caller that drops the scores also drops this pass.

A frame whose logits are all ``-inf`` gets ``shift = log_sum = 0`` (its scores
stay ``-inf``, never NaN), as ``log_softmax`` in ``jaxctc`` does.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_NEG_INF = -np.inf


# Up to this many of up to this many entries per row, `top_k` takes `k`
# rounds of two vectorized reductions instead of XLA:CPU's TopK call: 9.4 vs
# 4.3 ms for the 5 best of 64 blocks over [200, 100] frames (measured; from
# 256 entries per row the rounds are slower).
_ROUNDS_MAX_K = 8
_ROUNDS_MAX_N = 128
# More of rows up to this long come from each entry's rank: the top 18 of 29
# classes over [200, 100] frames 8.1 vs 19.0 ms with TopK, the top 64 of 64
# 36 vs 138 ms (measured; the cost grows as n^2 a row).
_RANKS_MAX_N = 64


def top_k(x, k):
    """The ``k`` largest entries along the last axis and their indices.

    Sorted, exact, indices distinct. For a few of a short row (``k <= 8``,
    at most 128 entries) by :func:`_top_k_by_rounds`, for more of a row of
    at most 64 by :func:`_top_k_by_ranks`; otherwise
    ``jax.lax.approx_max_k`` with ``recall_target=1.0``, i.e. the exact top
    ``k`` (on CPU as fast as ``jax.lax.top_k``; tested against brute force).
    Equal entries may come in any order (``top_k`` and the first two put the
    lower index first; ``approx_max_k`` does not always).
    Not ``top_k`` itself: XLA's SPMD partitioner all-gathers the operand of a
    ``top_k`` (XLA:CPU's TopK call) but splits ``approx_max_k`` along its other
    axes, so a batch-sharded input is decoded with no communication.

    XLA:CPU takes its fast top-k path only when nothing but the top-k slice of
    its sort is used; slicing the result again (as the callers do) falls back
    to a full sort, 8-20x slower (measured). The barrier keeps the slices
    apart.
    """
    if k <= _ROUNDS_MAX_K and x.shape[-1] <= _ROUNDS_MAX_N:
        result = _top_k_by_rounds(x, k)
    elif x.shape[-1] <= _RANKS_MAX_N:
        result = _top_k_by_ranks(x, k)
    else:
        result = jax.lax.approx_max_k(x, k, recall_target=1.0)
    return jax.lax.optimization_barrier(result)


def _top_k_by_rounds(x, k):
    """:func:`top_k` in ``k`` rounds, each a max and a min-reduce over the row;
    equal entries lower index first.

    The picks come in the order (value descending, index ascending), so
    those not picked yet are the entries after the last pick ``(m, i)`` in
    that order: ``x < m``, or ``x == m`` at an index above ``i``. No mask is
    carried, and ``-inf`` entries are picked like any other (distinct).
    """
    n = x.shape[-1]
    iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    values, indices = [], []
    remaining = jnp.ones(x.shape, bool)  # a constant: XLA folds it away
    for _ in range(k):
        m = jnp.max(jnp.where(remaining, x, _NEG_INF), axis=-1, keepdims=True)
        hit = remaining & (x == m)
        i = jnp.min(jnp.where(hit, iota, n), axis=-1, keepdims=True)
        values.append(m[..., 0])
        # No hit only on a NaN maximum (the callers flag NaN): stay in range.
        indices.append(jnp.minimum(i[..., 0], n - 1))
        remaining = (x < m) | ((x == m) & (iota > i))
    return jnp.stack(values, -1), jnp.stack(indices, -1)


def _top_k_by_ranks(x, k):
    """:func:`top_k` from each entry's rank, the number of entries before it
    in the order (value descending, index ascending); ranks are distinct.

    Both loops are elementwise over the rows (the row axis moved first), so
    XLA:CPU vectorizes them across rows, where its TopK call sorts one row at
    a time: ``n`` compares an entry, then each of the ``k`` slots takes the
    entry of its rank. A NaN entry has rank 0 like the largest (the callers
    flag NaN); a slot that no entry takes holds ``-inf`` at index 0.
    """
    n = x.shape[-1]
    xt = jnp.moveaxis(x, -1, 0)  # [n, ...rows]
    index = jax.lax.broadcasted_iota(jnp.int32, xt.shape, 0)
    rank = jnp.zeros(xt.shape, jnp.int32)
    for j in range(n):
        other = xt[j : j + 1]
        before = (other > xt) | ((other == xt) & (j < index))
        rank = rank + before.astype(jnp.int32)
    slot = jax.lax.broadcasted_iota(jnp.int32, (k,) + xt.shape[1:], 0)
    values = jnp.full(slot.shape, _NEG_INF, x.dtype)
    indices = jnp.zeros(slot.shape, jnp.int32)
    for i in range(n):
        hit = rank[i : i + 1] == slot
        values = jnp.where(hit, xt[i : i + 1], values)
        indices = jnp.where(hit, i, indices)
    return jnp.moveaxis(values, 0, -1), jnp.moveaxis(indices, 0, -1)


def block_size(num_classes: int, num_best: int) -> int | None:
    """The block size for finding ``num_best`` classes among ``num_classes``.

    A divisor of ``K`` near :math:`\\sqrt{K / C}` (the two top-``C`` passes
    then cost about the same), at least 8 so the block pass stays vectorized;
    ``None`` (one level, the whole row) when ``K`` is small or has no such
    divisor.
    """
    if num_classes <= 256:
        return None
    target = max(8.0, np.sqrt(num_classes / max(num_best, 1)))
    divisors = [
        d
        for d in range(8, int(4 * target) + 1)
        if num_classes % d == 0 and num_classes // d > num_best
    ]
    if not divisors:
        return None
    return min(divisors, key=lambda d: abs(np.log(d / target)))


class Best(NamedTuple):
    """A frame's best non-blank classes; scores are logits minus ``shift``.

    Attributes:
      shift: ``[B, T]`` the frame's largest logit (0 where it is not finite).
      blank: ``[B, T]`` the blank's score.
      classes: ``[B, T, C]`` int32, the ``C`` best non-blank classes, best
        first (equal classes in any order, see :func:`top_k`).
      scores: ``[B, T, C]`` their scores.
      bound: ``[B, T]`` an upper bound on the score of every non-blank class
        outside ``classes`` (``-inf`` when there is none).
      nan: ``[B, T]`` bool, the frame has a NaN logit (a max propagates NaN).
    """

    shift: jax.Array
    blank: jax.Array
    classes: jax.Array
    scores: jax.Array
    bound: jax.Array
    nan: jax.Array


def blank_masked(x, blank_id):
    """``x`` with the blank's column at ``-inf`` (``x`` is ``[..., n]``)."""
    iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    return jnp.where(iota == blank_id, jnp.asarray(_NEG_INF, x.dtype), x)


def _ascending(x):
    """``[..., C]`` distinct small ints sorted ascending, by their ranks
    (``C * C`` compares: cheaper than XLA:CPU's sort for a few per row)."""
    rank = jnp.sum(x[..., None, :] < x[..., :, None], axis=-1, dtype=jnp.int32)
    slots = jax.lax.broadcasted_iota(jnp.int32, x.shape + x.shape[-1:], x.ndim)
    picked = jnp.where(rank[..., None] == slots, x[..., None], 0)
    return jnp.sum(picked, axis=-2, dtype=x.dtype)


def best_classes(logits, blank_id: int, num_best: int) -> Best:
    """The ``num_best`` best non-blank classes of every frame, exactly.

    ``logits`` is ``[B, T, K]`` in its own dtype (bf16 and f16 are read as
    they are and widened per element); the results are in the compute dtype.
    Beyond the ``K - 1`` non-blank classes the scores are ``-inf``.
    """
    dtype = jnp.float64 if logits.dtype == jnp.float64 else jnp.float32
    batch, frames, num_classes = logits.shape
    c = num_best
    bs = block_size(num_classes, c)
    x = logits
    if bs is None:
        # One level: the whole row (small K), blank masked.
        k = min(c + 1, num_classes)
        values, classes = top_k(blank_masked(x, blank_id).astype(dtype), k)
        if k < c + 1:  # fewer classes than asked for: the rest are empty
            pad = [(0, 0), (0, 0), (0, c + 1 - k)]
            values = jnp.pad(values, pad, constant_values=_NEG_INF)
            classes = jnp.pad(classes, pad)
        top_value, bound = values[..., 0], values[..., c]
        top_scores = values[..., :c]
        classes = classes[..., :c].astype(jnp.int32)
        # top_k may drop a NaN; a max keeps it.
        nan = jnp.isnan(jnp.max(x, axis=-1))
    else:
        nb = num_classes // bs
        block_max = jnp.max(x.reshape(batch, frames, nb, bs), axis=-1)
        # The barrier: XLA folds a max of `block_max` into one more full pass
        # over the logits (5.5 of 17 ms at K = 1024, measured).
        nan = jnp.isnan(jnp.max(jax.lax.optimization_barrier(block_max), axis=-1))
        # The blank's block again without the blank (a slice of bs columns;
        # masking the whole array instead costs a slow pass over it).
        b0 = (blank_id // bs) * bs
        own = blank_masked(x[..., b0 : b0 + bs], blank_id - b0)
        # One column written in place: a `where` against the broadcast maximum
        # made XLA write that broadcast out whole (4 ms at K = 1024).
        block_max = (
            block_max.at[..., blank_id // bs].set(jnp.max(own, axis=-1)).astype(dtype)
        )
        block_values, blocks = top_k(block_max, c + 1)
        # In class order, so that the gathered classes are in the order of the
        # whole row (ties then come out as top_k would order them there).
        starts = _ascending(blocks[..., :c].astype(jnp.int32)) * bs  # [B, T, C]
        offsets = jnp.arange(bs, dtype=jnp.int32).reshape(1, 1, 1, bs)
        columns = (starts[..., None] + offsets).reshape(batch, frames, c * bs)
        gathered = jnp.take_along_axis(x, columns, axis=-1).astype(dtype)
        gathered = jnp.where(columns == blank_id, _NEG_INF, gathered)
        values, where = top_k(gathered, c + 1)
        classes = jnp.take_along_axis(columns, where[..., :c], axis=-1)
        top_value = values[..., 0]
        # Outside the C best classes: the (C+1)-th of the gathered blocks or
        # anything in the other blocks, at most the (C+1)-th block maximum.
        bound = jnp.maximum(values[..., c], block_values[..., c])
        top_scores = values[..., :c]
    blank = x[..., blank_id].astype(dtype)
    top = jnp.maximum(top_value, blank)
    shift = jnp.where(jnp.isfinite(top), top, 0.0)
    return Best(
        shift=shift,
        blank=blank - shift,
        classes=classes,
        scores=top_scores - shift[..., None],
        bound=bound - shift,
        nan=nan | jnp.isnan(blank),
    )


def argmax(logits):
    """The best class of every frame ``[B, T]`` (ties to the lower class) and
    its logit in the compute dtype, in two levels (see the module docstring).
    """
    dtype = jnp.float64 if logits.dtype == jnp.float64 else jnp.float32
    batch, frames, num_classes = logits.shape
    bs = block_size(num_classes, 1) if num_classes > 128 else None
    if bs is None:
        best = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        value = jnp.max(logits, axis=-1)
        return best, value.astype(dtype)
    nb = num_classes // bs
    block_max = jnp.max(logits.reshape(batch, frames, nb, bs), axis=-1)
    block = jnp.argmax(block_max, axis=-1).astype(jnp.int32)
    columns = block[..., None] * bs + jnp.arange(bs, dtype=jnp.int32).reshape(1, 1, bs)
    gathered = jnp.take_along_axis(logits, columns, axis=-1)
    inner = jnp.argmax(gathered, axis=-1).astype(jnp.int32)
    # The value read at the winner, not the max of ``block_max``: XLA folds
    # that max of maxima into one more pass over the logits.
    value = jnp.take_along_axis(gathered, inner[..., None], axis=-1)[..., 0]
    return block * bs + inner, value.astype(dtype)


# The unshifted sum of exp(x) is exact to float rounding while every frame's
# largest logit lies in [-60, 60]: no term overflows (K e^60 < 3e38 for any
# K below 1e12), and the terms it flushes to 0 (x < -87) are below e^-27 of
# the frame's largest.
_UNSHIFTED_RANGE = 60.0
# Below this many classes the shifted sum costs no more than the cond.
_UNSHIFTED_MIN_CLASSES = 128


def log_sum(logits, shift):
    """``[B, T]``: :math:`\\log \\sum_k e^{x_k - \\mathrm{shift}}`, 0 where not finite.

    With ``shift`` the frame's largest logit this lies in ``[0, log K]``; the
    frame's log-softmax is ``(x - shift) - log_sum``.

    When every ``shift`` lies in ``[-60, 60]`` (log-probabilities and
    the logits of trained models do) the sum is taken of ``exp(x)`` and scaled
    by ``exp(-shift)`` afterwards: XLA:CPU's reduction with the per-frame
    ``shift`` broadcast into it costs 1.5x the plain one (measured: 221 vs
    146 ms at ``[200, 100, 18000]``). Otherwise (a ``lax.cond`` on the whole
    batch: one boolean shared by a batch-sharded input) the shifted sum,
    which never overflows. At ``K <= 128`` always the shifted sum: the two
    cost about the same there.
    """
    x = logits.astype(shift.dtype)

    def shifted():
        return jnp.sum(jnp.exp(x - shift[..., None]), -1)

    def unshifted():
        return jnp.sum(jnp.exp(x), -1) * jnp.exp(-shift)

    if x.shape[-1] <= _UNSHIFTED_MIN_CLASSES:
        total = jnp.log(shifted())
    else:
        # shift is finite (0 on a frame without a finite logit).
        in_range = jnp.all(jnp.abs(shift) <= _UNSHIFTED_RANGE)
        total = jnp.log(jax.lax.cond(in_range, unshifted, shifted))
    return jnp.where(jnp.isfinite(total), total, 0.0)
