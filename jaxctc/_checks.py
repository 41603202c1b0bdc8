"""Input checks, shared by every public function.

Static problems (rank, shape, dtype, an option of the wrong type or out of
range) raise at trace time, naming the argument and showing the bad value;
this costs nothing under ``jit``. Value-dependent problems (a label equal to
the blank, paddings that are not 0/1, NaN logits) raise where the values are
known, outside ``jit`` (also under an eager ``jax.grad``), and under ``jit``
only on request: ``checked=True`` turns them into ``checkify`` checks.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# The lowest ``log_epsilon`` accepted: ``T`` frames of it stay far above the
# lattice's fill for transitions that do not exist (``_lattice.NEG``, -1e30).
MIN_LOG_EPSILON = -1e20


def known(x: jax.typing.ArrayLike) -> bool | None:
    """``bool(x)`` when its value is known now, else None.

    Values are known outside ``jit``, also under an eager ``jax.grad`` (its
    tracers carry concrete values), and not while tracing ``jit`` or ``vmap``.
    """
    try:
        return bool(x)
    except jax.errors.ConcretizationTypeError:
        return None


def require(ok: jax.Array | bool, message: str, checked: bool = False) -> None:
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


def python_int(name: str, value: Any, low: int | None = None) -> int:
    """``value`` as an ``int``: a Python or NumPy integer (not a bool, not an
    array, which ``jit`` would trace), at least ``low`` when given."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be a Python int, got {value!r}.")
    if low is not None and value < low:
        raise ValueError(f"`{name}` must be >= {low}, got {value}.")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """A static flag: a Python bool (an array would be traced under ``jit``)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a Python bool, got {value!r}.")
    return bool(value)


def compute_dtype(dtype: Any) -> np.dtype:
    """float64 stays float64; every other float (bf16, f16, f32) runs in f32."""
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`logits` must be a float array, got dtype {dtype}.")
    # Not jnp.promote_types: under strict dtype promotion it refuses f64 + f32.
    return np.dtype(np.float64 if dtype == jnp.float64 else np.float32)


def check_logits(
    logits: jax.typing.ArrayLike, logit_paddings: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array]:
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
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
    batch_size: int | None = None,
    name: str = "labels",
    paddings_name: str = "label_paddings",
    batch_from: str = "logits",
) -> tuple[jax.Array, jax.Array]:
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


def check_blank_id(blank_id: Any, num_classes: int) -> int:
    """``blank_id`` as an ``int`` in ``[0, K)``."""
    blank_id = python_int("blank_id", blank_id)
    if not 0 <= blank_id < num_classes:
        raise ValueError(
            f"`blank_id` must be in [0, K) = [0, {num_classes}), got {blank_id}."
        )
    return blank_id


def zeros_and_ones(paddings: jax.Array) -> jax.Array:
    """Whether ``paddings`` hold only 0 and 1 (NaN is neither; bools do)."""
    if paddings.dtype == jnp.bool_:
        return jnp.asarray(True)
    return jnp.all((paddings == 0) | (paddings == 1))


def check_paddings(paddings: jax.Array, name: str, checked: bool = False) -> None:
    require(zeros_and_ones(paddings), f"`{name}` must contain only 0 and 1.", checked)


def check_finite_logits(logits: jax.Array, checked: bool = False) -> None:
    """NaN and ``+inf`` logits raise; ``-inf`` (a masked class) is allowed."""
    require(~jnp.any(jnp.isnan(logits)), "`logits` contain NaN.", checked)
    require(
        ~jnp.any(logits == jnp.inf),
        "`logits` contain +inf: only finite values and -inf (a masked class) "
        "are allowed.",
        checked,
    )


def check_values(
    logits: jax.Array,
    logit_paddings: jax.Array,
    labels: jax.Array,
    label_paddings: jax.Array,
    blank_id: int,
    checked: bool,
) -> None:
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


def check_log_epsilon(
    log_epsilon: jax.typing.ArrayLike, dtype: Any, checked: bool = False
) -> jax.Array:
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


def check_lattice_inputs(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
    blank_id: Any,
    log_epsilon: jax.typing.ArrayLike,
    checked: bool,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, int, jax.Array]:
    """Every check of the functions that walk the lattice (the loss, the
    aligner, the posteriors); returns the inputs as arrays, the logits and
    ``log_epsilon`` in the compute dtype."""
    logits, logit_paddings = check_logits(logits, logit_paddings)
    labels, label_paddings = check_labels(labels, label_paddings, logits.shape[0])
    blank_id = check_blank_id(blank_id, logits.shape[2])
    check_values(logits, logit_paddings, labels, label_paddings, blank_id, checked)
    dtype = compute_dtype(logits.dtype)
    log_epsilon = check_log_epsilon(log_epsilon, dtype, checked)
    return (
        logits.astype(dtype),
        logit_paddings,
        labels,
        label_paddings,
        blank_id,
        log_epsilon,
    )


def check_decoder_inputs(
    logits: jax.typing.ArrayLike, logit_paddings: jax.typing.ArrayLike, blank_id: Any
) -> tuple[jax.Array, jax.Array, int]:
    """The decoders' static checks; paddings that are not 0/1 raise when known.

    NaN and ``+inf`` logits are found by the decoders' own pass over the
    logits (they win every maximum), see :func:`raise_on_nan`.
    """
    logits, logit_paddings = check_logits(logits, logit_paddings)
    blank_id = check_blank_id(blank_id, logits.shape[2])
    check_paddings(logit_paddings, "logit_paddings")
    return logits, logit_paddings, blank_id


def raise_on_nan(has_nan: jax.Array) -> None:
    """Raises for NaN or ``+inf`` logits when the per-sequence flags ``[B]``
    are known (outside ``jit``); they stay per sequence so that a
    batch-sharded decoder needs no communication.

    Under ``jit`` such a frame decodes to an unspecified hypothesis and score.
    """
    require(
        ~jnp.any(has_nan),
        "`logits` contain NaN or +inf: only finite values and -inf (a masked "
        "class) are allowed.",
    )


def check_stream(
    batch_size: Any, num_classes: Any, blank_id: Any
) -> tuple[int, int, int]:
    """A streaming decoder's sizes: ``B >= 0``, ``K >= 1``, the blank in
    ``[0, K)``."""
    batch = python_int("batch_size", batch_size, 0)
    classes = python_int("num_classes", num_classes, 1)
    blank = python_int("blank_id", blank_id, 0)
    if blank >= classes:
        raise ValueError(
            f"`blank_id` must be in [0, {classes}) (`num_classes`), got {blank}."
        )
    return batch, classes, blank


def check_state(state: Any, cls: type, function: str) -> None:
    """``state`` is a ``cls`` (a streaming decoder's state, from ``function``'s
    ``_init``)."""
    if not isinstance(state, cls):
        raise TypeError(
            f"`state` must be a {cls.__name__} (from {function}_init) for "
            f"{function}_update/_result, got {type(state).__name__}."
        )


def check_chunk(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    blank_id: int,
    batch: int,
    num_classes: int,
    dtype: Any,
) -> tuple[jax.Array, jax.Array]:
    """A chunk's checks against its streaming state's ``B``, ``K`` and compute
    ``dtype`` (chunks of another float dtype are cast to it; bf16/f16 are read
    as they are)."""
    x, paddings, _ = check_decoder_inputs(logits, logit_paddings, blank_id)
    if x.shape[0] != batch or x.shape[2] != num_classes:
        raise ValueError(
            f"`logits` must have B = {batch} and K = {num_classes} (the "
            f"state's), got shape {x.shape}."
        )
    if compute_dtype(x.dtype) != dtype:
        x = x.astype(dtype)
    return x, paddings


def check_weight(name, value) -> float:
    """``value`` as a float; a ``ValueError`` naming ``name`` unless finite."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.") from None
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}.")
    return value
