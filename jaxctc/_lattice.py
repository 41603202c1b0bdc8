"""The CTC lattice: input checks, the extended label sequence and its recursions.

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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Fill for transitions that do not exist. It is finite so that the max-shifted
# log-sum-exp never sees ``-inf - -inf``; every real score stays far above it
# because emissions are clamped to ``log_epsilon`` (see ``emissions``).
NEG = -1e30

# The lowest `log_epsilon` accepted: T frames of it stay far above NEG.
MIN_LOG_EPSILON = -1e20


# ----------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------


def known(x) -> bool | None:
    """``bool(x)`` when its value is known now, else None.

    Values are known outside ``jit``, also under an eager ``jax.grad`` (its
    tracers carry concrete values), and not while tracing ``jit`` or ``vmap``.
    """
    try:
        return bool(x)
    except jax.errors.ConcretizationTypeError:
        return None


def require(ok, message: str, checked: bool = False):
    """Raises ``ValueError(message)`` where ``ok`` is known to be False.

    When ``ok`` is not known (under ``jit``): a ``checkify`` check with
    ``checked=True`` (the caller wraps the call in
    ``jax.experimental.checkify.checkify``), else nothing.
    """
    value = known(ok)
    if value is None:
        if checked:
            from jax.experimental import checkify

            checkify.check(ok, message)
    elif not value:
        raise ValueError(message)


def compute_dtype(dtype) -> jnp.dtype:
    """float64 stays float64; every other float (bf16, f16, f32) runs in f32."""
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`logits` must be a float array, got dtype {dtype}.")
    # Not jnp.promote_types: under strict dtype promotion it refuses f64 + f32.
    return jnp.dtype(jnp.float64 if dtype == jnp.float64 else jnp.float32)


def check_logits(logits, logit_paddings):
    """Static checks for ``logits [B, T, K]`` and ``logit_paddings [B, T]``."""
    logits = jnp.asarray(logits)
    logit_paddings = jnp.asarray(logit_paddings)
    if logits.ndim != 3:
        raise ValueError(
            f"`logits` must have rank 3 [B, T, K], got shape {logits.shape}."
        )
    compute_dtype(logits.dtype)
    if logit_paddings.shape != logits.shape[:2]:
        raise ValueError(
            "`logit_paddings` must have shape [B, T] = "
            f"{logits.shape[:2]}, got {logit_paddings.shape}."
        )
    if logits.shape[2] < 1:
        raise ValueError("`logits` must have at least one class (K >= 1).")
    return logits, logit_paddings


def check_labels(
    labels,
    label_paddings,
    batch_size=None,
    name="labels",
    paddings_name="label_paddings",
    batch_from="logits",
):
    """Static checks for integer ``labels [B, N]`` and their paddings.

    ``batch_size`` (when given) is the ``B`` the labels must have, that of
    the argument ``batch_from``; ``name`` and ``paddings_name`` are the
    argument names the errors show.
    """
    labels = jnp.asarray(labels)
    label_paddings = jnp.asarray(label_paddings)
    if labels.ndim != 2:
        raise ValueError(f"`{name}` must have rank 2 [B, N], got shape {labels.shape}.")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"`{name}` must be an integer array, got dtype {labels.dtype}.")
    if label_paddings.shape != labels.shape:
        raise ValueError(
            f"`{paddings_name}` must have the shape of `{name}` {labels.shape}, "
            f"got {label_paddings.shape}."
        )
    if batch_size is not None and labels.shape[0] != batch_size:
        raise ValueError(
            f"`{name}` must have batch size B = {batch_size} (from `{batch_from}`), "
            f"got shape {labels.shape}."
        )
    # Narrow ints widen to int32 (lossless); wider ones keep their dtype, so
    # that the range checks see an int64 label as it is (not wrapped).
    if labels.dtype.itemsize < 4:
        labels = labels.astype(jnp.int32)
    return labels, label_paddings


def check_blank_id(blank_id, num_classes: int) -> int:
    if not isinstance(blank_id, (int, np.integer)) or isinstance(blank_id, bool):
        raise TypeError(f"`blank_id` must be a Python int, got {blank_id!r}.")
    if not 0 <= blank_id < num_classes:
        raise ValueError(
            f"`blank_id` must be in [0, K) = [0, {num_classes}), got {blank_id}."
        )
    return int(blank_id)


def check_bool(name, value):
    """A static flag: a Python bool (an array would be traced under ``jit``)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a Python bool, got {value!r}.")
    return bool(value)


