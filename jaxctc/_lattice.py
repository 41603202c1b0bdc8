"""The CTC lattice: the extended label sequence and its recursions.

Everything that walks the CTC lattice (the loss, its gradient, rescoring, forced
alignment) builds on this module, so a fix here lands everywhere at once.

The lattice of a label sequence ``y_1..y_U`` has ``S = 2N + 1`` extended states
per sequence (``N`` the padded label length)::

    s:      0     1     2     3    ...   2n-1   2n  ...
    label:  blank y_1   blank y_2  ...   y_n    blank

A path moves from state ``s`` at frame ``t - 1`` to ``s``, ``s + 1`` or, when
``s + 2`` is a label that differs from ``y`` at ``s``, to ``s + 2`` at frame
``t``. The recursions below run over frames with ``lax.scan`` and keep one
``[B, S]`` state; padded frames leave the state unchanged, so paddings may sit
anywhere in time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

# What a backward pass accumulates frame by frame (a pytree of arrays).
Acc = TypeVar("Acc")

# Fill for transitions that do not exist. It is finite so that the max-shifted
# log-sum-exp never sees ``-inf - -inf``; every real score stays far above it
# because emissions are clamped to ``log_epsilon`` (see ``frame_emissions``).
NEG = -1e30

# ----------------------------------------------------------------------------
# The extended label sequence
# ----------------------------------------------------------------------------


class Lattice(NamedTuple):
    """The extended label sequence of a batch.

    Attributes:
      states: ``[B, S]`` int32, the class of each extended state (blank at even
        ``s``, ``labels[:, (s - 1) // 2]`` at odd ``s``; padded labels read as
        blank so that every entry is a valid class index).
      skip: ``[B, S]`` bool, whether state ``s`` may be entered from ``s - 2``.
      final: ``[B, S]`` bool, the states a complete path ends in
        (``2U`` and ``2U - 1`` for ``U`` labels).
      num_labels: ``[B]`` int32, ``U`` per sequence.
    """

    states: jax.Array
    skip: jax.Array
    final: jax.Array
    num_labels: jax.Array


def build_lattice(
    labels: jax.Array, label_paddings: jax.Array, blank_id: int
) -> Lattice:
    """The ``Lattice`` of checked ``labels [B, N]`` and their paddings."""
    batch, n = labels.shape
    valid = label_paddings == 0
    num_labels = jnp.sum(valid, axis=1, dtype=jnp.int32)
    safe = jnp.where(valid, labels, blank_id)
    if safe.dtype.itemsize > 4:  # saturate, never wrap into a valid class
        info = np.iinfo(np.int32)
        safe = jnp.clip(safe, info.min, info.max)
    safe = safe.astype(jnp.int32)
    blanks = jnp.full((batch, n + 1), blank_id, jnp.int32)
    # Interleave without a scatter, so batch-sharded (Explicit) meshes work.
    pairs = jnp.stack([blanks[:, :-1], safe], axis=2).reshape(batch, 2 * n)
    states = jnp.concatenate([pairs, blanks[:, -1:]], axis=1)
    prev = _shift(states, 2, -1)
    s = jnp.arange(2 * n + 1, dtype=jnp.int32)
    skip = (s % 2 == 1)[None, :] & (states != prev) & (s >= 2)[None, :]
    u = num_labels[:, None]
    final = (s[None, :] == 2 * u) | (s[None, :] == 2 * u - 1)
    return Lattice(states, skip, final, num_labels)


def lattice_inputs(
    logit_paddings: jax.Array,
    labels: jax.Array,
    label_paddings: jax.Array,
    blank_id: int,
) -> tuple[Lattice, jax.Array]:
    """The batch's ``Lattice`` and ``frame_valid [T, B]`` (False on padded
    frames), what every recursion below takes."""
    lattice = build_lattice(labels, label_paddings, blank_id)
    return lattice, jnp.transpose(logit_paddings == 0)


class LogNorm(NamedTuple):
    """The log-normalizer :math:`\\log \\sum_k e^{x_k}` of rows of logits, in
    two parts: ``shift``, the row's largest logit (0 where that is not finite),
    and ``log_sum`` :math:`= \\log \\sum_k e^{x_k - \\mathrm{shift}}`, in
    ``[0, log K]`` (0 for a row of ``-inf``).

    The log-softmax is ``(x - shift) - log_sum`` (``apply``): ``x - shift`` is
    exact for the classes near the top, where subtracting the rounded sum
    ``shift + log_sum`` would lose half an ulp of ``shift`` per frame (0.004
    nats at logits of 1e5, 0.1-0.2 nats over 1000 frames; at 3e38 the whole
    ``log K``). A row of ``-inf`` logits so stays ``-inf`` (never NaN), which
    the emissions' floor then raises to ``log_epsilon``; NaN and ``+inf`` give
    NaN.
    """

    shift: jax.Array
    log_sum: jax.Array

    def apply(self, x: jax.Array) -> jax.Array:
        """``x`` minus the log-normalizer (``shift`` and ``log_sum`` broadcast)."""
        return (x - self.shift) - self.log_sum


def log_normalizer(x: jax.Array, axis: int = -1, keepdims: bool = False) -> LogNorm:
    """The ``LogNorm`` of ``x`` over ``axis``.

    The shift is a constant to differentiation (``stop_gradient``): the
    log-softmax does not depend on it, and autodiff through a ``max`` would
    split its cotangent at ties.
    """
    shift = jax.lax.stop_gradient(_shift_of(x, axis))
    log_sum = _log_sum(jnp.sum(jnp.exp(x - shift), axis=axis, keepdims=True))
    if not keepdims:
        shift, log_sum = jnp.squeeze(shift, axis), jnp.squeeze(log_sum, axis)
    return LogNorm(shift, log_sum)


def _shift_of(x: jax.Array, axis: int) -> jax.Array:
    """``LogNorm.shift`` of ``x`` over ``axis`` (kept as a dimension of 1)."""
    top = jnp.max(x, axis=axis, keepdims=True)
    return jnp.where(jnp.isfinite(top), top, 0.0)


def _log_sum(total: jax.Array) -> jax.Array:
    # A row of -inf sums to 0: log 1 = 0 keeps it -inf (and its gradient 0).
    return jnp.log(jnp.where(total == 0, 1.0, total))


def shifted_exps(x: jax.Array) -> tuple[jax.Array, LogNorm]:
    """``(e, log_norm)`` of logits ``x [B, T, K]``: ``e = exp(x - shift)``
    ``[B, T, K]`` and the ``LogNorm`` (``[B, T]`` parts), in one pass.

    The softmax is then ``e * exp(-log_sum)``: a caller that needs both the
    log-normalizer and the softmax (the loss's gradient at large ``K``) takes
    each ``exp`` once, in a pass that both cores share.
    """
    shift = _shift_of(x, 2)
    e = jnp.exp(x - shift)
    return e, LogNorm(shift[..., 0], _log_sum(jnp.sum(e, axis=2)))


def frame_emissions(
    logits: jax.Array, log_norm: LogNorm, states: jax.Array, log_epsilon: jax.Array
) -> Callable[[jax.Array], jax.Array]:
    """Per-frame emission scores, gathered inside the recursions.

    Returns ``emit(t) -> [B, S]``: ``log_norm.apply(logits[:, t, class(s)])``,
    the log-probability of each extended state's class at frame ``t``. It is a
    gather (not a one-hot matmul: that costs ``B*T*N*K`` and runs at reduced
    precision on accelerators), done frame by frame so that no ``[T, B, S]``
    array of emissions is ever stored. Values below ``log_epsilon`` (``-inf``
    from masked classes) are raised to it, so the recursions never meet
    ``-inf``.

    Args:
      logits: ``[B, T, K]`` scores.
      log_norm: ``[B, T]`` parts of their log-normalizer (see ``LogNorm``).
      states: ``[B, S]`` class of each extended state.
      log_epsilon: scalar floor.
    """

    def emit(t):
        x = jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)
        norm = frame_norm(log_norm, t)
        return jnp.maximum(
            norm.apply(jnp.take_along_axis(x, states, axis=1)), log_epsilon
        )

    return emit


def frame_norm(log_norm: LogNorm, t: jax.Array) -> LogNorm:
    """Frame ``t`` of ``[B, T]`` parts, as ``[B, 1]``."""
    return LogNorm(
        *(jax.lax.dynamic_index_in_dim(a, t, axis=1, keepdims=True) for a in log_norm)
    )


# ----------------------------------------------------------------------------
# Recursions
# ----------------------------------------------------------------------------
#
# Both recursions shift only their carried state (never a freshly computed
# value) and add the frame's emissions after the semiring sum: XLA:CPU then
# fuses a step into one vectorized loop, while shifting ``carry + emit`` makes
# it re-run the gather inside every shifted operand (6x slower, measured).
# ``unroll=1`` is deliberate too: unrolled bodies were 5-7x slower on CPU.


def _shift(x: jax.Array, k: int, fill: float | bool) -> jax.Array:
    """``y[..., s] = x[..., s - k]`` (k > 0) or ``x[..., s + |k|]`` (k < 0)."""
    size = x.shape[-1]
    pad = jnp.full(x.shape[:-1] + (min(abs(k), size),), fill, x.dtype)
    if abs(k) >= size:
        return pad
    if k > 0:
        return jnp.concatenate([pad, x[..., :-k]], axis=-1)
    return jnp.concatenate([x[..., -k:], pad], axis=-1)


# exp() of anything below this is dropped: its relative weight (< 2e-35) cannot
# change a float32 sum, and x86 slows down on the subnormals exp() returns for
# arguments in [-104, -87].
_EXP_FLOOR = -80.0


def _exp(x: jax.Array) -> jax.Array:
    return jnp.exp(jnp.maximum(x, _EXP_FLOOR))


def logsumexp3(a: jax.Array, b: jax.Array, c: jax.Array) -> jax.Array:
    """``log(e^a + e^b + e^c)`` for finite ``a`` (one max, three exps, one log)."""
    m = jnp.maximum(jnp.maximum(a, b), c)
    return m + jnp.log(_exp(a - m) + _exp(b - m) + _exp(c - m))


def max3(a: jax.Array, b: jax.Array, c: jax.Array) -> jax.Array:
    """The max-plus semiring's sum of three terms (Viterbi)."""
    return jnp.maximum(jnp.maximum(a, b), c)


Combine = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def initial_state(
    batch: int, size: int, log_epsilon: jax.typing.ArrayLike, dtype: DTypeLike
) -> jax.Array:
    """Scores before the first frame: a virtual start in state 0.

    Every other state starts at ``log_epsilon`` (the stand-in for log 0) rather
    than ``-inf``, as optax does, so the alphas returned match optax's even
    where no path reaches them.
    """
    init = jnp.full((batch, size), log_epsilon, dtype)
    return init.at[:, 0].set(0.0)


def forward(
    emit: Callable[[jax.Array], jax.Array],
    frame_valid: jax.Array,
    skip: jax.Array,
    init: jax.Array,
    combine: Combine = logsumexp3,
    keep: bool = True,
) -> tuple[jax.Array, jax.Array | None]:
    """Forward scores ``alpha[t, b, s]`` over frames (log or max-plus semiring).

    ``alpha_t(s) = combine(alpha_{t-1}(s), alpha_{t-1}(s-1), alpha_{t-1}(s-2)) +
    emit_t(s)``, the third term only where ``skip``; on padded frames
    ``alpha_t = alpha_{t-1}``.

    Args:
      emit: ``t -> [B, S]`` emission scores (see ``frame_emissions``).
      frame_valid: ``[T, B]`` bool, False on padded frames.
      skip: ``[B, S]`` bool.
      init: ``[B, S]`` scores before the first frame.
      combine: the semiring's sum of three terms.
      keep: also return every frame's scores (else ``None``).

    Returns:
      ``(last [B, S], alphas [T, B, S] or None)``: the scores after the last
      frame (``init`` when ``T = 0``) and after each frame, emission included.
    """

    if frame_valid.shape[0] == 0:  # no frame: the body would index nothing
        return init, (jnp.zeros((0,) + init.shape, init.dtype) if keep else None)

    def step(alpha, t):
        skipped = jnp.where(skip, _shift(alpha, 2, NEG), NEG)
        new = combine(alpha, _shift(alpha, 1, NEG), skipped) + emit(t)
        new = jnp.where(frame_valid[t][:, None], new, alpha)
        return new, (new if keep else None)

    return jax.lax.scan(step, init, jnp.arange(frame_valid.shape[0], dtype=jnp.int32))


def backward(
    emit: Callable[[jax.Array], jax.Array],
    frame_valid: jax.Array,
    skip: jax.Array,
    final: jax.Array,
    on_frame: Callable[[jax.Array, jax.Array, jax.Array, Acc], Acc],
    acc: Acc,
    dtype: DTypeLike,
) -> Acc:
    """Runs the backward recursion from the last frame to the first.

    Carries ``B_t(s)``, the log-probability of finishing the labelling from
    state ``s`` at frame ``t``, emission at ``t`` included. At each frame it
    calls ``acc = on_frame(t, beta, valid, acc)`` with ``beta [B, S]``, the same
    score with the emission at ``t`` excluded, so that
    ``alpha_t(s) + beta_t(s) - log Z`` is the log-posterior of state ``s``.

    The carry starts as a virtual state past the end (0 at ``s = 2U``, the
    last of ``final``; ``NEG`` elsewhere): one combine step turns it into exactly
    "0 at the final states ``2U - 1``, ``2U``". Padded frames leave it as is.

    Returns:
      The final ``acc``.
    """
    if frame_valid.shape[0] == 0:  # no frame: nothing to visit
        return acc
    last_final = final & ~_shift(final, -1, False)  # s = 2U
    init = jnp.where(last_final, 0.0, NEG).astype(dtype)
    skip_next = _shift(skip, -2, False)  # s -> s + 2 allowed

    def step(carry, t):
        scores, acc = carry
        skipped = jnp.where(skip_next, _shift(scores, -2, NEG), NEG)
        beta = logsumexp3(scores, _shift(scores, -1, NEG), skipped)
        valid = frame_valid[t][:, None]
        acc = on_frame(t, beta, valid, acc)
        scores = jnp.where(valid, beta + emit(t), scores)
        return (scores, acc), None

    (_, acc), _ = jax.lax.scan(
        step,
        (init, acc),
        jnp.arange(frame_valid.shape[0], dtype=jnp.int32),
        reverse=True,
    )
    return acc


def posterior(
    alpha: jax.Array, beta: jax.Array, log_z: jax.Array, valid: jax.Array
) -> jax.Array:
    """``P(state s at frame t | x)`` from log alpha/beta; 0 on padded frames."""
    z = alpha + beta - log_z[:, None]
    return jnp.where(valid & (z > _EXP_FLOOR), jnp.exp(z), 0.0)


def final_score(alpha_last: jax.Array, final: jax.Array) -> jax.Array:
    """log Z per sequence: log-sum of the last alphas over the final states."""
    return _final(alpha_last, final)[0]


def _final(alpha_last: jax.Array, final: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log Z [B], posteriors [B, S])`` from the last alphas: the log-sum over
    the final states, and each final state's share of it.

    The shares are normalized by their own sum, not by ``exp(-log Z)``: log Z
    carries the rounding of its size (up to 0.004 at 1e5, the loss of a
    sequence with no alignment), which put the shares' sum up to 0.4% off
    one (measured 0.27%).
    """
    masked = jnp.where(final, alpha_last, NEG)
    m = jnp.max(masked, axis=-1, keepdims=True)
    e = jnp.where(final, jnp.exp(masked - m), 0.0)
    total = jnp.sum(e, axis=-1, keepdims=True)
    return (m + jnp.log(total))[:, 0], e / total


def min_frames(labels: jax.Array, label_paddings: jax.Array) -> jax.Array:
    """Fewest frames that can carry each label sequence: ``U`` + repeats."""
    valid = label_paddings == 0
    num_labels = jnp.sum(valid, axis=1, dtype=jnp.int32)
    repeats = jnp.sum(
        valid[:, 1:] & (labels[:, 1:] == labels[:, :-1]), axis=1, dtype=jnp.int32
    )
    return num_labels + repeats


def alignable(logits: jax.Array, lattice: Lattice, frame_valid: jax.Array) -> jax.Array:
    """``[B]`` bool: whether some alignment has nonzero probability.

    That is, enough valid frames for the labels and their repeats, and a path
    whose every frame's class has a logit above ``-inf``. The loss cannot
    tell: it floors such emissions to ``log_epsilon``, and a long feasible
    sequence may score as low as one with no alignment. So the max-plus
    recursion runs on emissions of 0 (allowed) and ``NEG`` (a ``-inf``
    logit), from state 0: a reachable state holds exactly 0, any other state
    ``NEG`` or less.
    """

    def emit(t):
        x = jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)
        allowed = jnp.take_along_axis(x, lattice.states, axis=1) > -jnp.inf
        return jnp.where(allowed, 0.0, NEG).astype(logits.dtype)

    batch, size = lattice.states.shape
    init = initial_state(batch, size, NEG, logits.dtype)
    last, _ = forward(emit, frame_valid, lattice.skip, init, max3, keep=False)
    return jnp.max(jnp.where(lattice.final, last, NEG), axis=1) > 0.5 * NEG


# ----------------------------------------------------------------------------
# The gradient's recursions, in the split layout
# ----------------------------------------------------------------------------
#
# The loss's gradient needs the state posteriors, not the alphas. The forward
# pass below keeps, per frame, only how each state's incoming probability
# splits among its predecessors ("transition weights", in [0, 1]); the
# backward pass then moves the posterior mass from each frame to the previous
# one along those weights (a forward-filtering, backward-smoothing pass). That
# backward pass is a few multiply-adds per state, with no exp, no log and no
# emissions, and it works with probabilities in [0, 1], so it keeps float32
# precision where ``exp(alpha + beta - log Z)`` of two large log-scores
# cancels (measured 6-16x closer to the float64 gradient on random logits).
#
# Both use the split layout of optax: blank states ``[B, N + 1]`` (blank ``n``
# follows ``n`` labels) and label states ``[B, N]``; a shift by one label is
# then a contiguous shift, and the blank's emission is one value per row.


class SplitLattice(NamedTuple):
    """The lattice of ``Lattice`` in the split layout.

    Attributes:
      blank_id: ``[B, 1]`` int32, the blank class (read from ``states``).
      labels: ``[B, N]`` int32, the label classes (padding reads as blank).
      skip: ``[B, N]`` bool, whether label ``n`` may follow label ``n - 1``
        directly (no blank between).
      final_blank: ``[B, N + 1]`` bool, the final blank state (``n = U``).
      final_label: ``[B, N]`` bool, the final label state (``n = U - 1``).
    """

    blank_id: jax.Array
    labels: jax.Array
    skip: jax.Array
    final_blank: jax.Array
    final_label: jax.Array


def split(states: jax.Array, skip: jax.Array, final: jax.Array) -> SplitLattice:
    """The split layout of a ``Lattice``'s arrays."""
    return SplitLattice(
        states[:, :1], states[:, 1::2], skip[:, 1::2], final[:, 0::2], final[:, 1::2]
    )


class Weights(NamedTuple):
    """Per-frame transition weights ``[T, B, .]`` of the split lattice.

    ``blank[t, b, n]``: the share of blank ``n``'s incoming probability at
    frame ``t`` that comes from label ``n - 1`` (the rest stays in blank
    ``n``), i.e. ``alpha(label n-1) / (alpha(blank n) + alpha(label n-1))``
    at the previous frame. ``own[t, b, n]``: the share of label ``n``'s that
    stays in label ``n``. The rest of label ``n``'s comes from blank ``n`` and
    (where ``skip``) label ``n - 1``, in the ratio ``1 - blank : blank`` of
    the same two alphas, so two numbers per label suffice.
    """

    blank: jax.Array
    own: jax.Array


def split_emissions(
    logits: jax.Array,
    lattice: SplitLattice,
    log_epsilon: jax.Array,
    log_sum: jax.Array | None = None,
) -> Callable[[jax.Array], tuple[jax.Array, jax.Array, LogNorm]]:
    """``t -> (blank [B, 1], labels [B, N], log_norm)`` at frame ``t``.

    The log-probabilities of the blank and of each label, gathered per frame
    and raised to ``log_epsilon`` (see ``frame_emissions``), and the row's
    log-normalizer (a ``LogNorm`` of ``[B, 1]`` parts). Normalizing the row
    that the gather reads anyway saves a separate pass over the logits (10%
    of the forward pass at ``K = 1024``, measured).

    ``log_sum [B, T]``, when given, is ``LogNorm.log_sum`` of the logits,
    computed beforehand (see ``shifted_exps``): the row's ``exp``-sum is then
    not taken again. Its max still is: it is exact, so the same shift as the
    one ``log_sum`` was taken with, and reading the row for it brings the row
    into cache before the gathers (value_and_grad 160 -> 154 ms at (16, 1000,
    1024, 200) against gathering from memory, measured in one run).
    """

    def emit(t):
        x = jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)
        if log_sum is None:
            norm = log_normalizer(x, axis=1, keepdims=True)
        else:
            norm = LogNorm(
                jax.lax.stop_gradient(_shift_of(x, 1)),  # as in log_normalizer
                jax.lax.dynamic_index_in_dim(log_sum, t, axis=1, keepdims=True),
            )
        blank = norm.apply(jnp.take_along_axis(x, lattice.blank_id, axis=1))
        labels = norm.apply(jnp.take_along_axis(x, lattice.labels, axis=1))
        return jnp.maximum(blank, log_epsilon), jnp.maximum(labels, log_epsilon), norm

    return emit


