"""The CTC loss, its forward variables, and its closed-form gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jaxctc import _lattice

_REDUCTIONS = ("none", "sum", "mean", "mean_by_label_length")
_GRAD_MODES = ("posterior", "autodiff")


def _nll_and_alphas(logits, states, skip, final, frame_valid, log_epsilon):
    """``-log P(y | x)`` ``[B]`` and the extended-state alphas ``[T, B, S]``."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    emit = _lattice.emissions(log_probs, states, log_epsilon)
    init = _lattice.initial_state(*states.shape, log_epsilon, logits.dtype)
    last, alphas = _lattice.forward(emit, frame_valid, skip, init)
    return -_lattice.final_score(last, final), alphas


# The posterior gradient. With log_probs = log_softmax(logits) and
# gamma[t, b, s] the posterior of state s at frame t (alpha * beta / Z),
#     d(-log Z) / d logits[b, t, k]
#         = valid[b, t] * softmax(logits)[b, t, k] - sum_{s: class(s) = k} gamma
# because d(-log Z)/d log_probs[b, t, k] = -sum_{s: class(s) = k} gamma and the
# posteriors of a valid frame sum to one (zero on padded frames). Emissions
# clamped to log_epsilon (e.g. from -inf logits) are treated as constants'
# arguments of the softmax, which keeps every entry finite. Only the alphas'
# own cotangent (rarely used) falls back to autodiff through the scan.
@jax.custom_vjp
def _nll_and_alphas_posterior(logits, states, skip, final, frame_valid, log_epsilon):
    return _nll_and_alphas(logits, states, skip, final, frame_valid, log_epsilon)


def _posterior_fwd(logits, states, skip, final, frame_valid, log_epsilon):
    args = tuple(
        a.value for a in (logits, states, skip, final, frame_valid, log_epsilon)
    )
    nll, alphas = _nll_and_alphas(*args)
    return (nll, alphas), (args, alphas, nll)


def _posterior_bwd(res, cotangents):
    args, alphas, nll = res
    logits, states, skip, final, frame_valid, log_epsilon = args
    g_nll, g_alphas = cotangents
    grad = jnp.zeros_like(logits)
    if not isinstance(g_nll, SymbolicZero):
        grad = grad + g_nll[:, None, None] * posterior_gradient(
            logits, states, skip, final, frame_valid, log_epsilon, alphas, nll
        )
    if not isinstance(g_alphas, SymbolicZero):
        _, vjp = jax.vjp(lambda x: _nll_and_alphas(x, *args[1:])[1], logits)
        grad = grad + vjp(g_alphas)[0]
    return grad, None, None, None, None, None


_nll_and_alphas_posterior.defvjp(_posterior_fwd, _posterior_bwd, symbolic_zeros=True)


def class_posteriors(gammas, states, num_classes):
    """Sums state posteriors ``[T, B, S]`` per class into ``[B, T, K]``."""

    def one(gamma, state):  # [T, S], [S]
        return (
            jnp.zeros((gamma.shape[0], num_classes), gamma.dtype)
            .at[:, state]
            .add(gamma)
        )

    return jax.vmap(one, in_axes=(1, 0))(gammas, states)


