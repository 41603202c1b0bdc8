"""What the decoders return, and the helpers that build it."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from jaxctc import _checks


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


# The decoders' checks, read from here by _beam.py and _greedy.py; they
# belong to _checks (to move when those modules import _checks).
check_inputs = _checks.check_decoder_inputs
check_int = _checks.python_int
raise_on_nan = _checks.raise_on_nan


def compute_dtype(logits: jax.Array) -> np.dtype:
    """``_checks.compute_dtype`` of the logits' dtype (for _beam.py)."""
    return _checks.compute_dtype(logits.dtype)


def scatter_spans(
    positions: jax.Array, tokens: jax.Array, frames: jax.Array, size: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
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


def length_paddings(lengths: jax.Array, size: int) -> jax.Array:
    """``[..., size]`` float32 paddings: 1.0 from each row's length on."""
    iota = jax.lax.broadcasted_iota(jnp.int32, lengths.shape + (size,), lengths.ndim)
    return (iota >= lengths[..., None]).astype(jnp.float32)