def zeros_and_ones(paddings):
    """Whether ``paddings`` hold only 0 and 1 (NaN is neither; bools do)."""
    if paddings.dtype == jnp.bool_:
        return jnp.asarray(True)
    return jnp.all((paddings == 0) | (paddings == 1))


def check_paddings(paddings, name: str, checked: bool = False):
    require(zeros_and_ones(paddings), f"`{name}` must contain only 0 and 1.", checked)


def check_finite_logits(logits, checked: bool = False):
    """NaN and ``+inf`` logits raise; ``-inf`` (a masked class) is allowed."""
    require(~jnp.any(jnp.isnan(logits)), "`logits` contain NaN.", checked)
    require(
        ~jnp.any(logits == jnp.inf),
        "`logits` contain +inf: only finite values and -inf (a masked class) "
        "are allowed.",
        checked,
    )


def check_values(logits, logit_paddings, labels, label_paddings, blank_id, checked):
    """Raises ``ValueError`` for bad values where they are known.

    That is outside ``jit``, also under an eager ``jax.grad``; under ``jit``,
    with ``checked=True``, the same conditions become ``checkify`` checks
    (wrap the call in ``jax.experimental.checkify.checkify``); otherwise they
    are not checked. Labels are compared in their own dtype, so an int64
    label outside ``[0, K)`` is caught rather than wrapped.
    """
    num_classes = logits.shape[2]
    valid = label_paddings == 0
    check_paddings(logit_paddings, "logit_paddings", checked)
    check_paddings(label_paddings, "label_paddings", checked)
    require(
        jnp.all(label_paddings[:, 1:] >= label_paddings[:, :-1]),
        "`label_paddings` must be right-padded: each row zeros, then ones.",
        checked,
    )
    require(
        ~jnp.any(valid & (labels == blank_id)),
        f"`labels` must not contain `blank_id` ({blank_id}) outside the padding.",
        checked,
    )
    require(
        ~jnp.any(valid & ((labels < 0) | (labels >= num_classes))),
        f"`labels` must lie in [0, K) = [0, {num_classes}) outside the padding.",
        checked,
    )
    check_finite_logits(logits, checked)


def check_log_epsilon(log_epsilon, dtype, checked: bool = False):
    """``log_epsilon`` as a scalar of ``dtype``; it must be finite and negative.

    It stands for log 0: at 0 or above, every emission would be floored to
    it (loss 0 for any input); -inf or NaN would reach the recursions. Below
    -1e20, ``T`` frames of it could reach the lattice's ``NEG`` fill.
    """
    log_epsilon = jnp.asarray(log_epsilon, dtype)
    if log_epsilon.ndim != 0:
        raise ValueError(
            f"`log_epsilon` must be a scalar, got shape {log_epsilon.shape}."
        )
    try:
        shown = f", got {float(log_epsilon)}"
    except jax.errors.ConcretizationTypeError:  # traced: shown by checkify
        shown = ""
    require(
        (log_epsilon < 0) & (log_epsilon >= MIN_LOG_EPSILON),
        f"`log_epsilon` must be finite and negative, in [{MIN_LOG_EPSILON:g}, 0)"
        f"{shown}.",
        checked,
    )
    return log_epsilon


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


def build_lattice(labels, label_paddings, blank_id: int) -> Lattice:
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

    def apply(self, x):
        """``x`` minus the log-normalizer (``shift`` and ``log_sum`` broadcast)."""
        return (x - self.shift) - self.log_sum


