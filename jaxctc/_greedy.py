"""Greedy (best-path) decoding, in one shot or over a stream of chunks.

Both run one function, :func:`_advance`, over frames: the one-shot decoder
over all of them from the empty state, the streaming one chunk by chunk.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from jaxctc import _frames
from jaxctc._checks import (
    check_bool,
    check_chunk,
    check_decoder_inputs,
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


def greedy_decode(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    *,
    blank_id: int = 0,
    merge_repeated: bool = True,
) -> Hypotheses:
    r"""Best-path decoding: the most probable class per frame, collapsed.

    The most probable class of every valid frame (the best path) is collapsed
    by merging repeated classes (when ``merge_repeated``) and removing blanks.
    Padded frames are skipped, so a class repeated across a padded frame is
    merged. Ties go to the lower class index.

    Args:
      logits: ``[B, T, K]`` unnormalised scores (``log_softmax`` is applied),
        any float dtype; bf16/f16 are read as they are and computed in
        float32. ``-inf`` masks a class.
      logit_paddings: ``[B, T]``, 1.0 on padded frames, 0.0 elsewhere.
      blank_id: the blank's class index, in ``[0, K)``.
      merge_repeated: merge runs of the same class into one token (CTC's
        collapse); with False every non-blank frame is a token.

    Returns:
      :class:`Hypotheses` with ``labels [B, T]`` int32 (padded with 0),
      ``label_paddings [B, T]`` float32, ``log_probs [B]`` in the compute
      dtype and ``starts``/``ends [B, T]``: the first and last valid frame of
      each token's run, -1 where padded. ``log_probs`` is the log-probability
      of the single best alignment, always ``<= 0`` (0 for a sequence with no
      valid frame, ``-inf`` if a valid frame has only ``-inf`` logits): a
      lower bound on ``log P(labels | x)``, which sums over all alignments of
      the labels (see :func:`sequence_log_probs`). TF's
      ``ctc_greedy_decoder`` and Keras' ``ctc_decode`` instead return the
      negated sum of the *unnormalised* maximal inputs.

    Raises:
      ValueError: at trace time, for a bad rank or shape or a ``blank_id``
        out of range; with concrete values (outside ``jit``), for NaN or
        ``+inf`` logits (under ``jit``: an unspecified hypothesis and score)
        or paddings that are not 0/1.
      TypeError: for non-float ``logits``, a non-int ``blank_id`` or a
        non-bool ``merge_repeated``.

    Notes:
      With :math:`\ell_t = \log\mathrm{softmax}(x_t)`, the best path is
      :math:`\hat\pi_t = \arg\max_k \ell_{t,k}` and

      .. math::
          \mathrm{log\_probs} = \sum_{t \text{ valid}} \max_k \ell_{t,k}
              = \log P(\hat\pi \mid x).

    Examples:
      Blank is 0; the best path ``a a - b`` collapses to ``[1, 2]`` (``a`` on
      frames 0-1, ``b`` on frame 3) with probability ``0.9 ** 4``:

      >>> import jax.numpy as jnp, jaxctc
      >>> p = jnp.array([[[.05, .9, .05], [.05, .9, .05],
      ...                 [.9, .05, .05], [.05, .05, .9]]])
      >>> hyp = jaxctc.greedy_decode(jnp.log(p), jnp.zeros((1, 4)))
      >>> hyp.labels[0, :2].tolist(), hyp.label_paddings[0].tolist()
      ([1, 2], [0.0, 0.0, 1.0, 1.0])
      >>> round(float(hyp.log_probs[0]), 4), round(4 * float(jnp.log(.9)), 4)
      (-0.4214, -0.4214)
      >>> hyp.starts[0, :2].tolist(), hyp.ends[0, :2].tolist()
      ([0, 3], [1, 3])
    """
    logits, logit_paddings, blank_id = check_decoder_inputs(
        logits, logit_paddings, blank_id
    )
    merge_repeated = check_bool("merge_repeated", merge_repeated)
    hyp, has_nan = _greedy(logits, logit_paddings, blank_id, merge_repeated)
    raise_on_nan(has_nan)
    return hyp


@functools.partial(jax.jit, static_argnames=("blank_id", "merge_repeated"))
def _greedy(logits, logit_paddings, blank_id, merge_repeated):
    batch, frames, num_classes = logits.shape
    state = _initial(
        batch,
        num_classes,
        blank_id,
        merge_repeated,
        frames,
        compute_dtype(logits.dtype),
    )
    state, has_nan = _advance(state, logits, logit_paddings)
    return _hypotheses(state), has_nan


# ----------------------------------------------------------------------------
# Streaming: the same decoding over chunks of frames
# ----------------------------------------------------------------------------


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "last",
        "labels",
        "starts",
        "ends",
        "num_labels",
        "log_probs",
        "frame",
    ],
    meta_fields=["num_classes", "blank_id", "merge_repeated", "max_label_length"],
)
@dataclasses.dataclass(frozen=True)
class GreedyDecodeState:
    """The state of a streaming greedy decoding, a pytree of fixed size.

    Made by :func:`greedy_decode_init`, advanced by
    :func:`greedy_decode_update`, read by :func:`greedy_decode_result`.
    ``B`` sequences, ``L = max_label_length``.

    Attributes:
      last: ``[B]`` int32, the best class of the last valid frame seen (-1
        before the first): a token that repeats it across chunks is merged.
      labels: ``[B, L]`` int32, the tokens so far (0 past the end).
      starts: ``[B, L]`` int32, each token's first frame (a sentinel above
        every frame number past the end).
      ends: ``[B, L]`` int32, each token's last frame (-1 past the end).
      num_labels: ``[B]`` int32, the tokens so far, also those beyond ``L``
        (which are not kept: see :func:`greedy_decode_result`).
      log_probs: ``[B]`` the best path's log-probability so far.
      frame: ``[]`` int32, the frames seen (padded ones included).
      num_classes, blank_id, merge_repeated, max_label_length: the static
        configuration.
    """

    last: jax.Array
    labels: jax.Array
    starts: jax.Array
    ends: jax.Array
    num_labels: jax.Array
    log_probs: jax.Array
    frame: jax.Array
    num_classes: int
    blank_id: int
    merge_repeated: bool
    max_label_length: int


def greedy_decode_init(
    batch_size: int,
    num_classes: int,
    *,
    blank_id: int = 0,
    merge_repeated: bool = True,
    max_label_length: int,
    dtype=jnp.float32,
) -> GreedyDecodeState:
    """The state of a streaming :func:`greedy_decode` before any frame.

    ``update`` the state with each chunk of frames as it arrives, read the
    decoding so far with :func:`greedy_decode_result` at any time. For every
    way of cutting ``[B, T, K]`` logits into chunks the result after the last
    chunk equals ``greedy_decode`` on the whole (``L = T``): labels,
    paddings, ``starts``/``ends`` (frame numbers from the stream's first
    frame) identical, ``log_probs`` equal to float rounding. A run of a
    class is merged across chunks. The state has a fixed size, ``O(B L)``.

    Args:
      batch_size: ``B``, the sequences decoded side by side.
      num_classes: ``K``, the classes of the chunks' logits.
      blank_id: the blank's class index, in ``[0, K)``.
      merge_repeated: as in :func:`greedy_decode`.
      max_label_length: ``L``, the tokens kept per sequence. Tokens beyond
        them are dropped, never overwritten: the result then has the first
        ``L`` tokens and ``GreedyDecodeState.num_labels > L`` says so.
      dtype: the compute dtype of the scores (float32, or float64). Chunks
        of another float dtype are cast to it (bf16 and f16 chunks are read
        as they are into a float32 state).

    Returns:
      A :class:`GreedyDecodeState`: no frame seen.

    Raises:
      ValueError: for ``batch_size < 0``, ``num_classes < 1``, a
        ``blank_id`` out of range or ``max_label_length < 0``.
      TypeError: for options that are not Python ints (``merge_repeated``:
        a bool).

    Examples:
      ``greedy_decode``'s example, two frames at a time:

      >>> import jax.numpy as jnp, jaxctc
      >>> p = jnp.array([[[.05, .9, .05], [.05, .9, .05],
      ...                 [.9, .05, .05], [.05, .05, .9]]])
      >>> state = jaxctc.greedy_decode_init(1, 3, max_label_length=4)
      >>> for t in (0, 2):
      ...     state = jaxctc.greedy_decode_update(
      ...         state, jnp.log(p[:, t : t + 2]), jnp.zeros((1, 2)))
      >>> hyp = jaxctc.greedy_decode_result(state)
      >>> hyp.labels[0, :2].tolist(), hyp.starts[0, :2].tolist()
      ([1, 2], [0, 3])
    """
    batch, num_classes, blank_id = check_stream(batch_size, num_classes, blank_id)
    merge_repeated = check_bool("merge_repeated", merge_repeated)
    max_length = python_int("max_label_length", max_label_length, 0)
    dtype = compute_dtype(dtype)
    return _initial(batch, num_classes, blank_id, merge_repeated, max_length, dtype)


def greedy_decode_update(
    state: GreedyDecodeState,
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
) -> GreedyDecodeState:
    """Advances a streaming greedy decoding by one chunk of frames.

    Args:
      state: from :func:`greedy_decode_init` or an earlier update.
      logits: ``[B, C, K]`` the chunk's unnormalised scores (any ``C >= 0``).
      logit_paddings: ``[B, C]``, 1.0 on padded frames (skipped; they still
        count in the frame numbers), 0.0 elsewhere.

    Returns:
      The state after the chunk (``state`` itself is not changed).

    Raises:
      TypeError: if ``state`` is not a :class:`GreedyDecodeState`.
      ValueError: at trace time, if ``logits``' ``B`` or ``K`` differ from the
        state's, or for a bad rank or shape; with concrete values (outside
        ``jit``), for NaN or ``+inf`` logits or paddings that are not 0/1.

    Examples:
      A run of class 1 cut by the chunk edge stays one token:

      >>> import jax.numpy as jnp, jaxctc
      >>> x = jnp.log(jnp.array([[[.1, .9], [.1, .9], [.9, .1]]]))
      >>> state = jaxctc.greedy_decode_init(1, 2, max_label_length=3)
      >>> state = jaxctc.greedy_decode_update(state, x[:, :1], jnp.zeros((1, 1)))
      >>> state = jaxctc.greedy_decode_update(state, x[:, 1:], jnp.zeros((1, 2)))
      >>> int(state.num_labels[0]), int(state.frame)
      (1, 3)
    """
    check_state(state, GreedyDecodeState, "greedy_decode")
    logits, logit_paddings = check_chunk(
        logits,
        logit_paddings,
        state.blank_id,
        state.last.shape[0],
        state.num_classes,
        state.log_probs.dtype,
    )
    state, has_nan = _update(state, logits, logit_paddings)
    raise_on_nan(has_nan)
    return state


def greedy_decode_result(state: GreedyDecodeState) -> Hypotheses:
    """The greedy decoding of the frames seen so far (pure).

    Args:
      state: from :func:`greedy_decode_init` or :func:`greedy_decode_update`.

    Returns:
      :class:`Hypotheses` as :func:`greedy_decode` returns them, ``[B, L]``
      with ``L = max_label_length``: the first ``L`` tokens where there are
      more (then ``state.num_labels > L``).

    Raises:
      TypeError: if ``state`` is not a :class:`GreedyDecodeState`.

    Examples:
      Before any frame: no token, log-probability 0.

      >>> import jaxctc
      >>> hyp = jaxctc.greedy_decode_result(
      ...     jaxctc.greedy_decode_init(1, 3, max_label_length=2))
      >>> hyp.label_paddings.tolist(), hyp.log_probs.tolist()
      ([[1.0, 1.0]], [0.0])
    """
    check_state(state, GreedyDecodeState, "greedy_decode")
    return _result(state)


def _initial(batch, num_classes, blank_id, merge_repeated, max_length, dtype):
    labels, starts, ends = empty_spans((batch, max_length))
    return GreedyDecodeState(
        last=jnp.full((batch,), -1, jnp.int32),
        labels=labels,
        starts=starts,
        ends=ends,
        num_labels=jnp.zeros((batch,), jnp.int32),
        log_probs=jnp.zeros((batch,), dtype),
        frame=jnp.zeros((), jnp.int32),
        num_classes=num_classes,
        blank_id=blank_id,
        merge_repeated=merge_repeated,
        max_label_length=max_length,
    )


def _advance(state, logits, logit_paddings):
    """The state after the frames of ``logits``, and per sequence whether a
    logit was NaN or +inf."""
    batch, frames, _ = logits.shape
    fields = ("last", "labels", "starts", "ends", "num_labels", "log_probs")
    state = dataclasses.replace(
        state, **sharded_like({f: getattr(state, f) for f in fields}, logits)
    )
    valid = logit_paddings == 0
    best, top = _frames.argmax(logits)
    shift = jnp.where(jnp.isfinite(top), top, 0.0)
    # The best class's log-softmax: 0 - log_sum, or -inf on a frame of -inf.
    frame_score = (top - shift) - _frames.log_sum(logits, shift)
    score = jnp.sum(jnp.where(valid, frame_score, 0.0), axis=1)

    # The best class of the previous valid frame (the state's before the first).
    t = jnp.arange(frames, dtype=jnp.int32)
    last_valid = jax.lax.cummax(jnp.where(valid, t[None, :], -1), axis=1)
    prev = jnp.concatenate(
        [jnp.full((batch, min(frames, 1)), -1, jnp.int32), last_valid[:, :-1]], 1
    )
    at = jax.vmap(lambda b, p: b[p])
    prev_best = jnp.where(
        prev >= 0, at(best, jnp.maximum(prev, 0)), state.last[:, None]
    )
    in_token = valid & (best != state.blank_id)
    new_token = in_token & (best != prev_best) if state.merge_repeated else in_token
    # Frames of a merged run keep the index of the token that opened it (which
    # may be in an earlier chunk).
    count = jnp.cumsum(new_token, axis=1, dtype=jnp.int32)
    position = state.num_labels[:, None] + count - 1
    size = state.max_label_length
    position = jnp.where(in_token & (position < size), position, size)
    spans = (state.labels, state.starts, state.ends)
    labels, starts, ends = add_spans(spans, position, best, state.frame + t)
    last = state.last
    if frames:
        final = last_valid[:, -1]
        last = jnp.where(final >= 0, at(best, jnp.maximum(final, 0)), last)
    state = dataclasses.replace(
        state,
        last=last,
        labels=labels,
        starts=starts,
        ends=ends,
        num_labels=state.num_labels + (count[:, -1] if frames else 0),
        log_probs=state.log_probs + score,
        frame=state.frame + frames,
    )
    return state, jnp.any(jnp.isnan(top) | (top == jnp.inf), axis=1)


def _hypotheses(state):
    size = state.max_label_length
    length = jnp.minimum(state.num_labels, size)
    labels, starts, ends = finish_spans((state.labels, state.starts, state.ends))
    return Hypotheses(
        labels,
        length_paddings(length, size),
        jnp.minimum(state.log_probs, 0.0),
        starts,
        ends,
    )


_update = jax.jit(_advance)
_result = jax.jit(_hypotheses)