def posterior_gradient(
    logits, states, skip, final, frame_valid, log_epsilon, alphas, nll
):
    """``d nll_b / d logits[b]`` ``[B, T, K]`` from the alpha-beta posteriors."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    emit = _lattice.emissions(log_probs, states, log_epsilon)
    gammas = _lattice.occupancy(emit, frame_valid, skip, final, alphas, -nll)
    post = class_posteriors(gammas, states, logits.shape[-1])
    valid = jnp.transpose(frame_valid).astype(logits.dtype)[:, :, None]
    return jnp.exp(log_probs) * valid - post


def _prepare(
    logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon, checked
):
    logits, logit_paddings = _lattice.check_logits(logits, logit_paddings)
    labels, label_paddings = _lattice.check_labels(
        labels, label_paddings, logits.shape[0]
    )
    blank_id = _lattice.check_blank_id(blank_id, logits.shape[2])
    _lattice.check_values(
        logits, logit_paddings, labels, label_paddings, blank_id, checked
    )
    dtype = _lattice.compute_dtype(logits.dtype)
    lattice = _lattice.build_lattice(labels, label_paddings, blank_id)
    frame_valid = jnp.transpose(logit_paddings == 0)
    log_epsilon = jnp.asarray(log_epsilon, dtype)
    if log_epsilon.ndim != 0:
        raise ValueError(
            f"`log_epsilon` must be a scalar, got shape {log_epsilon.shape}."
        )
    return logits.astype(dtype), lattice, frame_valid, log_epsilon


def _forward_probs(
    logits,
    logit_paddings,
    labels,
    label_paddings,
    blank_id,
    log_epsilon,
    grad_mode,
    checked,
):
    if grad_mode not in _GRAD_MODES:
        raise ValueError(
            f"`grad_mode` must be one of {_GRAD_MODES}, got {grad_mode!r}."
        )
    logits, lattice, frame_valid, log_epsilon = _prepare(
        logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon, checked
    )
    fn = _nll_and_alphas_posterior if grad_mode == "posterior" else _nll_and_alphas
    nll, alphas = fn(
        logits, lattice.states, lattice.skip, lattice.final, frame_valid, log_epsilon
    )
    # -log P >= 0 exactly; float32 rounding of a near-certain alignment can dip
    # just below zero (optax issue #1771), which the clamp removes.
    return jnp.maximum(nll, 0.0), alphas, lattice, log_epsilon


def ctc_loss_with_forward_probs(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: jax.typing.ArrayLike = -1e5,
    grad_mode: str = "posterior",
    checked: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""CTC loss per sequence and the forward variables, as in optax.

    A drop-in for ``optax.ctc_loss_with_forward_probs``: same arguments, same
    outputs. For labels :math:`y_{1..U}` and frames :math:`x_{1..T}`,

    .. math::
        \mathrm{loss} = -\log P(y \mid x)
            = -\log \sum_{\pi \in \mathcal{B}^{-1}(y)} \prod_{t=1}^{T}
              \mathrm{softmax}(\mathrm{logits}_t)_{\pi_t},

    the sum running over every alignment :math:`\pi` (a class per valid frame)
    that collapses to :math:`y` once repeats are merged and blanks removed.

    The forward variables are :math:`\log\alpha` in optax's layout:

    .. math::
        \alpha^{\mathrm{blank}}_t(n) &= P(\pi_{1..t} \text{ emits } y_{1..n},
            \pi_t = \text{blank}), \\
        \alpha^{\mathrm{label}}_t(n) &= P(\pi_{1..t} \text{ emits } y_{1..n+1},
            \pi_t = y_{n+1}),

    except that the last row of ``logalpha_blank`` (``t = T - 1``) holds
    :math:`\log(\alpha^{\mathrm{blank}}_{T-1}(n) + \alpha^{\mathrm{label}}_{T-1}(n-1))`,
    the total probability of having emitted :math:`y_{1..n}`, so
    ``loss[b] = -logalpha_blank[-1, b, U_b]``. Padded frames carry the
    previous frame's values.

    Log-probabilities are never ``-inf``: ``log_epsilon`` stands for
    :math:`\log 0` (states no path reaches start there, and emissions below it,
    e.g. from ``-inf`` logits masking a class, are raised to it). A sequence
    with no alignment (fewer valid frames than ``U`` plus its repeats, or only
    through masked classes) so gets a large finite loss, about
    ``-log_epsilon``; see :func:`ctc_loss` for ``zero_infinity``.

    Args:
      logits: ``[B, T, K]`` unnormalized scores (``log_softmax`` is applied),
        any float dtype; bf16/f16 run in float32, float64 stays float64.
      logit_paddings: ``[B, T]``, 1.0 on padded frames and 0.0 elsewhere; padded
        frames may sit anywhere in time.
      labels: ``[B, N]`` integer class ids, right-padded.
      label_paddings: ``[B, N]``, 1.0 on padded labels, each row zeros then ones.
      blank_id: the blank's class index, in ``[0, K)``.
      log_epsilon: the stand-in for :math:`\log 0` (a finite scalar).
      grad_mode: ``"posterior"`` (default): the closed-form gradient
        ``softmax - posterior occupancy`` from an alpha-beta pass, memory a
        small multiple of one ``[T, B, 2N+1]`` lattice; supports reverse mode
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
      [T, B, N+1]`` and ``logalpha_nonblank [T, B, N]`` as above. Entries past
      a sequence's labels (``n > U_b``) are not meaningful.

    Raises:
      ValueError: at trace time, for a bad rank or shape, a ``blank_id`` out of
        range or a non-scalar ``log_epsilon``; with concrete values (or
        ``checked=True`` under ``checkify``), for paddings that are not 0/1,
        labels that are not right-padded, equal to ``blank_id`` or outside
        ``[0, K)`` in the valid region, and NaN logits.
      TypeError: for non-float ``logits`` or non-integer ``labels``.

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
    loss, alphas, _, _ = _forward_probs(
        logits,
        logit_paddings,
        labels,
        label_paddings,
        blank_id,
        log_epsilon,
        grad_mode,
        checked,
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
    r"""Whether each sequence has at least one alignment.

    A labelling :math:`y_{1..U}` needs :math:`U + R` valid frames, :math:`R`
    the number of adjacent repeats (``a a`` needs a blank between).

    Args:
      logit_paddings: ``[B, T]`` frame paddings (1.0 = padded).
      labels: ``[B, N]`` integer labels.
      label_paddings: ``[B, N]`` label paddings (1.0 = padded).

    Returns:
      ``[B]`` bool: True where ``valid frames >= U + R``.

    Examples:
      >>> import jax.numpy as jnp, jaxctc
      >>> jaxctc.feasible(jnp.zeros((2, 3)), jnp.array([[1, 1, 2], [1, 2, 3]]),
      ...                 jnp.zeros((2, 3))).tolist()
      [False, True]
    """
    logit_paddings = jnp.asarray(logit_paddings)
    labels, label_paddings = _lattice.check_labels(
        labels, label_paddings, logit_paddings.shape[0]
    )
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
    reduction: str = "none",
    zero_infinity: bool = False,
    grad_mode: str = "posterior",
    checked: bool = False,
) -> jax.Array:
    r"""CTC loss: :math:`-\log P(\mathrm{labels} \mid \mathrm{logits})`.

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
      log_epsilon: the stand-in for :math:`\log 0`.
      reduction: ``"none"`` (``[B]``), ``"sum"``, ``"mean"`` (batch mean), or
        ``"mean_by_label_length"`` (each loss divided by ``max(1, U_b)``, then
        the batch mean: torch's ``reduction="mean"``).
      zero_infinity: replace the loss of sequences with no alignment (too few
        frames for their labels, or probability below ``exp(log_epsilon / 2)``)
        by 0, with zero gradient, as torch's flag does. Use :func:`feasible`
        to see which.
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
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}."
        )
    loss, _, lattice, log_epsilon = _forward_probs(
        logits,
        logit_paddings,
        labels,
        label_paddings,
        blank_id,
        log_epsilon,
        grad_mode,
        checked,
    )
    if zero_infinity:
        ok = feasible(logit_paddings, labels, label_paddings)
        ok &= loss < -0.5 * log_epsilon
        loss = jnp.where(ok, loss, 0.0)
    return _reduce(loss, lattice.num_labels, reduction)


def _reduce(loss, num_labels, reduction):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return jnp.sum(loss)
    if reduction == "mean":
        return jnp.mean(loss)
    return jnp.mean(loss / jnp.maximum(num_labels, 1).astype(loss.dtype))
