"""What the decoders return, and the input checks they share."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

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
export.register_namedtuple_serialization(
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


def compute_dtype(logits):
    return _lattice.compute_dtype(logits.dtype)


def scatter_spans(positions, tokens, frames, size):
    """Labels, starts and ends ``[R, size]`` from per-frame token positions.

    ``positions`` (``[R, F]``) is the token index each frame belongs to, or
    ``size`` for frames that belong to no token (dropped); ``frames`` (``[F]``)
    the frame numbers, shared by the rows. Each row scatters on
    its own (vmapped), so a batch-sharded input needs no communication.
    """
    big = np.iinfo(np.int32).max

    def one(pos, tok, frame):
        labels = jnp.zeros((size,), jnp.int32).at[pos].set(tok, mode="drop")
        starts = jnp.full((size,), big, jnp.int32).at[pos].min(frame, mode="drop")
        ends = jnp.full((size,), -1, jnp.int32).at[pos].max(frame, mode="drop")
        return labels, jnp.where(starts == big, -1, starts), ends

    return jax.vmap(one, in_axes=(0, 0, None))(positions, tokens, frames)


def length_paddings(lengths, size):
    """``[..., size]`` float32 paddings: 1.0 from each row's length on."""
    iota = jax.lax.broadcasted_iota(jnp.int32, lengths.shape + (size,), lengths.ndim)
    return (iota >= lengths[..., None]).astype(jnp.float32)