def _logaddexp(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log(e^a + e^b), r)`` with ``r = e^(min - max)`` in ``[e^-80, 1]``.

    ``exp(min - max)`` rather than ``exp(-|a - b|)``: autodiff (grad_mode
    "autodiff") takes d|x|/dx = 1 at x = 0, which breaks exact ties
    (all-zero logits), where min and max split the cotangent evenly.
    ``log(1 + r)`` rather than ``log1p(r)``: XLA's log1p costs twice its log
    on CPU (3.9 vs 2.1 ns a value, measured), and rounding ``1 + r`` moves
    the result by at most half an ulp of 1, less than adding the emission
    to a log-alpha below -1 already does (losses on float64's to the same
    digits, measured down to losses of 4e-4).
    """
    top = jnp.maximum(a, b)
    r = _exp(jnp.minimum(a, b) - top)
    return top + jnp.log(1.0 + r), r


def forward_weights(
    emit: Callable[[jax.Array], tuple[jax.Array, jax.Array, LogNorm]],
    frame_valid: jax.Array,
    lattice: SplitLattice,
    log_epsilon: jax.Array,
    dtype: DTypeLike,
    keep: bool = True,
) -> tuple[jax.Array, jax.Array, Weights | None, LogNorm | None]:
    """The forward recursion (log space) that keeps transition weights.

    Args:
      emit: ``t -> (blank [B, 1], labels [B, N], log_norm)`` (see
        ``split_emissions``).
      frame_valid: ``[T, B]`` bool, ``T >= 1``.
      lattice: the split lattice.
      log_epsilon: the initial score of every state but blank 0 (as in
        ``initial_state``).
      dtype: the compute dtype.
      keep: return the weights and normalizers (else ``None``: the loss alone).

    Returns:
      ``(blank [B, N + 1], labels [B, N], weights, log_norm)``: the
      log-alphas after the last frame, the ``Weights`` of every frame
      (meaningless on padded frames, which leave the alphas unchanged) and
      every frame's log-normalizer (a ``LogNorm`` of ``[T, B]`` parts).
    """
    n = lattice.labels.shape[1]
    # Filled like the lattice's arrays, so that on a batch-sharded mesh the
    # carry, and every weight computed from it, is sharded like the batch.
    first = jnp.arange(n + 1) == 0
    blank0 = jnp.where(
        first, 0.0, jnp.full_like(lattice.final_blank, log_epsilon, dtype)
    )
    label0 = jnp.full_like(lattice.final_label, log_epsilon, dtype)

    def step(carry, t):
        blank, label = carry
        e_blank, e_label, norm = emit(t)
        # Blank n: from itself and from label n - 1; their log-sum `into`
        # is also what label n gets from outside itself where it may skip
        # (blank n + label n - 1), so a label costs one exp and one log, not
        # three exps and a log (forward 33 -> 25 ms at (32, 500, 29, 100)).
        prev = jnp.concatenate([jnp.full_like(blank[:, :1], NEG), label], axis=1)
        into, ratio = _logaddexp(blank, prev)
        new_blank = into + e_blank
        # Label n: from itself and from blank n (+ label n - 1 if allowed).
        other = jnp.where(lattice.skip, into[:, :n], blank[:, :n])
        total, own_ratio = _logaddexp(label, other)
        new_label = total + e_label
        valid = frame_valid[t][:, None]
        new_blank = jnp.where(valid, new_blank, blank)
        new_label = jnp.where(valid, new_label, label)
        if not keep:
            return (new_blank, new_label), None
        weights = Weights(
            jnp.where(prev > blank, 1.0, ratio) / (1.0 + ratio),
            jnp.where(label >= other, 1.0, own_ratio) / (1.0 + own_ratio),
        )
        return (new_blank, new_label), (weights, jax.tree.map(lambda a: a[:, 0], norm))

    steps = jnp.arange(frame_valid.shape[0], dtype=jnp.int32)
    (blank, label), kept = jax.lax.scan(step, (blank0, label0), steps)
    if not keep:
        return blank, label, None, None
    weights, log_norm = kept
    return blank, label, weights, log_norm


def smooth(
    weights: Weights,
    skip: jax.Array,
    frame_valid: jax.Array,
    blank: jax.Array,
    label: jax.Array,
    on_frame: Callable[[jax.Array, jax.Array, jax.Array, jax.Array, Acc], Acc],
    acc: Acc,
) -> Acc:
    """Moves the state posteriors back from the last frame to the first.

    ``skip [B, N]`` is the split lattice's. Starts from the posteriors
    ``blank [B, N + 1]``, ``label [B, N]`` at each
    sequence's last valid frame; at every frame ``t`` (last to first) calls
    ``acc = on_frame(t, blank, label, valid, acc)`` with that frame's posteriors,
    then, on valid frames, hands each state's mass to its predecessors in
    proportion to the frame's weights. The mass per frame stays one (up to
    rounding): nothing is exponentiated or normalized.

    Returns:
      The final ``acc``.
    """

    def step(carry, t):
        blank, label, acc = carry
        valid = frame_valid[t][:, None]
        acc = on_frame(t, blank, label, valid, acc)
        w_blank, own = weights.blank[t], weights.own[t]
        # Label n's moved mass (1 - own) splits into blank n (1 - w_skip) and
        # label n - 1 (w_skip). Each output below recomputes its products
        # rather than sharing them: shared intermediates become separate,
        # materialized XLA fusions (measured 1.6x slower).
        w_skip = jnp.where(skip, w_blank[:, :-1], 0.0)
        moved = 1.0 - own
        new_blank = blank * (1.0 - w_blank) + jnp.concatenate(
            [moved * (1.0 - w_skip) * label, jnp.zeros_like(blank[:, :1])], axis=1
        )
        new_label = (
            label * own
            + w_blank[:, 1:] * blank[:, 1:]
            + _shift(w_skip * moved * label, -1, 0.0)
        )
        blank = jnp.where(valid, new_blank, blank)
        label = jnp.where(valid, new_label, label)
        return (blank, label, acc), None

    steps = jnp.arange(frame_valid.shape[0], dtype=jnp.int32)
    (_, _, acc), _ = jax.lax.scan(step, (blank, label, acc), steps, reverse=True)
    return acc


def final_posteriors(
    blank: jax.Array, label: jax.Array, lattice: SplitLattice
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(log Z [B], blank [B, N + 1], label [B, N])``: the log-probability and
    the state posteriors at the last frame, from the last log-alphas."""
    log_z, post = _final(
        jnp.concatenate([blank, label], axis=1),
        jnp.concatenate([lattice.final_blank, lattice.final_label], axis=1),
    )
    return log_z, post[:, : blank.shape[1]], post[:, blank.shape[1] :]


