"""What the decoders return, and the helpers that build it."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import export


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


def sharded_like(tree: Any, logits: jax.Array) -> Any:
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


# Labels, starts and ends of tokens, each [..., L] int32.
Spans = tuple[jax.Array, jax.Array, jax.Array]

_NO_START = np.iinfo(np.int32).max  # a start no frame has: min-scatters need it


def empty_spans(shape: tuple[int, ...]) -> Spans:
    """Labels, starts and ends of ``shape`` with no token: the starting point
    of :func:`add_spans` (starts hold a sentinel above every frame number)."""
    return (
        jnp.zeros(shape, jnp.int32),
        jnp.full(shape, _NO_START, jnp.int32),
        jnp.full(shape, -1, jnp.int32),
    )


def add_spans(
    spans: Spans, positions: jax.Array, tokens: jax.Array, frames: jax.Array
) -> Spans:
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

    labels, starts, ends = spans
    return jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None))(
        labels, starts, ends, positions, tokens, frames
    )


def finish_spans(spans: Spans) -> Spans:
    """``spans`` as :class:`Hypotheses` hold them: -1 where a token has no start."""
    labels, starts, ends = spans
    return labels, jnp.where(starts == _NO_START, -1, starts), ends


def scatter_spans(
    positions: jax.Array, tokens: jax.Array, frames: jax.Array, size: int
) -> Spans:
    """Labels, starts and ends ``[R, size]`` from per-frame token positions
    (see :func:`add_spans`)."""
    spans = empty_spans(positions.shape[:1] + (size,))
    return finish_spans(add_spans(spans, positions, tokens, frames))


def length_paddings(lengths: jax.Array, size: int) -> jax.Array:
    """``[..., size]`` float32 paddings: 1.0 from each row's length on."""
    iota = jax.lax.broadcasted_iota(jnp.int32, lengths.shape + (size,), lengths.ndim)
    return (iota >= lengths[..., None]).astype(jnp.float32)
