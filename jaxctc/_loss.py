"""The CTC loss, its forward variables, and its closed-form gradient."""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jaxctc import _checks, _lattice

Reduction = Literal["none", "sum", "mean", "mean_by_label_length"]
GradMode = Literal["posterior", "autodiff"]

# Up to this many classes, the label posteriors are kept from the backward
# scan and subtracted from the gradient after it, in one scatter; above it,
# the per-frame path of smoothed_gradient is cheaper: value_and_grad at (32,
# 500, K, 100) with the after-scan path for every K took 54.9 vs 51.1 ms at
# K = 128 and 76.1 vs 62.5 ms at K = 256 (measured). The one scatter after
# the scan replaced a masked sum over the labels (B*T*N*K multiply-adds):
# value_and_grad 0.85-0.90 of the time at K = 29 (0.94-0.99 in a noisier
# run), 0.95-0.97 at K = 64, 0.97-1.01 at K = 8 (measured on padded,
# full-length and peaky batches); a matmul of the labels' one-hot mask was
# no faster than that sum.
_AFTER_SCAN_MAX_CLASSES = 64


def _forward(logits, states, skip, final, frame_valid, log_epsilon, keep):
    """``-log P(y | x)`` ``[B]``, the alphas ``[T, B, S]`` (or None) and the
    log-normalizer of the logits (a ``LogNorm`` of ``[B, T]`` parts)."""
    log_norm = _lattice.log_normalizer(logits)
    emit = _lattice.frame_emissions(logits, log_norm, states, log_epsilon)
    batch, size = states.shape
    init = _lattice.initial_state(batch, size, log_epsilon, logits.dtype)
    last, alphas = _lattice.forward(emit, frame_valid, skip, init, keep=keep)
    return -_lattice.final_score(last, final), alphas, log_norm


def _nll_and_alphas(logits, states, skip, final, frame_valid, log_epsilon):
    nll, alphas, _ = _forward(
        logits, states, skip, final, frame_valid, log_epsilon, True
    )
    return nll, alphas


def _split_forward(
    logits, states, skip, final, frame_valid, log_epsilon, keep, log_sum=None
):
    """``(nll [B], log_norm, weights, ends)`` of ``_lattice.split_forward``,
    from the lattice arrays the custom VJPs take."""
    lattice = _lattice.split(states, skip, final)
    log_z, log_norm, weights, ends = _lattice.split_forward(
        logits, lattice, frame_valid, log_epsilon, keep, log_sum
    )
    return -log_z, log_norm, weights, ends


def _nll(logits, states, skip, final, frame_valid, log_epsilon):
    args = (logits, states, skip, final, frame_valid, log_epsilon)
    if frame_valid.shape[0] == 0:  # no frame: the alphas' path handles it
        return _forward(*args, False)[0]
    if logits.shape[2] > _AFTER_SCAN_MAX_CLASSES:
        # At large K the rows' exp-sums run faster as one pass before the
        # scan, on both cores, than row by row inside it: the loss 0.76-0.84
        # of the time at (8, 100, 6625, 30), 0.89-0.96 at (16, 1000, 1024,
        # 200), 0.94-1.03 at (16, 64, 18000, 20), in two runs (the same
        # values).
        log_sum = _lattice.log_normalizer(logits).log_sum
        return _split_forward(*args, False, log_sum=log_sum)[0]
    return _split_forward(*args, False)[0]


