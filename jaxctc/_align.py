"""Forced alignment (Viterbi) and class posteriors on the CTC lattice.

Both walk the lattice of ``_lattice``: the alignment runs its forward recursion
in the max-plus semiring and backtracks; the posteriors run the forward and
smoothing passes that also give the loss its gradient.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import export

from jaxctc import _checks, _lattice


class Alignment(NamedTuple):
    """The single most likely alignment of each sequence, from :func:`forced_align`.

    Attributes:
      frame_labels: ``[B, T]`` int32, the class the alignment emits at each
        frame (``blank_id`` or a label id); ``-1`` on padded frames and on
        every frame of a sequence with no alignment.
      log_probs: ``[B]`` float, the natural-log probability of that alignment,
        the sum over the valid frames of the log-softmax of the class it
        emits: at most 0, and ``-inf`` where the sequence has no alignment of
        nonzero probability.
      starts: ``[B, N]`` int32, the first frame of each label's run of frames;
        ``-1`` for padded labels and sequences with no alignment.
      ends: ``[B, N]`` int32, the last frame of each label's run (inclusive);
        ``-1`` likewise.
    """

    frame_labels: jax.Array
    log_probs: jax.Array
    starts: jax.Array
    ends: jax.Array


# So that a ``jax.export``-ed forced_align can be serialized with its output.
export.register_namedtuple_serialization(Alignment, serialized_name="jaxctc.Alignment")


# The backtrack. A path's predecessor state at the previous valid frame is the
# best-scoring of the states that may precede it there (s, s - 1, and s - 2
# where ``skip``), read off the stored max-plus alphas: for a state ``c`` at a
# later frame, the alphas of the nearest earlier valid frame are exactly the
# ``alphas[t]`` of any frame t in between, because padded frames copy them. So
# a reverse scan over the frames carries one state per sequence and never needs
# a ``[T, B, S]`` array of backpointers (an int32 array as large as the alphas,
# written on every step of the forward pass): the alphas the backtrack reads
# are the ones the forward pass stores anyway, and the predecessor costs one
# masked max over ``S`` per frame, as much as the forward step itself.
#
# Ties: where several predecessors score the same, the one with the largest
# state index wins (staying in the state, then the previous state, then the
# skip), and the end of the path prefers the trailing blank over the last
# label. Since every alpha is the exact best score of a prefix, this picks,
# among all best alignments, the one whose state sequence read from the last
# frame backwards is lexicographically largest.
_START = -1  # carry value before the last valid frame is reached


def _best_state(alpha, allowed):
    """The largest ``s`` maximizing ``alpha[:, s]`` among ``allowed`` ``[B, S]``."""
    scores = jnp.where(allowed, alpha, -jnp.inf)
    best = jnp.max(scores, axis=1, keepdims=True)
    index = jnp.arange(alpha.shape[1], dtype=jnp.int32)[None, :]
    return jnp.max(jnp.where(allowed & (scores == best), index, -1), axis=1)


def _backtrack(alphas, frame_valid, skip, final):
    """State ``[T, B]`` per frame on the best path (``-1`` on padded frames)."""
    index = jnp.arange(skip.shape[1], dtype=jnp.int32)[None, :]

    def step(next_state, x):
        alpha, valid = x
        c = next_state[:, None]
        allowed = jnp.where(
            c == _START,
            final,
            (index == c) | (index == c - 1) | ((index == c - 2) & _gather(skip, c)),
        )
        state = jnp.where(valid, _best_state(alpha, allowed), next_state)
        return state, jnp.where(valid, state, -1)

    start = jnp.full(skip.shape[:1], _START, jnp.int32)
    _, states = jax.lax.scan(step, start, (alphas, frame_valid), reverse=True)
    return states


def _gather(x, index):
    """``x[b, index[b, j]]`` for ``x [B, S]``, ``index [B, J]`` clipped to range."""
    return jnp.take_along_axis(x, jnp.clip(index, 0, x.shape[1] - 1), axis=1)


def _runs(path, size):
    """First and last frame ``[B, size]`` of each label state ``2n + 1``
    (``n < size``) on ``path`` ``[B, T]``.

    The path's states never decrease over valid frames. With the padded frames
    (``-1``) filled from the left, the run of state ``s`` starts after the
    frames below ``s``; filled from the right, it ends before the frames above
    ``s``. Counting them is a fused compare-and-sum, ``O(T N)`` per sequence
    like the lattice recursion itself, with no scatter or per-row search (which
    would need batch-aware sharding rules).
    """
    from_left = jax.lax.cummax(path, axis=1)
    big = jnp.iinfo(jnp.int32).max
    from_right = jax.lax.cummin(jnp.where(path < 0, big, path), axis=1, reverse=True)
    targets = (2 * jnp.arange(size, dtype=jnp.int32) + 1)[None, None, :]
    starts = jnp.sum(from_left[:, :, None] < targets, axis=1, dtype=jnp.int32)
    ends = jnp.sum(from_right[:, :, None] <= targets, axis=1, dtype=jnp.int32) - 1
    return starts, ends


# The public functions check their inputs eagerly (value checks need concrete
# arrays), then call one jitted computation: called outside ``jit`` they compile
# once per shape instead of dispatching every small op on its own.
@functools.partial(jax.jit, static_argnames="blank_id")
def _viterbi(logits, logit_paddings, labels, label_paddings, log_epsilon, *, blank_id):
    lattice, frame_valid = _lattice.lattice_inputs(
        logit_paddings, labels, label_paddings, blank_id
    )
    log_norm = _lattice.log_normalizer(logits)
    emit = _lattice.frame_emissions(logits, log_norm, lattice.states, log_epsilon)
    # Paths must start in state 0: the other states start at NEG, far below any
    # real path (at worst T * log_epsilon), so a sequence with no alignment
    # keeps a best score near NEG and is recognised below.
    batch, size = lattice.states.shape
    init = _lattice.initial_state(batch, size, _lattice.NEG, logits.dtype)
    last, alphas = _lattice.forward(
        emit, frame_valid, lattice.skip, init, combine=_lattice.max3
    )
    best = jnp.max(jnp.where(lattice.final, last, _lattice.NEG), axis=1)
    alignable = best > 0.5 * _lattice.NEG

    path = jnp.transpose(_backtrack(alphas, frame_valid, lattice.skip, lattice.final))
    path = jnp.where(alignable[:, None], path, -1)
    frame_labels = jnp.where(path >= 0, _gather(lattice.states, path), -1)

    chosen = jnp.take_along_axis(
        logits, jnp.maximum(frame_labels, 0)[:, :, None], axis=2
    )[:, :, 0]
    score = jnp.where(frame_labels >= 0, log_norm.apply(chosen), 0.0)
    score = jnp.sum(score, axis=1)
    score = jnp.where(alignable, score, -jnp.inf)

    starts, ends = _runs(path, labels.shape[1])
    label = jnp.arange(labels.shape[1], dtype=jnp.int32)[None, :]
    aligned = alignable[:, None] & (label < lattice.num_labels[:, None])
    starts = jnp.where(aligned, starts, -1)
    ends = jnp.where(aligned, ends, -1)
    return Alignment(frame_labels, score, starts, ends)


def forced_align(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: jax.typing.ArrayLike = -1e5,
    checked: bool = False,
) -> Alignment:
    r"""The single most likely CTC alignment of each label sequence (Viterbi).

    Among the alignments (a class per valid frame) that collapse to the labels
    once repeats are merged and blanks removed, finds the most probable one
    (the definition is under Notes), batched, by the loss's forward recursion
    in the max-plus semiring and a backtrack over the stored scores (no
    backpointer array).

    Ties between equally likely best alignments are broken deterministically:
    the path ends in the trailing blank rather than the last label where both
    score the same, and, walking back, stays in a lattice state rather than
    leaving it for an earlier one. Equivalently, among the best alignments it
    returns the one whose extended-state sequence (blank, ``y_1``, blank,
    ``y_2``, ...), read from the last frame backwards, is lexicographically
    largest (its states ``0..2U``, compared at the last frame first). Over
    four uniform frames, ``[1, 2]`` so aligns as ``1 2 - -``.

    A sequence with no alignment (fewer valid frames than its labels plus
    their adjacent repeats; see :func:`feasible`) gets ``log_probs = -inf``
    and ``-1`` in every other field. Log-probabilities below ``log_epsilon``
    (``-inf`` logits masking a class) count as ``log_epsilon`` when choosing
    the path, so a sequence whose alignments all pass through masked classes
    still gets the one with the fewest such frames, with ``log_probs = -inf``.

    Args:
      logits: ``[B, T, K]`` unnormalized scores (``log_softmax`` is applied),
        any float dtype; bf16/f16 run in float32, float64 stays float64.
      logit_paddings: ``[B, T]``, 1.0 on padded frames and 0.0 elsewhere; padded
        frames may sit anywhere in time.
      labels: ``[B, N]`` integer class ids, right-padded.
      label_paddings: ``[B, N]``, 1.0 on padded labels, each row zeros then ones.
      blank_id: the blank's class index, in ``[0, K)``.
      log_epsilon: the floor on emission log-probabilities while searching,
        a scalar in ``[-1e20, 0)``.
      checked: check values under ``jit`` too, as ``checkify`` checks (as in
        :func:`ctc_loss_with_forward_probs`).

    Returns:
      An :class:`Alignment` ``(frame_labels [B, T], log_probs [B], starts
      [B, N], ends [B, N])``: the class per frame (``-1`` on padded frames), the
      alignment's natural-log probability (``<= 0``, in the compute dtype:
      float32 unless the logits are float64), and the first and last frame of
      each label (``-1`` for padded labels).

    Raises:
      ValueError: at trace time, for a bad rank or shape or a ``blank_id`` out
        of range; with concrete values (or ``checked=True`` under
        ``checkify``), for paddings that are not 0/1, labels that are not
        right-padded, equal to ``blank_id`` or outside ``[0, K)``, NaN or
        ``+inf`` logits and a bad ``log_epsilon``, as
        :func:`ctc_loss_with_forward_probs`.
      TypeError: for non-float ``logits`` or non-integer ``labels``.

    Notes:
      .. math::
          \pi^\star = \arg\max_{\pi \in \mathcal{B}^{-1}(y)}
              \sum_{t} \log \mathrm{softmax}(\mathrm{logits}_t)_{\pi_t}.

    Examples:
      Three frames favouring blank, ``a = 1``, blank; the best alignment of
      ``[1]`` is ``- a -`` with probability ``0.8 ** 3``:

      >>> import math, jax.numpy as jnp, jaxctc
      >>> p = jnp.array([[[0.8, 0.2], [0.2, 0.8], [0.8, 0.2]]])
      >>> out = jaxctc.forced_align(jnp.log(p), jnp.zeros((1, 3)),
      ...                           jnp.array([[1]]), jnp.zeros((1, 1)))
      >>> out.frame_labels.tolist(), out.starts.tolist(), out.ends.tolist()
      ([[0, 1, 0]], [[1]], [[1]])
      >>> round(float(out.log_probs[0]), 4), round(3 * math.log(0.8), 4)
      (-0.6694, -0.6694)

    References:
      Graves et al., `Connectionist temporal classification: labelling
      unsegmented sequence data with recurrent neural networks
      <https://dl.acm.org/doi/10.1145/1143844.1143891>`_, ICML 2006.
    """
    *args, blank_id, log_epsilon = _checks.check_lattice_inputs(
        logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon, checked
    )
    return _viterbi(*args, log_epsilon, blank_id=blank_id)


def posteriors(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: jax.typing.ArrayLike = -1e5,
    checked: bool = False,
) -> jax.Array:
    r"""Class posteriors: the probability of each class at each frame given the labels.

    ``P(class k at frame t | labels, x)`` over the alignments of the labels
    (the definition is under Notes), from the passes that give
    :func:`ctc_loss` its gradient, which is exactly ``softmax(logits) -
    posteriors`` on valid frames (per unit of loss): the forward pass keeps
    how each state's probability splits among its predecessors, and a
    backward pass carries the posteriors (numbers in ``[0, 1]``) back along
    those weights, so they keep float32 accuracy on long sequences. A label
    that occurs twice in the labels contributes both occurrences to its
    class.

    Log-probabilities below ``log_epsilon`` count as ``log_epsilon``, as in the
    loss. A sequence with no alignment (see :func:`feasible`) therefore gets
    the posteriors of that floored model (the ones the loss's gradient uses),
    which still sum to one per valid frame but say little about the data.

    Args:
      logits: ``[B, T, K]`` unnormalized scores (``log_softmax`` is applied),
        any float dtype; bf16/f16 run in float32, float64 stays float64.
      logit_paddings: ``[B, T]``, 1.0 on padded frames and 0.0 elsewhere.
      labels: ``[B, N]`` integer class ids, right-padded.
      label_paddings: ``[B, N]``, 1.0 on padded labels, each row zeros then ones.
      blank_id: the blank's class index, in ``[0, K)``.
      log_epsilon: the stand-in for log 0, a scalar in ``[-1e20, 0)``.
      checked: value checks under ``jit`` via ``checkify``.

    Returns:
      ``[B, T, K]`` probabilities in the compute dtype (float32 unless the
      logits are float64): each valid frame sums to 1 over ``K``; padded
      frames are 0.

    Raises:
      ValueError: as :func:`forced_align`.
      TypeError: for non-float ``logits`` or non-integer ``labels``.

    Notes:
      .. math::
          \gamma_{b,t,k} = P(\pi_t = k \mid y_b, x_b)
              = \frac{\sum_{\pi \in \mathcal{B}^{-1}(y_b),\, \pi_t = k}
                      \prod_{t'} p_{t'}(\pi_{t'})}{P(y_b \mid x_b)},
              \qquad p_t = \mathrm{softmax}(\mathrm{logits}_t).

    Examples:
      Two uniform frames, labels ``[1]``: of the three alignments ``-a``,
      ``a-``, ``aa``, two emit ``a`` at the first frame:

      >>> import jax.numpy as jnp, jaxctc
      >>> post = jaxctc.posteriors(jnp.zeros((1, 2, 2)), jnp.zeros((1, 2)),
      ...                          jnp.array([[1]]), jnp.zeros((1, 1)))
      >>> post[0].round(4).tolist()
      [[0.3333, 0.6667], [0.3333, 0.6667]]
    """
    *args, blank_id, log_epsilon = _checks.check_lattice_inputs(
        logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon, checked
    )
    return _class_posteriors(*args, log_epsilon, blank_id=blank_id)


@functools.partial(jax.jit, static_argnames="blank_id")
def _class_posteriors(
    logits, logit_paddings, labels, label_paddings, log_epsilon, *, blank_id
):
    # The loss's forward pass, then its gradient's smoothing pass (posteriors
    # in [0, 1] carried back along the transition weights, one per frame up to
    # rounding even where no path exists), writing each frame's class
    # posteriors into the [B, T, K] result: exp(alpha + beta - log Z) instead
    # loses float32 digits on long sequences (rows 1.5% off at T = 2000).
    if logits.shape[1] == 0:  # no frame: nothing to write
        return jnp.zeros_like(logits)
    lattice, frame_valid = _lattice.lattice_inputs(
        logit_paddings, labels, label_paddings, blank_id
    )
    split = _lattice.split(lattice.states, lattice.skip, lattice.final)
    _, _, weights, ends = _lattice.split_forward(
        logits, split, frame_valid, log_epsilon, True
    )
    assert weights is not None  # keep=True
    zeros = jnp.zeros_like(logits[:, 0])  # [B, K], sharded like the batch

    def on_frame(t, blank, label, valid, post):
        blank, label = _lattice.frame_posteriors(blank, label, valid)
        row = _lattice.add_class_posteriors(zeros, split, blank, label)
        return jax.lax.dynamic_update_index_in_dim(post, row, t, axis=1)

    return _lattice.smooth(
        weights, split.skip, frame_valid, *ends, on_frame, jnp.zeros_like(logits)
    )
