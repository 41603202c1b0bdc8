"""What the decoders return, and the input checks they share."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxctc import _lattice


class Hypotheses(NamedTuple):
    """Decoded label sequences, padded like the loss's ``labels``.

    Shapes are ``[B, L]`` for :func:`greedy_decode` and ``[B, P, L]`` for
    :func:`prefix_beam_search` (``P`` hypotheses per sequence, best first).

    Attributes:
      labels: int32 class ids, right-padded with 0.
      label_paddings: float32, 1.0 on padded entries, 0.0 on tokens.
      log_probs: the score of each hypothesis (natural log, always ``<= 0``);
        what it is the log of depends on the decoder, see its docstring.
        ``-inf`` marks a row that holds no hypothesis.
      starts: int32, the first frame of each token in the hypothesis' best
        alignment, -1 on padded entries.
      ends: int32, the last frame (inclusive) of each token, -1 on padded
        entries.
      scores: the ranking score of each hypothesis (beam search:
        ``log_probs`` plus the fusion scorers' contributions); ``None`` for
        greedy decoding.
    """

    labels: jax.Array
    label_paddings: jax.Array
    log_probs: jax.Array
    starts: jax.Array | None = None
    ends: jax.Array | None = None
    scores: jax.Array | None = None


# So that an exported decoder can be serialized with its output.
jax.export.register_namedtuple_serialization(
    Hypotheses, serialized_name="jaxctc.Hypotheses"
)


def check_inputs(logits, logit_paddings, blank_id):
    """The decoders' static checks; paddings that are not 0/1 raise when known.

    NaN and ``+inf`` logits are found by the decoders' own pass over the
    logits (they win every maximum), see :func:`raise_on_nan`.
    """
    logits, logit_paddings = _lattice.check_logits(logits, logit_paddings)
    blank_id = _lattice.check_blank_id(blank_id, logits.shape[2])
    _lattice.check_paddings(logit_paddings, "logit_paddings")
    return logits, logit_paddings, blank_id


def raise_on_nan(has_nan):
    """Raises for NaN or ``+inf`` logits when the per-sequence flags ``[B]``
    are known (outside ``jit``); they stay per sequence so that a
    batch-sharded decoder needs no communication.

    Under ``jit`` such a frame decodes to an unspecified hypothesis and score.
    """
    _lattice.require(
        ~jnp.any(has_nan),
        "`logits` contain NaN or +inf: only finite values and -inf (a masked "
        "class) are allowed.",
    )


def check_int(name, value, low):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be a Python int, got {value!r}.")
    if value < low:
        raise ValueError(f"`{name}` must be >= {low}, got {value}.")
    return int(value)


def check_stream(batch_size, num_classes, blank_id):
    """A streaming decoder's sizes: ``B >= 0``, ``K >= 1``, the blank in
    ``[0, K)``."""
    batch = check_int("batch_size", batch_size, 0)
    num_classes = check_int("num_classes", num_classes, 1)
    blank_id = check_int("blank_id", blank_id, 0)
    if blank_id >= num_classes:
        raise ValueError(
            f"`blank_id` must be in [0, {num_classes}) (`num_classes`), got {blank_id}."
        )
    return batch, num_classes, blank_id


def check_state(state, cls, function):
    if not isinstance(state, cls):
        raise TypeError(
            f"`state` must be a {cls.__name__} (from {function}_init) for "
            f"{function}_update/_result, got {type(state).__name__}."
        )


def check_chunk(logits, logit_paddings, blank_id, batch, num_classes, dtype):
    """A chunk's checks against its streaming state's ``B``, ``K`` and compute
    ``dtype`` (chunks of another float dtype are cast to it; bf16/f16 are read
    as they are)."""
    logits, logit_paddings, _ = check_inputs(logits, logit_paddings, blank_id)
    if logits.shape[0] != batch or logits.shape[2] != num_classes:
        raise ValueError(
            f"`logits` must have B = {batch} and K = {num_classes} (the "
            f"state's), got shape {logits.shape}."
        )
    if compute_dtype(logits) != dtype:
        logits = logits.astype(dtype)
    return logits, logit_paddings


def compute_dtype(logits):
    return _lattice.compute_dtype(logits.dtype)


def sharded_like(tree, logits):
    """The ``[B, ...]`` arrays of ``tree`` with the batch sharding of
    ``logits`` where it is explicit (a mesh with explicit axes refuses to mix
    a state made on one device with batch-sharded chunks); else unchanged."""
    sharding = jax.typeof(logits).sharding
    if not sharding.mesh.axis_names or not sharding.spec or sharding.spec[0] is None:
        return tree
    axis = sharding.spec[0]
    return jax.tree.map(
        lambda a: jax.sharding.reshard(
            a, sharding.update(spec=(axis,) + (None,) * (a.ndim - 1))
        ),
        tree,
    )


_NO_START = np.iinfo(np.int32).max  # a start no frame has: min-scatters need it


def empty_spans(shape):
    """Labels, starts and ends of ``shape`` with no token: the starting point
    of :func:`add_spans` (starts hold a sentinel above every frame number)."""
    return (
        jnp.zeros(shape, jnp.int32),
        jnp.full(shape, _NO_START, jnp.int32),
        jnp.full(shape, -1, jnp.int32),
    )


def add_spans(spans, positions, tokens, frames):
    """Writes the tokens of frames into ``spans`` (labels, starts, ends, each
    ``[R, size]``, from :func:`empty_spans` or an earlier call).

    ``positions`` (``[R, F]``) is the token index each frame belongs to, or
    ``size`` for frames that belong to no token (dropped); ``frames`` (``[F]``)
    the frame numbers, shared by the rows. A token's start is its first
    frame, its end its last, over every call. Each row scatters on its own
    (vmapped), so a batch-sharded input needs no communication.
    """

    def one(labels, starts, ends, pos, tok, frame):
        return (
            labels.at[pos].set(tok, mode="drop"),
            starts.at[pos].min(frame, mode="drop"),
            ends.at[pos].max(frame, mode="drop"),
        )

    return jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None))(
        *spans, positions, tokens, frames
    )


def finish_spans(spans):
    """``spans`` as :class:`Hypotheses` hold them: -1 where a token has no start."""
    labels, starts, ends = spans
    return labels, jnp.where(starts == _NO_START, -1, starts), ends


def scatter_spans(positions, tokens, frames, size):
    """Labels, starts and ends ``[R, size]`` from per-frame token positions
    (see :func:`add_spans`)."""
    spans = empty_spans(positions.shape[:1] + (size,))
    return finish_spans(add_spans(spans, positions, tokens, frames))


def length_paddings(lengths, size):
    """``[..., size]`` float32 paddings: 1.0 from each row's length on."""
    iota = jax.lax.broadcasted_iota(jnp.int32, lengths.shape + (size,), lengths.ndim)
    return (iota >= lengths[..., None]).astype(jnp.float32)