def split_forward(
    logits: jax.Array,
    lattice: SplitLattice,
    frame_valid: jax.Array,
    log_epsilon: jax.Array,
    keep: bool,
    log_sum: jax.Array | None = None,
) -> tuple[jax.Array, LogNorm | None, Weights | None, tuple[jax.Array, jax.Array]]:
    """The split layout's forward pass (``T >= 1``), for the loss, its
    gradient and the posteriors; ``log_sum [B, T]``, when given, is the
    logits' ``LogNorm.log_sum`` (see ``split_emissions``).

    Returns:
      ``(log_z [B], log_norm, weights, ends)``: the log-probability of the
      labels, the frames' log-normalizer (``[T, B]`` parts) and the
      transition ``Weights`` (both None unless ``keep``), and the state
      posteriors at the last frame, ``(blank [B, N + 1], label [B, N])``.
    """
    emit = split_emissions(logits, lattice, log_epsilon, log_sum)
    blank, label, weights, log_norm = forward_weights(
        emit, frame_valid, lattice, log_epsilon, logits.dtype, keep
    )
    log_z, end_blank, end_label = final_posteriors(blank, label, lattice)
    return log_z, log_norm, weights, (end_blank, end_label)


def frame_posteriors(
    blank: jax.Array, label: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """A frame's blank total ``[B]`` and label posteriors ``[B, N]`` from its
    state posteriors, zero on padded frames (``valid [B, 1]``)."""
    return (
        jnp.where(valid[:, 0], jnp.sum(blank, axis=1), 0.0),
        jnp.where(valid, label, 0.0),
    )


def add_class_posteriors(
    row: jax.Array, lattice: SplitLattice, blank: jax.Array, label: jax.Array
) -> jax.Array:
    """``row [B, K]`` plus a frame's class posteriors: the label posteriors
    ``label [B, N]`` at their classes, the blank total ``blank [B]`` at the
    blank (see ``frame_posteriors``)."""
    # Scatter per sequence (vmapped), so that a batch-sharded input keeps
    # every row on its own device: a batched scatter all-gathers.
    return jax.vmap(lambda r, k, y, g, b: r.at[y].add(g).at[k].add(b))(
        row, lattice.blank_id[:, 0], lattice.labels, label, blank
    )