def posterior_gradient(
    logits, log_norm, states, skip, final, frame_valid, log_epsilon, alphas, nll, scale
):
    """``scale[b] * d nll_b / d logits[b]`` ``[B, T, K]``, one frame at a time.

    With ``gamma[t, b, s]`` the posterior of state ``s`` at frame ``t``
    (``alpha * beta / Z``) and ``p = softmax(logits)``,

        d(-log Z) / d logits[b, t, k] = valid[b, t] * p[b, t, k]
                                        - sum_{s: class(s) = k} gamma[t, b, s],

    because d(-log Z) / d log p[b, t, k] is minus the class posterior and a
    valid frame's posteriors sum to one (padded frames get 0). The backward
    recursion writes each frame's row straight into the ``[B, T, K]`` result,
    so no ``[T, B, S]`` posterior array is stored. Emissions clamped to
    ``log_epsilon`` (``-inf`` logits) keep the formula finite: ``p`` is 0
    there and the posteriors are finite.
    """
    emit = _lattice.frame_emissions(logits, log_norm, states, log_epsilon)
    log_z = -nll

    def on_frame(t, beta, valid, grad):
        x = jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)
        norm = _lattice.frame_norm(log_norm, t)
        gamma = _lattice.posterior(alphas[t], beta, log_z, valid)
        row = jnp.where(valid, jnp.exp(norm.apply(x)), 0.0)
        # Scatter per sequence (vmapped), so that a batch-sharded input keeps
        # every row on its own device: a batched scatter all-gathers.
        row = jax.vmap(lambda r, s, g: r.at[s].add(g))(row, states, -gamma)
        return jax.lax.dynamic_update_index_in_dim(
            grad, row * scale[:, None], t, axis=1
        )

    return _lattice.backward(
        emit,
        frame_valid,
        skip,
        final,
        on_frame,
        jnp.zeros_like(logits),
        logits.dtype,
    )


# The loss alone (ctc_loss): its primal pass keeps nothing; the forward pass
# of reverse mode keeps the split lattice's transition weights ([T, B, N + 1]
# and [T, B, N]), and the backward pass carries the posteriors back along
# them (smoothed_gradient). With no frame (T = 0) the alphas' path runs.
@jax.custom_vjp
def _nll_posterior(logits, states, skip, final, frame_valid, log_epsilon):
    return _nll(logits, states, skip, final, frame_valid, log_epsilon)


def _gradient_from(res, g):
    """The posterior gradient from the forward pass's residuals."""
    args, log_norm, alphas, nll = res
    logits, states, skip, final, frame_valid, log_epsilon = args
    return posterior_gradient(
        logits, log_norm, states, skip, final, frame_valid, log_epsilon, alphas, nll, g
    )


class _Exps(NamedTuple):
    """The gradient's softmax at large ``K``, as ``exps * exp(-log_sum)``
    (see ``_lattice.shifted_exps``): ``exps [B, T, K]``, ``log_sum [B, T]``."""

    exps: jax.Array
    log_sum: jax.Array


def smoothed_gradient(logits, norm, lattice, frame_valid, weights, ends, scale):
    """``scale[b] * d nll_b / d logits[b]`` ``[B, T, K]`` from transition weights.

    The same gradient as ``posterior_gradient`` (``softmax`` minus the class
    posteriors), with the state posteriors carried back frame by frame along
    the forward pass's ``weights`` (see ``_lattice.smooth``) instead of being
    rebuilt from alphas and betas. ``ends`` are the posteriors at the last
    frame, ``(blank [B, N + 1], label [B, N])``. ``norm`` is the forward
    pass's ``LogNorm`` (``[T, B]`` parts) up to ``_AFTER_SCAN_MAX_CLASSES``
    classes, its ``_Exps`` above.
    """
    if logits.shape[2] <= _AFTER_SCAN_MAX_CLASSES:
        return _gradient_after_scan(
            logits, norm, lattice, frame_valid, weights, ends, scale
        )

    # The forward pass took the exps of the softmax in one pass over
    # [B, T, K] that both cores share; the scan scales each frame's row of
    # them into the softmax and subtracts the frame's class posteriors, in
    # place, so that array becomes the result (no zero fill, no second exp:
    # value_and_grad 174 -> 154 ms at (16, 1000, 1024, 200), measured).
    inverse = jnp.exp(-norm.log_sum)  # [B, T]

    def on_frame(t, blank, label, valid, grad):
        row = jax.lax.dynamic_index_in_dim(grad, t, axis=1, keepdims=False)
        factor = jax.lax.dynamic_index_in_dim(inverse, t, axis=1, keepdims=True)
        row = row * jnp.where(valid, factor, 0.0)
        blank, label = _lattice.frame_posteriors(blank, label, valid)
        row = _lattice.add_class_posteriors(row, lattice, -blank, -label)
        return jax.lax.dynamic_update_index_in_dim(
            grad, row * scale[:, None], t, axis=1
        )

    end_blank, end_label = ends
    return _lattice.smooth(
        weights, lattice.skip, frame_valid, end_blank, end_label, on_frame, norm.exps
    )