def log_normalizer(x, axis: int = -1, keepdims: bool = False) -> LogNorm:
    """The ``LogNorm`` of ``x`` over ``axis``.

    The shift is a constant to differentiation (``stop_gradient``): the
    log-softmax does not depend on it, and autodiff through a ``max`` would
    split its cotangent at ties.
    """
    top = jnp.max(x, axis=axis, keepdims=True)
    shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
    total = jnp.sum(jnp.exp(x - shift), axis=axis, keepdims=True)
    # A row of -inf sums to 0: log 1 = 0 keeps it -inf (and its gradient 0).
    log_sum = jnp.log(jnp.where(total == 0, 1.0, total))
    if not keepdims:
        shift, log_sum = jnp.squeeze(shift, axis), jnp.squeeze(log_sum, axis)
    return LogNorm(shift, log_sum)


def frame_emissions(logits, log_norm: LogNorm, states, log_epsilon):
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


def frame_norm(log_norm: LogNorm, t) -> LogNorm:
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


def _shift(x, k: int, fill):
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


def _exp(x):
    return jnp.exp(jnp.maximum(x, _EXP_FLOOR))


def logsumexp3(a, b, c):
    """``log(e^a + e^b + e^c)`` for finite ``a`` (one max, three exps, one log)."""
    m = jnp.maximum(jnp.maximum(a, b), c)
    return m + jnp.log(_exp(a - m) + _exp(b - m) + _exp(c - m))


def max3(a, b, c):
    return jnp.maximum(jnp.maximum(a, b), c)


Combine = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def initial_state(batch: int, size: int, log_epsilon, dtype):
    """Scores before the first frame: a virtual start in state 0.

    Every other state starts at ``log_epsilon`` (log of "impossible") rather
    than ``-inf``, as optax does, so the alphas returned match optax's even
    where no path reaches them.
    """
    init = jnp.full((batch, size), log_epsilon, dtype)
    return init.at[:, 0].set(0.0)


def forward(emit, frame_valid, skip, init, combine: Combine = logsumexp3, keep=True):
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


