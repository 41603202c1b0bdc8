"""The prefix beam search over a stream of chunks, equal to the one-shot search.

The one-shot search (``_beam``) records per frame where each beam's best
alignments came from and reads the labels back over all frames at the end;
a stream cannot keep every frame. Here the state holds, for each beam and
each of its two endings (on a blank, on the last token), the labels and
token spans of that ending's best alignment, ``[B, W, 2, L]``, a size fixed
by ``max_label_length``. An update runs the one-shot scan over the chunk
from the state's beams, then follows all ``2W`` best alignments back over
the chunk's trace only (as the one-shot read-back does over all frames) to
the beam and ending they came from at the chunk's start, and writes the
chunk's tokens on top of those spans. The beams see the same frames in the
same order as in one shot, so the hypotheses are the same; only the sum of
the log-normalizers is added up chunk by chunk (equal to float rounding).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from jaxctc import _beam
from jaxctc._checks import (
    check_chunk,
    check_state,
    check_stream,
    compute_dtype,
    python_int,
    raise_on_nan,
)
from jaxctc._hypotheses import (
    Hypotheses,
    add_spans,
    empty_spans,
    finish_spans,
    length_paddings,
    sharded_like,
)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "beams",
        "labels",
        "starts",
        "ends",
        "offset",
        "frame",
        "limited",
        "scorers",
    ],
    meta_fields=[
        "num_classes",
        "blank_id",
        "beam_width",
        "max_label_length",
        "token_top_k",
        "token_min_log_prob",
        "blank_skip_log_prob",
    ],
)
@dataclasses.dataclass(frozen=True)
class PrefixBeamSearchState:
    """The state of a streaming prefix beam search, a pytree of fixed size.

    Made by :func:`prefix_beam_search_init`, advanced by
    :func:`prefix_beam_search_update`, read by
    :func:`prefix_beam_search_result`; its size does not grow with the frames
    seen. ``B`` sequences, ``W = beam_width``, ``L = max_label_length``.

    Attributes:
      beams: the ``W`` prefixes of each sequence (``[B, W]`` fields: their
        blank- and token-ending scores, last tokens, lengths, hashes, and the
        scorers' states).
      labels: ``[B, W, 2, L]`` int32, each beam's labels, per ending of its
        best alignment (0: on a blank, 1: on the last token).
      starts: ``[B, W, 2, L]`` int32, the first frame of each token in that
        alignment (a sentinel above every frame number where there is none).
      ends: ``[B, W, 2, L]`` int32, its last frame (-1 where none).
      offset: ``[B]`` the sum of the valid frames' log-normalizers so far.
      frame: ``[]`` int32, the frames seen (padded ones included): the frame
        number of the next chunk's first frame.
      limited: ``[B]`` bool, True once a kept prefix has reached
        ``max_label_length``: from then on the search may differ from one
        with a larger limit (prefixes are not extended beyond it).
      scorers: the fusion scorers (e.g. :class:`NGramLM`), as given.
      num_classes, blank_id, beam_width, max_label_length, token_top_k,
        token_min_log_prob, blank_skip_log_prob: the static configuration
        (see :func:`prefix_beam_search`).
    """

    beams: _beam.Beams
    labels: jax.Array
    starts: jax.Array
    ends: jax.Array
    offset: jax.Array
    frame: jax.Array
    limited: jax.Array
    scorers: tuple
    num_classes: int
    blank_id: int
    beam_width: int
    max_label_length: int
    token_top_k: int | None
    token_min_log_prob: float | None
    blank_skip_log_prob: float | None


def prefix_beam_search_init(
    batch_size: int,
    num_classes: int,
    *,
    beam_width: int = 16,
    blank_id: int = 0,
    max_label_length: int,
    token_top_k: int | None = None,
    token_min_log_prob: float | None = None,
    blank_skip_log_prob: float | None = None,
    scorers=(),
    dtype=jnp.float32,
) -> PrefixBeamSearchState:
    r"""The state of a streaming :func:`prefix_beam_search` before any frame.

    Streaming runs the same search as :func:`prefix_beam_search` over frames
    that arrive chunk by chunk: ``update`` the state with each chunk, read the
    best hypotheses so far with :func:`prefix_beam_search_result` at any
    time. For every way of cutting ``[B, T, K]`` logits into chunks, the
    result after the last chunk equals ``prefix_beam_search`` on the whole
    (same options, ``max_label_length=L``): labels, paddings and ranking
    identical, scores equal to float rounding, ``starts``/``ends`` numbered
    from the stream's first frame.

    The state has a fixed size, ``O(B W L)``: an update jits once per chunk
    shape and a stream of any length runs in constant memory. Its cost per
    frame is that of the one-shot search, plus per chunk ``O(W C)`` to follow
    ``2 W`` alignments over the chunk's ``C`` frames and ``O(W L)`` to carry
    their labels and spans; prefer chunks of a few frames or more.

    Args:
      batch_size: ``B``, the sequences decoded side by side.
      num_classes: ``K``, the classes of the chunks' logits.
      beam_width: ``W``, the prefixes kept per frame.
      blank_id: the blank's class index, in ``[0, K)``.
      max_label_length: ``L``, the longest labelling: prefixes are not
        extended beyond it, as in ``prefix_beam_search`` with the same value
        (the state's ``limited`` says which sequences reached it).
      token_top_k, token_min_log_prob, blank_skip_log_prob, scorers: as in
        :func:`prefix_beam_search`; the scorers' states (an LM's context, a
        hotword's partial match) are carried across chunks.
      dtype: the compute dtype of the scores (float32, or float64). Chunks
        of another float dtype are cast to it (bf16 and f16 chunks are read
        as they are into a float32 state).

    Returns:
      A :class:`PrefixBeamSearchState`: the empty prefix, no frame seen.

    Raises:
      ValueError: for ``batch_size < 0``, ``num_classes < 1``, a
        ``blank_id`` out of range, ``beam_width < 1``,
        ``max_label_length < 0`` or ``token_top_k < 1``.
      TypeError: for options that are not Python ints, or a scorer without
        ``init``/``score``/``final``.

    Examples:
      The frames of ``prefix_beam_search``'s example, one chunk at a time:

      >>> import jax.numpy as jnp, jaxctc
      >>> logits = jnp.log(jnp.array([[[0.6, 0.4], [0.6, 0.4]]]))
      >>> state = jaxctc.prefix_beam_search_init(1, 2, max_label_length=2)
      >>> for t in range(2):
      ...     state = jaxctc.prefix_beam_search_update(
      ...         state, logits[:, t : t + 1], jnp.zeros((1, 1)))
      >>> hyp = jaxctc.prefix_beam_search_result(state, top_paths=2)
      >>> hyp.labels[0, :, :1].tolist()
      [[1], [0]]
      >>> [round(float(x), 4) for x in jnp.exp(hyp.log_probs[0])]
      [0.64, 0.36]
    """
    batch, num_classes, blank_id = check_stream(batch_size, num_classes, blank_id)
    width = python_int("beam_width", beam_width, 1)
    max_length = python_int("max_label_length", max_label_length, 0)
    top_k = None
    if token_top_k is not None:
        top_k = python_int("token_top_k", token_top_k, 1)
        top_k = top_k if top_k < num_classes - 1 else None
    scorers = _beam._check_scorers(scorers)
    dtype = compute_dtype(dtype)
    beams = jax.tree.map(
        lambda a: jnp.broadcast_to(a, (batch,) + a.shape),
        _beam.initial_beams(width, dtype, scorers),
    )
    labels, starts, ends = empty_spans((batch, width, 2, max_length))
    return PrefixBeamSearchState(
        beams=beams,
        labels=labels,
        starts=starts,
        ends=ends,
        offset=jnp.zeros((batch,), dtype),
        frame=jnp.zeros((), jnp.int32),
        limited=jnp.zeros((batch,), bool),
        scorers=scorers,
        num_classes=num_classes,
        blank_id=blank_id,
        beam_width=width,
        max_label_length=max_length,
        token_top_k=top_k,
        token_min_log_prob=_optional_float("token_min_log_prob", token_min_log_prob),
        blank_skip_log_prob=_optional_float("blank_skip_log_prob", blank_skip_log_prob),
    )


def _optional_float(name, value):
    # Static (part of the state's structure), so a Python number.
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be a Python float or None, got {value!r}.")
    return float(value)


def prefix_beam_search_update(
    state: PrefixBeamSearchState,
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
) -> PrefixBeamSearchState:
    """Advances a streaming prefix beam search by one chunk of frames.

    Args:
      state: from :func:`prefix_beam_search_init` or an earlier update.
      logits: ``[B, C, K]`` the chunk's unnormalised scores (any ``C >= 0``;
        ``log_softmax`` is applied per frame, as in
        :func:`prefix_beam_search`).
      logit_paddings: ``[B, C]``, 1.0 on padded frames (skipped; they still
        count in the frame numbers), 0.0 elsewhere. A stream's last chunk
        may be padded to the chunk size, so every update has one shape.

    Returns:
      The state after the chunk (``state`` itself is not changed).

    Raises:
      TypeError: if ``state`` is not a :class:`PrefixBeamSearchState`.
      ValueError: at trace time, if ``logits``' ``B`` or ``K`` differ from
        the state's, or for a bad rank or shape; with concrete values
        (outside ``jit``), for NaN or ``+inf`` logits or paddings that are
        not 0/1 (as in :func:`prefix_beam_search`).

    Examples:
      Chunks of any size, the last one padded:

      >>> import jax.numpy as jnp, jaxctc
      >>> x = jnp.log(jnp.array([[[.6, .4], [.6, .4], [.5, .5]]]))
      >>> state = jaxctc.prefix_beam_search_init(1, 2, max_label_length=3)
      >>> state = jaxctc.prefix_beam_search_update(state, x[:, :2], jnp.zeros((1, 2)))
      >>> state = jaxctc.prefix_beam_search_update(
      ...     state, jnp.concatenate([x[:, 2:], x[:, 2:]], 1),
      ...     jnp.array([[0.0, 1.0]]))
      >>> int(state.frame)
      4
    """
    check_state(state, PrefixBeamSearchState, "prefix_beam_search")
    logits, logit_paddings = check_chunk(
        logits,
        logit_paddings,
        state.blank_id,
        state.offset.shape[0],
        state.num_classes,
        state.offset.dtype,
    )
    state, has_nan = _update(state, logits, logit_paddings)
    raise_on_nan(has_nan)
    return state


@jax.jit
def _update(state, logits, logit_paddings):
    width, max_length = state.beam_width, state.max_label_length
    fields = ("beams", "labels", "starts", "ends", "offset", "limited")
    state = dataclasses.replace(
        state, **sharded_like({f: getattr(state, f) for f in fields}, logits)
    )
    options = _beam.search_options(
        state.num_classes,
        state.blank_id,
        width,
        max_length,
        state.token_top_k,
        state.scorers,
    )
    beams, trace, offset, has_nan = _beam._search(
        logits,
        logit_paddings,
        state.token_min_log_prob,
        state.blank_skip_log_prob,
        state.scorers,
        options,
        init=state.beams,
    )
    valid = logit_paddings == 0
    frames = state.frame + jnp.arange(logits.shape[1], dtype=jnp.int32)

    def carry(labels, starts, ends, trace, valid, slot, sub):
        # Every beam's two best alignments, back to the chunk's start.
        (slot, sub), (position, token) = _beam.trace_back(
            slot, sub, trace, valid, max_length
        )
        spans = (labels[slot, sub], starts[slot, sub], ends[slot, sub])
        spans = add_spans(spans, position.T, token.T, frames)
        return jax.tree.map(lambda a: a.reshape(width, 2, max_length), spans)

    batch = logits.shape[0]
    pairs = (  # (beam, ending) for each of the 2W alignments, per sequence
        jnp.repeat(jnp.arange(width, dtype=jnp.int32), 2),
        jnp.tile(jnp.arange(2, dtype=jnp.int32), width),
    )
    slot, sub = sharded_like(
        tuple(jnp.broadcast_to(a, (batch, 2 * width)) for a in pairs), logits
    )
    labels, starts, ends = jax.vmap(carry)(
        state.labels, state.starts, state.ends, trace, valid, slot, sub
    )
    alive = jnp.logaddexp(beams.blank, beams.label) > -jnp.inf
    state = dataclasses.replace(
        state,
        beams=beams,
        labels=labels,
        starts=starts,
        ends=ends,
        offset=state.offset + offset,
        frame=state.frame + logits.shape[1],
        limited=state.limited | jnp.any(alive & (beams.length >= max_length), axis=1),
    )
    return state, has_nan


def prefix_beam_search_result(
    state: PrefixBeamSearchState, top_paths: int = 1
) -> Hypotheses:
    """The best hypotheses of a streaming prefix beam search so far.

    Pure: the scorers' end terms (an LM's end of sentence, a hotword's
    unfinished match) are applied to what it returns, not to ``state``, so it
    can be read mid-stream and the stream continued.

    Args:
      state: from :func:`prefix_beam_search_update`.
      top_paths: ``P <= W``, the hypotheses returned per sequence.

    Returns:
      :class:`Hypotheses` as :func:`prefix_beam_search` returns them, with
      ``L = max_label_length``; ``starts``/``ends`` are frame numbers in the
      stream (its first frame is 0).

    Raises:
      TypeError: if ``state`` is not a :class:`PrefixBeamSearchState`, or
        ``top_paths`` is not a Python int.
      ValueError: for ``top_paths`` outside ``[1, beam_width]``.

    Examples:
      Before any frame: the empty labelling, probability 1.

      >>> import jaxctc
      >>> state = jaxctc.prefix_beam_search_init(1, 3, max_label_length=2)
      >>> jaxctc.prefix_beam_search_result(state).log_probs.tolist()
      [[0.0]]
    """
    check_state(state, PrefixBeamSearchState, "prefix_beam_search")
    paths = python_int("top_paths", top_paths, 1)
    if paths > state.beam_width:
        raise ValueError(
            f"`top_paths` must be <= `beam_width` ({state.beam_width}), got {paths}."
        )
    return _result(state, paths)


@functools.partial(jax.jit, static_argnums=1)
def _result(state, paths):
    max_length = state.max_label_length

    def one(beams, labels, starts, ends, offset):
        ranked = _beam.rank_beams(beams, offset, paths, state.scorers)
        length = jnp.where(ranked.alive, beams.length[ranked.slot], 0)
        inside = jnp.arange(max_length, dtype=jnp.int32)[None, :] < length[:, None]
        spans = (
            labels[ranked.slot, ranked.sub],
            starts[ranked.slot, ranked.sub],
            ends[ranked.slot, ranked.sub],
        )
        labels, starts, ends = finish_spans(spans)
        return Hypotheses(
            jnp.where(inside, labels, 0),
            length_paddings(length, max_length),
            ranked.log_probs,
            jnp.where(inside, starts, -1),
            jnp.where(inside, ends, -1),
            ranked.ranks,
        )

    return jax.vmap(one)(
        state.beams, state.labels, state.starts, state.ends, state.offset
    )