def _gradient_after_scan(logits, log_norm, lattice, frame_valid, weights, ends, scale):
    """``smoothed_gradient`` for small ``K``: the scan keeps the posteriors of
    the labels ``[T, B, N]`` and the blanks' totals ``[T, B]``; afterwards the
    blanks' totals are subtracted from the softmax at the blank, and the
    labels' posteriors at their classes, in one scatter per sequence."""
    classes = logits.shape[2]

    def on_frame(t, blank, label, valid, kept):
        labels, blanks = kept
        blank, label = _lattice.frame_posteriors(blank, label, valid)
        return (
            jax.lax.dynamic_update_index_in_dim(labels, label, t, axis=0),
            jax.lax.dynamic_update_index_in_dim(blanks, blank, t, axis=0),
        )

    # Zeros shaped like (and sharded like) the weights: [T, B, N] and [T, B]
    # (a sum's shape, not a slice's: N may be 0; the sum itself is not run).
    kept = (jnp.zeros_like(weights.own), jnp.zeros_like(jnp.sum(weights.own, 2)))
    end_blank, end_label = ends
    labels, blanks = _lattice.smooth(
        weights, lattice.skip, frame_valid, end_blank, end_label, on_frame, kept
    )
    k = jnp.arange(classes, dtype=jnp.int32)
    is_blank = k[None, None, :] == lattice.blank_id[:, :, None]  # [B, 1, K]
    blank_sums = jnp.where(is_blank, jnp.transpose(blanks)[:, :, None], 0.0)
    norm = jax.tree.map(lambda a: jnp.transpose(a)[:, :, None], log_norm)
    softmax = jnp.exp(norm.apply(logits))
    valid = jnp.transpose(frame_valid)[:, :, None]
    grad = jnp.where(valid, softmax - blank_sums, 0.0)
    # Per sequence (vmapped), so that a batch-sharded input keeps every row
    # on its own device (a batched scatter all-gathers). Padded frames hold
    # label posteriors of 0.
    grad = jax.vmap(lambda g, y, p: g.at[:, y].add(-p))(
        grad, lattice.labels, jnp.transpose(labels, (1, 0, 2))
    )
    return grad * scale[:, None, None]


def _nll_fwd(logits, states, skip, final, frame_valid, log_epsilon):
    args = (logits, states, skip, final, frame_valid, log_epsilon)
    if frame_valid.shape[0] == 0:  # no frame: the alphas' path handles it
        nll, alphas, log_norm = _forward(*args, keep=True)
        return nll, (args, log_norm, alphas, nll)
    if logits.shape[2] > _AFTER_SCAN_MAX_CLASSES:  # see smoothed_gradient
        exps, log_norm = _lattice.shifted_exps(logits)
        nll, _, weights, ends = _split_forward(
            *args, keep=True, log_sum=log_norm.log_sum
        )
        return nll, (args, _Exps(exps, log_norm.log_sum), weights, ends)
    nll, log_norm, weights, ends = _split_forward(*args, keep=True)
    return nll, (args, log_norm, weights, ends)


def _nll_bwd(res, g):
    args, log_norm, weights, ends = res
    if isinstance(weights, _lattice.Weights):
        logits, _, _, _, frame_valid, _ = args
        lattice = _lattice.split(*args[1:4])
        grad = smoothed_gradient(
            logits, log_norm, lattice, frame_valid, weights, ends, g
        )
    else:
        grad = _gradient_from(res, g)
    return grad, None, None, None, None, None


_nll_posterior.defvjp(_nll_fwd, _nll_bwd)