def backward(emit, frame_valid, skip, final, on_frame, acc, dtype):
    """Runs the backward recursion from the last frame to the first.

    Carries ``B_t(s)``, the log-probability of finishing the labelling from
    state ``s`` at frame ``t``, emission at ``t`` included. At each frame it
    calls ``acc = on_frame(t, beta, ok, acc)`` with ``beta [B, S]``, the same
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
        ok = frame_valid[t][:, None]
        acc = on_frame(t, beta, ok, acc)
        scores = jnp.where(ok, beta + emit(t), scores)
        return (scores, acc), None

    (_, acc), _ = jax.lax.scan(
        step,
        (init, acc),
        jnp.arange(frame_valid.shape[0], dtype=jnp.int32),
        reverse=True,
    )
    return acc


def posterior(alpha, beta, log_z, ok):
    """``P(state s at frame t | x)`` from log alpha/beta; 0 on padded frames."""
    z = alpha + beta - log_z[:, None]
    return jnp.where(ok & (z > _EXP_FLOOR), jnp.exp(z), 0.0)


def final_score(alpha_last, final):
    """log Z per sequence: log-sum of the last alphas over the final states."""
    return _final(alpha_last, final)[0]


def _final(alpha_last, final):
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


def min_frames(labels, label_paddings):
    """Fewest frames that can carry each label sequence: ``U`` + repeats."""
    valid = label_paddings == 0
    num_labels = jnp.sum(valid, axis=1, dtype=jnp.int32)
    repeats = jnp.sum(
        valid[:, 1:] & (labels[:, 1:] == labels[:, :-1]), axis=1, dtype=jnp.int32
    )
    return num_labels + repeats


def reachable(logits, lattice: Lattice, frame_valid):
    """``[B]`` bool: whether some alignment has nonzero probability.

    That is, enough valid frames for the labels and their repeats, and a path
    whose every frame's class has a logit above ``-inf``. The loss cannot
    tell: it floors such emissions to ``log_epsilon``, and a long feasible
    sequence may score as low as an impossible one. So the max-plus
    recursion runs on emissions of 0 (allowed) and ``NEG`` (a ``-inf``
    logit), from state 0: a reachable state holds exactly 0, any other state
    ``NEG`` or less.
    """

    def emit(t):
        x = jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)
        allowed = jnp.take_along_axis(x, lattice.states, axis=1) > -jnp.inf
        return jnp.where(allowed, 0.0, NEG).astype(logits.dtype)

    init = initial_state(*lattice.states.shape, NEG, logits.dtype)
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


def split(states, skip, final) -> SplitLattice:
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


def split_emissions(logits, lattice: SplitLattice, log_epsilon):
    """``t -> (blank [B, 1], labels [B, N], log_norm)`` at frame ``t``.

    The log-probabilities of the blank and of each label, gathered per frame
    and raised to ``log_epsilon`` (see ``frame_emissions``), and the row's
    log-normalizer (a ``LogNorm`` of ``[B, 1]`` parts). Normalizing the row
    that the gather reads anyway saves a separate pass over the logits (10%
    of the forward pass at ``K = 1024``, measured).
    """

    def emit(t):
        x = jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)
        norm = log_normalizer(x, axis=1, keepdims=True)
        blank = norm.apply(jnp.take_along_axis(x, lattice.blank_id, axis=1))
        labels = norm.apply(jnp.take_along_axis(x, lattice.labels, axis=1))
        return jnp.maximum(blank, log_epsilon), jnp.maximum(labels, log_epsilon), norm

    return emit


def _logaddexp(a, b):
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
    emit, frame_valid, lattice: SplitLattice, log_epsilon, dtype, keep=True
):
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
        ok = frame_valid[t][:, None]
        new_blank = jnp.where(ok, new_blank, blank)
        new_label = jnp.where(ok, new_label, label)
        if not keep:
            return (new_blank, new_label), None
        weights = Weights(
            jnp.where(prev > blank, 1.0, ratio) / (1.0 + ratio),
            jnp.where(label >= other, 1.0, own_ratio) / (1.0 + own_ratio),
        )
        return (new_blank, new_label), (weights, jax.tree.map(lambda a: a[:, 0], norm))

    steps = jnp.arange(frame_valid.shape[0], dtype=jnp.int32)
    (blank, label), kept = jax.lax.scan(step, (blank0, label0), steps)
    return (blank, label) + (kept if keep else (None, None))


def smooth(weights: Weights, skip, frame_valid, blank, label, on_frame, acc):
    """Moves the state posteriors back from the last frame to the first.

    ``skip [B, N]`` is the split lattice's. Starts from the posteriors
    ``blank [B, N + 1]``, ``label [B, N]`` at each
    sequence's last valid frame; at every frame ``t`` (last to first) calls
    ``acc = on_frame(t, blank, label, ok, acc)`` with that frame's posteriors,
    then, on valid frames, hands each state's mass to its predecessors in
    proportion to the frame's weights. The mass per frame stays one (up to
    rounding): nothing is exponentiated or normalized.

    Returns:
      The final ``acc``.
    """

    def step(carry, t):
        blank, label, acc = carry
        ok = frame_valid[t][:, None]
        acc = on_frame(t, blank, label, ok, acc)
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
        blank = jnp.where(ok, new_blank, blank)
        label = jnp.where(ok, new_label, label)
        return (blank, label, acc), None

    steps = jnp.arange(frame_valid.shape[0], dtype=jnp.int32)
    (_, _, acc), _ = jax.lax.scan(step, (blank, label, acc), steps, reverse=True)
    return acc


def final_posteriors(blank, label, lattice: SplitLattice):
    """``(log Z [B], blank [B, N + 1], label [B, N])``: the log-probability and
    the state posteriors at the last frame, from the last log-alphas."""
    log_z, post = _final(
        jnp.concatenate([blank, label], axis=1),
        jnp.concatenate([lattice.final_blank, lattice.final_label], axis=1),
    )
    return log_z, post[:, : blank.shape[1]], post[:, blank.shape[1] :]