# The loss with its alphas (ctc_loss_with_forward_probs): the alphas are kept
# anyway, so the loss's cotangent takes the alpha-beta posterior gradient
# (posterior_gradient); a cotangent on the alphas themselves (rare) falls back
# to autodiff through the scan, recomputed in the backward pass.
@jax.custom_vjp
def _nll_and_alphas_posterior(logits, states, skip, final, frame_valid, log_epsilon):
    return _nll_and_alphas(logits, states, skip, final, frame_valid, log_epsilon)


def _both_fwd(logits, states, skip, final, frame_valid, log_epsilon):
    # symbolic_zeros=True: the primals come wrapped, their values in `.value`.
    primals = (logits, states, skip, final, frame_valid, log_epsilon)
    logits, states, skip, final, frame_valid, log_epsilon = (a.value for a in primals)
    args = (logits, states, skip, final, frame_valid, log_epsilon)
    nll, alphas, log_norm = _forward(*args, keep=True)
    return (nll, alphas), (args, log_norm, alphas, nll)


def _both_bwd(res, cotangents):
    args = res[0]
    g_nll, g_alphas = cotangents
    grad = jnp.zeros_like(args[0])
    if not isinstance(g_nll, SymbolicZero):
        grad = grad + _gradient_from(res, g_nll)
    if not isinstance(g_alphas, SymbolicZero):
        _, vjp = jax.vjp(lambda x: _nll_and_alphas(x, *args[1:])[1], args[0])
        grad = grad + vjp(g_alphas)[0]
    return grad, None, None, None, None, None


_nll_and_alphas_posterior.defvjp(_both_fwd, _both_bwd, symbolic_zeros=True)


@functools.partial(
    jax.jit, static_argnames=("blank_id", "grad_mode", "with_alphas", "zero_infinity")
)
def _loss_core(
    logits,
    logit_paddings,
    labels,
    label_paddings,
    log_epsilon,
    *,
    blank_id,
    grad_mode,
    with_alphas,
    zero_infinity=False,
):
    lattice, frame_valid = _lattice.lattice_inputs(
        logit_paddings, labels, label_paddings, blank_id
    )
    args = (
        logits,
        lattice.states,
        lattice.skip,
        lattice.final,
        frame_valid,
        log_epsilon,
    )
    posterior = grad_mode == "posterior"
    if with_alphas:
        fn = _nll_and_alphas_posterior if posterior else _nll_and_alphas
        nll, alphas = fn(*args)
    else:
        nll, alphas = (_nll_posterior if posterior else _nll)(*args), None
    # -log P >= 0 exactly; float32 rounding of a near-certain alignment can dip
    # just below zero (optax issue #1771), which the clamp removes.
    nll = jnp.maximum(nll, 0.0)
    if zero_infinity:
        nll = jnp.where(_lattice.alignable(logits, lattice, frame_valid), nll, 0.0)
    return nll, alphas, lattice.num_labels


def _loss_and_alphas(
    logits,
    logit_paddings,
    labels,
    label_paddings,
    blank_id,
    log_epsilon,
    grad_mode,
    checked,
    with_alphas,
    zero_infinity=False,
):
    """Checks the inputs (eagerly), then runs one jitted computation."""
    if grad_mode not in get_args(GradMode):
        raise ValueError(
            f"`grad_mode` must be one of {get_args(GradMode)}, got {grad_mode!r}."
        )
    *arrays, blank_id, log_epsilon = _checks.check_lattice_inputs(
        logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon, checked
    )
    return _loss_core(
        *arrays,
        log_epsilon,
        blank_id=blank_id,
        grad_mode=grad_mode,
        with_alphas=with_alphas,
        zero_infinity=_checks.check_bool("zero_infinity", zero_infinity),
    )


def ctc_loss_with_forward_probs(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: jax.typing.ArrayLike = -1e5,
    grad_mode: GradMode = "posterior",
    checked: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""CTC loss per sequence and the forward variables, as in optax.

    A drop-in for ``optax.ctc_loss_with_forward_probs``: same arguments, same
    outputs. The loss is ``-log P(labels | x)`` in nats, the probability
    summed over every alignment of the labels (a class per valid frame that
    collapses to the labels once repeats are merged and blanks removed); the
    forward variables are the log-alphas of that sum in optax's layout (the
    definitions are under Notes).

    Log-probabilities are never ``-inf``: ``log_epsilon`` stands for log 0
    (states that no path reaches start there, and emissions below it, e.g.
    from ``-inf`` logits masking a class, are raised to it). A sequence with
    no alignment (fewer valid frames than its labels plus their repeats, or
    only through masked classes) so gets a large finite loss, about
    ``-log_epsilon``; see :func:`ctc_loss` for ``zero_infinity``.

    Args:
      logits: ``[B, T, K]`` unnormalized scores (``log_softmax`` is applied),
        any float dtype; bf16/f16 run in float32, float64 stays float64.
      logit_paddings: ``[B, T]``, 1.0 on padded frames and 0.0 elsewhere; padded
        frames may sit anywhere in time.
      labels: ``[B, N]`` integer class ids, right-padded.
      label_paddings: ``[B, N]``, 1.0 on padded labels, each row zeros then ones.
      blank_id: the blank's class index, in ``[0, K)``.
      log_epsilon: the stand-in for log 0, a scalar in ``[-1e20, 0)``.
      grad_mode: ``"posterior"`` (default): the closed-form gradient
        ``softmax - class posteriors``, memory a small multiple of one
        ``[T, B, 2N+1]`` lattice (:func:`ctc_loss` carries the posteriors
        back along the forward pass's transition weights; with the alphas
        returned, they come from an alpha-beta pass); supports reverse mode
        (``grad``, ``vjp``, ``vmap`` of them) once. ``"autodiff"``: plain
        differentiation through the ``lax.scan``, for forward mode
        (``jvp``, ``jacfwd``) and higher orders (``hessian``, grad of grad).
      checked: check values under ``jit`` too, as ``checkify`` checks (wrap the
        call in ``jax.experimental.checkify.checkify``). Outside ``jit`` the
        checks always run.

    Returns:
      ``(loss, logalpha_blank, logalpha_nonblank)``: ``loss [B]`` is
      :math:`-\log P(y_b \mid x_b)` in nats, never negative, in the compute
      dtype (float32 unless the logits are float64); ``logalpha_blank
      [T, B, N+1]`` and ``logalpha_nonblank [T, B, N]`` as under Notes. Entries past
      a sequence's labels (``n > U_b``) are not meaningful.

    Raises:
      ValueError: at trace time, for a bad rank or shape, a ``blank_id`` out of
        range or a non-scalar ``log_epsilon``; with concrete values (outside
        ``jit``, also under an eager ``jax.grad``; or ``checked=True`` under
        ``checkify``), for paddings that are not 0/1, labels that are not
        right-padded, equal to ``blank_id`` or outside ``[0, K)`` in the valid
        region (in their own dtype: int64 labels are not narrowed first), NaN
        or ``+inf`` logits, and a ``log_epsilon`` that is not finite and
        negative (in ``[-1e20, 0)``).
      TypeError: for non-float ``logits`` or non-integer ``labels``.

    Notes:
      For labels :math:`y_{1..U}` and frames :math:`x_{1..T}`,

      .. math::
          \mathrm{loss} = -\log P(y \mid x)
              = -\log \sum_{\pi \in \mathcal{B}^{-1}(y)} \prod_{t=1}^{T}
                \mathrm{softmax}(\mathrm{logits}_t)_{\pi_t},

      the sum running over every alignment :math:`\pi` that collapses to
      :math:`y`. The forward variables are :math:`\log\alpha` of

      .. math::
          \alpha^{\mathrm{blank}}_t(n) &= P(\pi_{1..t} \text{ emits } y_{1..n},
              \pi_t = \text{blank}), \\
          \alpha^{\mathrm{label}}_t(n) &= P(\pi_{1..t} \text{ emits } y_{1..n+1},
              \pi_t = y_{n+1}),

      except that the last row of ``logalpha_blank`` (``t = T - 1``) holds
      :math:`\log(\alpha^{\mathrm{blank}}_{T-1}(n) +
      \alpha^{\mathrm{label}}_{T-1}(n-1))`, the total probability of having
      emitted :math:`y_{1..n}`, so ``loss[b] = -logalpha_blank[-1, b, U_b]``.
      Padded frames carry the previous frame's values.

    Examples:
      Two frames, uniform over blank (``-``) and class ``a = 1``: of the four
      alignments ``--``, ``-a``, ``a-``, ``aa``, three spell ``[1]``, so the
      loss is ``-log(3/4)``:

      >>> import jax.numpy as jnp, jaxctc
      >>> loss, blank, label = jaxctc.ctc_loss_with_forward_probs(
      ...     jnp.zeros((1, 2, 2)), jnp.zeros((1, 2)), jnp.array([[1]]), jnp.zeros((1, 1)))
      >>> round(float(loss[0]), 4), round(float(-jnp.log(0.75)), 4)
      (0.2877, 0.2877)
      >>> blank.shape, label.shape
      ((2, 1, 2), (2, 1, 1))

    References:
      Graves et al., `Connectionist temporal classification: labelling
      unsegmented sequence data with recurrent neural networks
      <https://dl.acm.org/doi/10.1145/1143844.1143891>`_, ICML 2006.
    """
    loss, alphas, _ = _loss_and_alphas(
        logits,
        logit_paddings,
        labels,
        label_paddings,
        blank_id,
        log_epsilon,
        grad_mode,
        checked,
        True,
    )
    blank = alphas[:, :, 0::2]
    nonblank = alphas[:, :, 1::2]
    if alphas.shape[0] > 0 and nonblank.shape[-1] > 0:
        last = blank[-1]
        closed = jnp.logaddexp(last[:, 1:], nonblank[-1])
        blank = blank.at[-1].set(jnp.concatenate([last[:, :1], closed], axis=-1))
    return loss, blank, nonblank


def feasible(
    logit_paddings: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
) -> jax.Array:
    r"""Whether each sequence has enough frames for an alignment.

    A labelling of ``U`` labels needs ``U + R`` valid frames, ``R`` the
    number of adjacent repeats (``a a`` needs a blank between). This looks
    at the lengths only: alignments that all pass through ``-inf`` logits
    still count (:func:`ctc_loss`'s ``zero_infinity`` removes those too).

    Args:
      logit_paddings: ``[B, T]`` frame paddings (1.0 = padded).
      labels: ``[B, N]`` integer labels.
      label_paddings: ``[B, N]`` label paddings (1.0 = padded).

    Returns:
      ``[B]`` bool: True where ``valid frames >= U + R``.

    Raises:
      ValueError: for bad ranks or shapes; with concrete values, for paddings
        that are not 0/1.
      TypeError: for non-integer ``labels``.

    Examples:
      >>> import jax.numpy as jnp, jaxctc
      >>> jaxctc.feasible(jnp.zeros((2, 3)), jnp.array([[1, 1, 2], [1, 2, 3]]),
      ...                 jnp.zeros((2, 3))).tolist()
      [False, True]
    """
    logit_paddings = jnp.asarray(logit_paddings)
    if logit_paddings.ndim != 2:
        raise ValueError(
            f"`logit_paddings` must have rank 2 [B, T], got shape "
            f"{logit_paddings.shape}."
        )
    labels, label_paddings = _checks.check_labels(
        labels, label_paddings, logit_paddings.shape[0], batch_from="logit_paddings"
    )
    _checks.check_paddings(logit_paddings, "logit_paddings")
    _checks.check_paddings(label_paddings, "label_paddings")
    num_frames = jnp.sum(logit_paddings == 0, axis=1, dtype=jnp.int32)
    return num_frames >= _lattice.min_frames(labels, label_paddings)


def ctc_loss(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: jax.typing.ArrayLike = -1e5,
    reduction: Reduction = "none",
    zero_infinity: bool = False,
    grad_mode: GradMode = "posterior",
    checked: bool = False,
) -> jax.Array:
    r"""CTC loss per sequence: ``-log P(labels | logits)``, in nats.

    A drop-in for ``optax.ctc_loss`` (same arguments and, with the default
    ``reduction="none"``, the same ``[B]`` result) with a closed-form gradient.
    See :func:`ctc_loss_with_forward_probs` for the definition, the arguments
    shared with it, dtypes and input checks.

    Args:
      logits: ``[B, T, K]`` unnormalized scores.
      logit_paddings: ``[B, T]`` frame paddings (1.0 = padded).
      labels: ``[B, N]`` integer labels, right-padded.
      label_paddings: ``[B, N]`` label paddings (1.0 = padded).
      blank_id: the blank's class index.
      log_epsilon: the stand-in for log 0.
      reduction: ``"none"`` (``[B]``), ``"sum"``, ``"mean"`` (batch mean), or
        ``"mean_by_label_length"`` (each loss divided by ``max(1, U_b)``, then
        the batch mean: torch's ``reduction="mean"``). Both means are 0 on an
        empty batch (``B = 0``), as the sum is.
      zero_infinity: replace the loss of sequences with no alignment of
        nonzero probability (too few frames for their labels and repeats, see
        :func:`feasible`, or every alignment through a ``-inf`` logit) by 0,
        with zero gradient, as torch's flag does. This is decided on the
        lattice (one more max-plus pass over it), not from the loss's size:
        a long feasible sequence keeps its loss however large.
      grad_mode: ``"posterior"`` or ``"autodiff"``, see
        :func:`ctc_loss_with_forward_probs`.
      checked: value checks under ``jit`` via ``checkify``.

    Returns:
      ``[B]`` losses in nats (``reduction="none"``) or their reduction, a
      scalar; never negative.

    Examples:
      The probability of ``[1]`` over two uniform frames is 3/4:

      >>> import jax, jax.numpy as jnp, jaxctc
      >>> loss = jaxctc.ctc_loss(jnp.zeros((1, 2, 2)), jnp.zeros((1, 2)),
      ...                        jnp.array([[1]]), jnp.zeros((1, 1)))
      >>> round(float(jnp.exp(-loss[0])), 4)
      0.75
      >>> grad = jax.grad(lambda x: jaxctc.ctc_loss(
      ...     x, jnp.zeros((1, 2)), jnp.array([[1]]), jnp.zeros((1, 1)),
      ...     reduction="sum"))(jnp.zeros((1, 2, 2)))
      >>> grad.shape
      (1, 2, 2)
    """
    if reduction not in get_args(Reduction):
        raise ValueError(
            f"`reduction` must be one of {get_args(Reduction)}, got {reduction!r}."
        )
    loss, _, num_labels = _loss_and_alphas(
        logits,
        logit_paddings,
        labels,
        label_paddings,
        blank_id,
        log_epsilon,
        grad_mode,
        checked,
        False,
        zero_infinity,
    )
    return _reduce(loss, num_labels, reduction)


def _reduce(loss, num_labels, reduction):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return jnp.sum(loss)
    if reduction == "mean_by_label_length":
        loss = loss / jnp.maximum(num_labels, 1).astype(loss.dtype)
    # The mean of an empty batch is 0, as its sum is (not NaN).
    return jnp.sum(loss) / max(loss.shape[0], 1)


# ----------------------------------------------------------------------------
# Rescoring
# ----------------------------------------------------------------------------


def sequence_log_probs(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
    *,
    blank_id: int = 0,
) -> jax.Array:
    r"""The exact ``log P(labels | x)`` of given hypotheses.

    The probability of the labels summed over every alignment, by the loss's
    forward recursion (``= -ctc_loss``). Use it to rescore decoder output
    (beam scores only count the alignments the beam kept), as a confidence,
    or to compare hypotheses from different decoders.

    Args:
      logits: ``[B, T, K]`` unnormalised scores (``log_softmax`` is applied).
      logit_paddings: ``[B, T]`` frame paddings (1.0 = padded).
      labels: ``[B, N]`` or ``[B, P, N]`` integer labels, right-padded, e.g.
        ``Hypotheses.labels``.
      label_paddings: the labels' paddings (1.0 = padded), same shape.
      blank_id: the blank's class index.

    Returns:
      ``[B]`` or ``[B, P]`` log-probabilities (natural log, ``<= 0``) in the
      compute dtype; ``-inf`` where the labels have no alignment (too few
      frames, or only through ``-inf`` logits). An all-padding row scores the
      empty labelling (all frames blank).

    Raises:
      ValueError: for bad ranks or shapes or a ``blank_id`` out of range; with
        concrete values, for labels equal to ``blank_id`` or outside
        ``[0, K)``, paddings that are not 0/1 and NaN or ``+inf`` logits (see
        :func:`jaxctc.ctc_loss_with_forward_probs`).
      TypeError: for non-float ``logits`` or non-integer ``labels``.

    Notes:
      .. math::
          \log P(y \mid x) = \log \sum_{\pi \in \mathcal{B}^{-1}(y)}
              \prod_t \mathrm{softmax}(x_t)_{\pi_t} = -\mathrm{ctc\_loss}.

    Examples:
      Two uniform frames over blank and ``a``: ``[a]`` has three of the four
      alignments, the empty labelling one:

      >>> import jax.numpy as jnp, jaxctc
      >>> lp = jaxctc.sequence_log_probs(jnp.zeros((1, 2, 2)), jnp.zeros((1, 2)),
      ...     jnp.array([[[1], [0]]]), jnp.array([[[0.0], [1.0]]]))
      >>> [round(float(x), 4) for x in jnp.exp(lp[0])]
      [0.75, 0.25]
    """
    logits, logit_paddings = _checks.check_logits(logits, logit_paddings)
    labels = jnp.asarray(labels)
    label_paddings = jnp.asarray(label_paddings)
    if labels.ndim not in (2, 3):
        raise ValueError(
            f"`labels` must have rank 2 [B, N] or 3 [B, P, N], got shape {labels.shape}."
        )
    if label_paddings.shape != labels.shape:
        raise ValueError(
            f"`label_paddings` must have the shape of `labels` {labels.shape}, "
            f"got {label_paddings.shape}."
        )
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"`labels` must have batch size B = {logits.shape[0]} (from `logits`), "
            f"got shape {labels.shape}."
        )
    paths = labels.shape[1] if labels.ndim == 3 else 1
    # Explicit sizes: with N = 0 a -1 in the shape would be ambiguous.
    flat_shape = (labels.shape[0] * paths, labels.shape[-1])
    flat, flat_paddings = _checks.check_labels(
        labels.reshape(flat_shape), label_paddings.reshape(flat_shape), flat_shape[0]
    )
    blank_id = _checks.check_blank_id(blank_id, logits.shape[2])
    _checks.check_values(logits, logit_paddings, flat, flat_paddings, blank_id, False)
    log_p = _rescore(
        logits, logit_paddings, flat, flat_paddings, blank_id=blank_id, paths=paths
    )
    return log_p.reshape(labels.shape[:-1])


@functools.partial(jax.jit, static_argnames=("blank_id", "paths"))
def _rescore(logits, logit_paddings, labels, label_paddings, *, blank_id, paths):
    if paths != 1:
        logits = jnp.repeat(logits, paths, axis=0)
        logit_paddings = jnp.repeat(logit_paddings, paths, axis=0)
    # The lowest floor: rescoring should be exact for every finite score.
    loss = ctc_loss(
        logits,
        logit_paddings,
        labels,
        label_paddings,
        blank_id=blank_id,
        log_epsilon=_checks.MIN_LOG_EPSILON,
    )
    lattice, frame_valid = _lattice.lattice_inputs(
        logit_paddings, labels, label_paddings, blank_id
    )
    alignable = _lattice.alignable(logits, lattice, frame_valid)
    return jnp.where(alignable, -loss, -jnp.inf)
