"""CTC decoders: greedy, prefix beam search, and exact rescoring of hypotheses.

Every decoder applies ``log_softmax`` to its logits first, so logits and
log-probabilities decode alike, and returns :class:`Hypotheses` padded like the
loss's inputs, so hypotheses feed straight back into :func:`jaxctc.ctc_loss` or
:func:`sequence_log_probs`.

The beam search keeps a fixed-shape state of ``W`` prefixes and runs one
``lax.scan`` over frames. Two beams whose prefixes become identical must be
merged; comparing stored prefixes would cost ``O(W^2 L)`` per frame with ``L``
up to ``T``, so each beam carries instead two 32-bit rolling hashes of its
prefix, the hashes of the prefix without its last token, its last token and
its length. The extension ``prefix(w) + k`` equals the beam ``w'`` exactly when
``w'`` has length ``len(w) + 1``, last token ``k`` and parent hashes equal to
``w``'s hashes, an ``O(W^2)`` comparison independent of ``T`` (a false match
needs two independent 32-bit hashes to collide at once). Per frame only the
``W + 1`` most probable allowed classes compete as extensions (chosen for all
frames at once before the scan), which is exact (see ``_beam_step``) and makes
the step independent of ``K``. The labels are not
stored per beam either: each frame records where every beam's blank- and
label-ending best alignment came from (``O(W)`` integers), and one reverse scan
at the end reads the labels and the frames of their tokens back off the best
alignment.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxctc import _lattice
from jaxctc._loss import ctc_loss, feasible

_NEG_INF = -np.inf


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
    """

    labels: jax.Array
    label_paddings: jax.Array
    log_probs: jax.Array
    starts: jax.Array | None = None
    ends: jax.Array | None = None


# So that an exported decoder can be serialized with its output.
jax.export.register_namedtuple_serialization(
    Hypotheses, serialized_name="jaxctc.Hypotheses"
)


def log_softmax(logits):
    """``log_softmax`` that maps a frame of only ``-inf`` logits to ``-inf``.

    ``jax.nn.log_softmax`` gives NaN there (``-inf - -inf``).
    """
    m = jnp.max(logits, axis=-1, keepdims=True)
    shifted = logits - jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    lse = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
    return shifted - jnp.where(jnp.isfinite(lse), lse, 0.0)


def _check(logits, logit_paddings, blank_id):
    logits, logit_paddings = _lattice.check_logits(logits, logit_paddings)
    blank_id = _lattice.check_blank_id(blank_id, logits.shape[2])
    _lattice.check_frame_values(logits, logit_paddings)
    return logits, logit_paddings, blank_id


def _log_probs(logits, logit_paddings):
    """Log-softmax in the compute dtype and the valid-frame mask ``[B, T]``."""
    dtype = _lattice.compute_dtype(logits.dtype)
    return log_softmax(logits.astype(dtype)), logit_paddings == 0


def _top_k(x, k):
    """The ``k`` largest entries along the last axis and their indices.

    ``jax.lax.approx_max_k`` with ``recall_target=1.0``, i.e. the exact top
    ``k``, sorted (on CPU it returns what ``jax.lax.top_k`` returns, ties to
    the lower index, at the same speed; tested against brute force). Not
    ``top_k`` itself: XLA's SPMD partitioner all-gathers the operand of a
    ``top_k`` (XLA:CPU's TopK call) but splits ``approx_max_k`` along its other
    axes, so a batch-sharded input is decoded with no communication.
    """
    return jax.lax.approx_max_k(x, k, recall_target=1.0)


def _check_int(name, value, low):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be a Python int, got {value!r}.")
    if value < low:
        raise ValueError(f"`{name}` must be >= {low}, got {value}.")
    return int(value)


def _scatter_spans(positions, tokens, frames, size):
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


# ----------------------------------------------------------------------------
# Greedy
# ----------------------------------------------------------------------------


def greedy_decode(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    *,
    blank_id: int = 0,
    merge_repeated: bool = True,
) -> Hypotheses:
    r"""Best-path decoding: the most probable class per frame, collapsed.

    The best path :math:`\hat\pi_t = \arg\max_k \mathrm{softmax}(x_t)_k` over
    the valid frames is collapsed by merging repeated classes (when
    ``merge_repeated``) and removing blanks. Padded frames are skipped, so a
    class repeated across a padded frame is merged.

    .. math::
        \mathrm{log\_probs} = \sum_{t \text{ valid}} \max_k
            \log \mathrm{softmax}(x_t)_k = \log P(\hat\pi \mid x),

    the log-probability of the single best alignment, always ``<= 0``. It is a
    lower bound on :math:`\log P(\mathrm{labels} \mid x)`, which sums over
    all alignments of the labels (see :func:`sequence_log_probs`). TF's
    ``ctc_greedy_decoder`` and Keras' ``ctc_decode`` instead return the
    negated sum of the *unnormalised* maximal inputs.

    Args:
      logits: ``[B, T, K]`` unnormalised scores (``log_softmax`` is applied),
        any float dtype; bf16/f16 run in float32. ``-inf`` masks a class.
      logit_paddings: ``[B, T]``, 1.0 on padded frames, 0.0 elsewhere.
      blank_id: the blank's class index, in ``[0, K)``.
      merge_repeated: merge runs of the same class into one token (CTC's
        collapse); with False every non-blank frame is a token.

    Returns:
      :class:`Hypotheses` with ``labels [B, T]`` int32 (padded with 0),
      ``label_paddings [B, T]`` float32, ``log_probs [B]`` as above in the
      compute dtype (0 for a sequence with no valid frame, ``-inf`` if a valid
      frame has only ``-inf`` logits), and ``starts``/``ends [B, T]``: the
      first and last valid frame of each token's run, -1 where padded.

    Raises:
      ValueError: at trace time, for a bad rank or shape or a ``blank_id``
        out of range.
      TypeError: for non-float ``logits`` or a non-int ``blank_id``.

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
    logits, logit_paddings, blank_id = _check(logits, logit_paddings, blank_id)
    return _greedy(logits, logit_paddings, blank_id, merge_repeated)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _greedy(logits, logit_paddings, blank_id, merge_repeated):
    log_probs, valid = _log_probs(logits, logit_paddings)
    batch, frames, _ = log_probs.shape
    best = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
    score = jnp.sum(jnp.where(valid, jnp.max(log_probs, axis=-1), 0.0), axis=1)

    # The best class of the previous valid frame (-1 before the first).
    t = jnp.arange(frames, dtype=jnp.int32)
    last_valid = jax.lax.cummax(jnp.where(valid, t[None, :], -1), axis=1)
    prev = jnp.concatenate(
        [jnp.full((batch, min(frames, 1)), -1, jnp.int32), last_valid[:, :-1]], 1
    )
    prev_best = jnp.where(
        prev >= 0, jax.vmap(lambda b, p: b[p])(best, jnp.maximum(prev, 0)), -1
    )
    in_token = valid & (best != blank_id)
    new_token = in_token & (best != prev_best) if merge_repeated else in_token
    # Frames of a merged run keep the index of the token that opened it.
    position = jnp.cumsum(new_token, axis=1, dtype=jnp.int32) - 1
    position = jnp.where(in_token, position, frames)
    labels, starts, ends = _scatter_spans(position, best, t, frames)
    num_labels = jnp.sum(new_token, axis=1, dtype=jnp.int32)
    label_paddings = (t[None, :] >= num_labels[:, None]).astype(jnp.float32)
    return Hypotheses(labels, label_paddings, jnp.minimum(score, 0.0), starts, ends)


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
    r"""Exact :math:`\log P(\mathrm{labels} \mid x)` of given hypotheses.

    .. math::
        \log P(y \mid x) = \log \sum_{\pi \in \mathcal{B}^{-1}(y)}
            \prod_t \mathrm{softmax}(x_t)_{\pi_t} = -\mathrm{ctc\_loss},

    summed over every alignment of ``y``, by the loss's forward recursion.
    Use it to rescore decoder output (beam scores only count the alignments
    the beam kept), as a confidence, or to compare hypotheses from different
    decoders.

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
        ``[0, K)`` and paddings that are not 0/1 (see :func:`jaxctc.ctc_loss`).
      TypeError: for non-float ``logits`` or non-integer ``labels``.

    Examples:
      Two uniform frames over blank and ``a``: ``[a]`` has three of the four
      alignments, the empty labelling one:

      >>> import jax.numpy as jnp, jaxctc
      >>> lp = jaxctc.sequence_log_probs(jnp.zeros((1, 2, 2)), jnp.zeros((1, 2)),
      ...     jnp.array([[[1], [0]]]), jnp.array([[[0.0], [1.0]]]))
      >>> [round(float(x), 4) for x in jnp.exp(lp[0])]
      [0.75, 0.25]
    """
    logits, logit_paddings = _lattice.check_logits(logits, logit_paddings)
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
    flat, flat_paddings = _lattice.check_labels(
        labels.reshape(-1, labels.shape[-1]),
        label_paddings.reshape(-1, labels.shape[-1]),
        labels.shape[0] * paths,
    )
    blank_id = _lattice.check_blank_id(blank_id, logits.shape[2])
    _lattice.check_values(logits, logit_paddings, flat, flat_paddings, blank_id, False)
    log_p = _rescore(logits, logit_paddings, flat, flat_paddings, blank_id, paths)
    return log_p.reshape(labels.shape[:-1])


@functools.partial(jax.jit, static_argnums=(4, 5))
def _rescore(logits, logit_paddings, labels, label_paddings, blank_id, paths):
    if paths != 1:
        logits = jnp.repeat(logits, paths, axis=0)
        logit_paddings = jnp.repeat(logit_paddings, paths, axis=0)
    log_epsilon = -1e5
    loss = ctc_loss(
        logits,
        logit_paddings,
        labels,
        label_paddings,
        blank_id=blank_id,
        log_epsilon=log_epsilon,
    )
    # Paths through clamped (-inf) emissions score about log_epsilon or less.
    possible = feasible(logit_paddings, labels, label_paddings) & (
        loss < -0.5 * log_epsilon
    )
    return jnp.where(possible, -loss, _NEG_INF)


# ----------------------------------------------------------------------------
# Prefix beam search
# ----------------------------------------------------------------------------

_M1, _M2 = np.uint32(0x9E3779B1), np.uint32(0x85EBCA77)
_SEED1, _SEED2 = np.uint32(0x2545F491), np.uint32(0x6C8E9CF5)


def _fmix(h):
    """MurmurHash3's 32-bit finaliser, a bijection that spreads every bit."""
    h = h ^ (h >> 16)
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _extend_hash(h, token, mult):
    return _fmix(h * mult + (token.astype(jnp.uint32) + np.uint32(1)))


class _Beams(NamedTuple):
    """The state of ``W`` prefixes (one utterance), each field ``[W]``.

    ``blank``/``label``: log-probability of the prefix over the frames so far
    with the last frame a blank / the prefix's last token (summed over the
    alignments the beam kept); ``best_blank``/``best_label``: the same for the
    single best alignment; ``last``: last token (-1 for the empty prefix);
    ``length``; ``hash1``/``hash2``: prefix hashes; ``parent1``/``parent2``:
    hashes of the prefix without its last token.
    """

    blank: jax.Array
    label: jax.Array
    best_blank: jax.Array
    best_label: jax.Array
    last: jax.Array
    length: jax.Array
    hash1: jax.Array
    hash2: jax.Array
    parent1: jax.Array
    parent2: jax.Array


def _initial_beams(width, dtype):
    neg = jnp.full((width,), _NEG_INF, dtype)
    empty = neg.at[0].set(0.0)
    zeros = jnp.zeros((width,), jnp.uint32)
    return _Beams(
        blank=empty,
        label=neg,
        best_blank=empty,
        best_label=neg,
        last=jnp.full((width,), -1, jnp.int32),
        length=jnp.zeros((width,), jnp.int32),
        hash1=zeros + _SEED1,
        hash2=zeros + _SEED2,
        parent1=zeros,
        parent2=zeros,
    )


def _beam_step(
    beams, log_probs, token_log_probs, floor, candidates, blank_id, max_length
):
    """One frame of prefix beam search for one utterance.

    ``log_probs [K]`` is the frame's log-softmax, ``token_log_probs [K]`` the
    same with ``-inf`` for the classes that may not extend a prefix (the blank,
    pruned classes; also those below ``floor``, a scalar), and
    ``candidates [C]`` the classes whose extensions
    compete for the beam, the frame's most probable allowed ones. ``C = W + 1``
    loses nothing: an extension ``(w, k)`` with ``W + 1`` better classes
    ``k'`` is beaten by at least ``W`` distinct candidates (the extensions
    ``(w, k')`` or the beams they merge into; one ``k'`` may repeat ``w``'s
    last token). Returns the new beams and, per new beam, the source of its
    best blank- and label-ending alignment (``2 * beam + (0 blank | 1
    label)`` at the previous frame).
    """
    width = beams.blank.shape[0]
    num_candidates = candidates.shape[0]
    w = jnp.arange(width, dtype=jnp.int32)
    total = jnp.logaddexp(beams.blank, beams.label)
    alive = total > _NEG_INF
    lp_blank = log_probs[blank_id]
    has_last = beams.length > 0
    last = jnp.maximum(beams.last, 0)
    lp_last = jnp.where(has_last, log_probs[last], _NEG_INF)
    best_any = jnp.maximum(beams.best_blank, beams.best_label)
    best_sub = (beams.best_label > beams.best_blank).astype(jnp.int32)

    # Stay: the prefix is unchanged (a blank, or its last token repeated).
    stay_blank = total + lp_blank
    stay_label = beams.label + lp_last
    stay_best_blank = best_any + lp_blank
    stay_src_blank = 2 * w + best_sub
    stay_best_label = beams.best_label + lp_last
    stay_src_label = 2 * w + 1

    # Extend: prefix + token. Repeating the last token needs a blank between.
    candidate_lp = token_log_probs[candidates]
    same = candidates[None, :] == beams.last[:, None]  # [W, C]
    ext = jnp.where(same, beams.blank[:, None], total[:, None]) + candidate_lp[None]
    ext = jnp.where((beams.length < max_length)[:, None], ext, _NEG_INF)

    # Merge: the extension of beam `parent` by `last[w']` is beam w'.
    match = (
        (alive[:, None] & alive[None, :])
        & (beams.length[:, None] + 1 == beams.length[None, :])
        & (beams.hash1[:, None] == beams.parent1[None, :])
        & (beams.hash2[:, None] == beams.parent2[None, :])
    )  # [parent, child]
    merged = jnp.any(match, axis=0)
    parent = jnp.argmax(match, axis=0).astype(jnp.int32)
    repeat = beams.last == beams.last[parent]
    lp_token = token_log_probs[last]
    lp_token = jnp.where(lp_token >= floor, lp_token, _NEG_INF)
    merged_mass = jnp.where(repeat, beams.blank[parent], total[parent]) + lp_token
    stay_label = jnp.logaddexp(stay_label, jnp.where(merged, merged_mass, _NEG_INF))
    merged_best = jnp.where(
        merged,
        jnp.where(repeat, beams.best_blank[parent], best_any[parent]) + lp_token,
        _NEG_INF,
    )
    merged_src = 2 * parent + jnp.where(repeat, 0, best_sub[parent])
    better = merged_best > stay_best_label
    stay_best_label = jnp.where(better, merged_best, stay_best_label)
    stay_src_label = jnp.where(better, merged_src, stay_src_label)
    # ... and leaves the candidates (where it is one).
    column = jnp.argmax(same, axis=1).astype(jnp.int32)  # w's last token
    drop = merged & jnp.any(same, axis=1)
    ext = ext.at[jnp.where(drop, parent, width), column].set(_NEG_INF, mode="drop")

    # Keep the W most probable of the W stays and W * C extensions.
    scores = jnp.concatenate([jnp.logaddexp(stay_blank, stay_label), ext.ravel()])
    _, index = _top_k(scores, width)
    stay = index < width
    flat = jnp.maximum(index - width, 0)
    src = jnp.where(stay, index, flat // num_candidates)
    column = flat % num_candidates
    token = candidates[column]
    ext_repeat = token == beams.last[src]
    ext_best = (
        jnp.where(ext_repeat, beams.best_blank[src], best_any[src])
        + candidate_lp[column]
    )
    ext_src = 2 * src + jnp.where(ext_repeat, 0, best_sub[src])
    new = _Beams(
        blank=jnp.where(stay, stay_blank[src], _NEG_INF),
        label=jnp.where(stay, stay_label[src], ext.ravel()[flat]),
        best_blank=jnp.where(stay, stay_best_blank[src], _NEG_INF),
        best_label=jnp.where(stay, stay_best_label[src], ext_best),
        last=jnp.where(stay, beams.last[src], token),
        length=beams.length[src] + jnp.where(stay, 0, 1),
        hash1=jnp.where(
            stay, beams.hash1[src], _extend_hash(beams.hash1[src], token, _M1)
        ),
        hash2=jnp.where(
            stay, beams.hash2[src], _extend_hash(beams.hash2[src], token, _M2)
        ),
        parent1=jnp.where(stay, beams.parent1[src], beams.hash1[src]),
        parent2=jnp.where(stay, beams.parent2[src], beams.hash2[src]),
    )
    sources = (
        jnp.where(stay, stay_src_blank[src], 0),
        jnp.where(stay, stay_src_label[src], ext_src),
    )
    return new, sources


def _search_one(
    init,
    log_probs,
    valid,
    token_log_probs,
    candidates,
    floor,
    blank_id,
    width,
    paths,
    max_length,
):
    """Prefix beam search over one utterance's ``[T, K]`` log-probabilities."""
    frames = log_probs.shape[0]

    def step(beams, x):
        lp, ok, tok_lp, cand, low = x
        new, (src_blank, src_label) = _beam_step(
            beams, lp, tok_lp, low, cand, blank_id, max_length
        )
        new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, beams)
        # The barrier keeps XLA:CPU from fusing these values into the update of
        # the whole [T, ...] trace buffer (which then costs O(T) per frame).
        trace = jax.lax.optimization_barrier(
            (src_blank, src_label, new.last, new.length)
        )
        return new, trace

    xs = (log_probs, valid, token_log_probs, candidates, floor)
    beams, trace = jax.lax.scan(step, init, xs)
    total = jnp.minimum(jnp.logaddexp(beams.blank, beams.label), 0.0)
    scores, slot = _top_k(total, paths)
    alive = scores > _NEG_INF
    sub = (beams.best_label[slot] > beams.best_blank[slot]).astype(jnp.int32)

    # Read each hypothesis' best alignment back, last frame first.
    def back(state, y):
        slot, sub = state
        src_blank, src_label, last, length, ok = y
        on_token = ok & (sub == 1) & alive
        position = jnp.where(on_token, length[slot] - 1, max_length)
        code = jnp.where(sub == 1, src_label[slot], src_blank[slot])
        state = (jnp.where(ok, code // 2, slot), jnp.where(ok, code % 2, sub))
        return state, (position, last[slot])

    _, (position, token) = jax.lax.scan(
        back, (slot, sub), (*trace, valid), reverse=True
    )
    t = jnp.arange(frames, dtype=jnp.int32)
    labels, starts, ends = _scatter_spans(position.T, token.T, t, max_length)
    length = jnp.where(alive, beams.length[slot], 0)
    label_paddings = (
        jnp.arange(max_length, dtype=jnp.int32)[None, :] >= length[:, None]
    ).astype(jnp.float32)
    return Hypotheses(labels, label_paddings, scores, starts, ends)


def prefix_beam_search(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    *,
    beam_width: int = 16,
    top_paths: int = 1,
    blank_id: int = 0,
    max_label_length: int | None = None,
    token_top_k: int | None = None,
    token_min_log_prob: float | None = None,
    blank_skip_log_prob: float | None = None,
) -> Hypotheses:
    r"""CTC prefix beam search: the most probable labellings, jittable.

    Keeps the ``beam_width`` most probable prefixes. Each prefix :math:`y`
    carries the probability of the frames so far over the alignments that
    spell it, split by whether the last frame is a blank
    (:math:`p_b`) or its last token (:math:`p_{nb}`). Per frame with
    :math:`\ell = \log\mathrm{softmax}(x_t)` and :math:`\oplus` the log-sum,

    .. math::
        p_b(y) &\leftarrow (p_b(y) \oplus p_{nb}(y)) + \ell_{\mathrm{blank}}, \\
        p_{nb}(y) &\leftarrow (p_{nb}(y) + \ell_{y_{-1}})
            \oplus \bigoplus_{y = y' k} (p_b(y') [\oplus p_{nb}(y')
            \text{ if } k \ne y'_{-1}]) + \ell_k,

    the extensions :math:`y' k` of every beam :math:`y'` by every class
    :math:`k`; an extension equal to an existing beam is merged into it by
    summing, and the ``W`` most probable prefixes are kept. The whole search
    is one ``lax.scan`` over frames with fixed shapes, vectorised over the
    batch, with per-frame work :math:`O(K \log W)` (choosing the ``W + 1``
    classes per frame that can enter the beam, done for all frames before the
    scan) plus :math:`O(W^2)` in the scan, no host callbacks, and a compile
    time independent of ``T``.

    Scores: ``log_probs`` is :math:`\log(p_b + p_{nb})` after the last frame,
    the log of the total probability of all alignments of that labelling that
    the beam kept, always ``<= 0``. It is a lower bound on
    :math:`\log P(\mathrm{labels} \mid x)` (exact when the beam never dropped
    a prefix of the labelling or a path to it; :func:`sequence_log_probs`
    gives the exact value). TF's ``ctc_beam_search_decoder`` reports the same
    kind of beam score, computed on its inputs as given; Keras'
    ``ctc_decode`` negates it.

    Args:
      logits: ``[B, T, K]`` unnormalised scores (``log_softmax`` is applied),
        any float dtype; bf16/f16 run in float32. ``-inf`` masks a class.
      logit_paddings: ``[B, T]``, 1.0 on padded frames (skipped), 0.0 elsewhere.
      beam_width: ``W``, the number of prefixes kept per frame.
      top_paths: ``P <= W``, the number of hypotheses returned per sequence.
      blank_id: the blank's class index, in ``[0, K)``.
      max_label_length: ``L``, the longest labelling considered (prefixes
        are not extended beyond it); default ``T``, which loses nothing.
      token_top_k: per frame, only the ``token_top_k`` most probable
        non-blank classes may extend a prefix (a speed option for large
        ``K``); default: all.
      token_min_log_prob: per frame, classes with a log-probability below this
        do not extend prefixes; default: no threshold.
      blank_skip_log_prob: frames whose blank log-probability exceeds this
        extend no prefix (prefixes only absorb the blank or repeat their last
        token there); default: off.

    Returns:
      :class:`Hypotheses` with ``labels [B, P, L]`` int32 (padded with 0),
      ``label_paddings [B, P, L]`` float32, ``log_probs [B, P]`` as above,
      best first, in the compute dtype, and ``starts``/``ends [B, P, L]``:
      the first and last frame of each token in the most probable alignment
      that the beam kept for the hypothesis. When fewer than ``P``
      hypotheses have nonzero probability the rest are marked with
      ``log_probs = -inf`` and all padding. A sequence with no valid frame
      gives the empty labelling with ``log_probs = 0``.

    Raises:
      ValueError: at trace time, for a bad rank or shape, a ``blank_id`` out
        of range, ``beam_width < 1``, ``top_paths`` outside ``[1,
        beam_width]``, ``max_label_length < 0`` or ``token_top_k < 1``.
      TypeError: for non-float ``logits`` or non-int options.

    Examples:
      Two frames, blank (0) with probability 0.6 and ``a`` (1) with 0.4: the
      labelling ``[a]`` has the alignments ``a-``, ``-a`` and ``aa``, total
      ``0.24 + 0.24 + 0.16 = 0.64``, the empty labelling ``--`` has ``0.36``:

      >>> import jax.numpy as jnp, jaxctc
      >>> logits = jnp.log(jnp.array([[[0.6, 0.4], [0.6, 0.4]]]))
      >>> hyp = jaxctc.prefix_beam_search(logits, jnp.zeros((1, 2)), top_paths=2)
      >>> hyp.labels[0, :, :1].tolist(), hyp.label_paddings[0, :, 0].tolist()
      ([[1], [0]], [0.0, 1.0])
      >>> [round(float(x), 4) for x in jnp.exp(hyp.log_probs[0])]
      [0.64, 0.36]

    References:
      Hannun et al., `First-pass large vocabulary continuous speech
      recognition using bi-directional recurrent DNNs
      <https://arxiv.org/abs/1408.2873>`_, 2014.
    """
    logits, logit_paddings, blank_id = _check(logits, logit_paddings, blank_id)
    _, frames, num_classes = logits.shape
    width = _check_int("beam_width", beam_width, 1)
    paths = _check_int("top_paths", top_paths, 1)
    if paths > width:
        raise ValueError(f"`top_paths` must be <= `beam_width` ({width}), got {paths}.")
    if max_label_length is None:
        max_length = frames
    else:
        max_length = _check_int("max_label_length", max_label_length, 0)
    top_k = None
    if token_top_k is not None:
        top_k = _check_int("token_top_k", token_top_k, 1)
        top_k = top_k if top_k < num_classes else None
    return _beam_search(
        logits,
        logit_paddings,
        token_min_log_prob,
        blank_skip_log_prob,
        blank_id=blank_id,
        width=width,
        paths=paths,
        max_length=max_length,
        top_k=top_k,
    )


@functools.partial(
    jax.jit, static_argnames=("blank_id", "width", "paths", "max_length", "top_k")
)
def _beam_search(
    logits,
    logit_paddings,
    min_log_prob,
    skip_log_prob,
    *,
    blank_id,
    width,
    paths,
    max_length,
    top_k,
):
    log_probs, valid = _log_probs(logits, logit_paddings)
    # A mask, not `.at[..., blank_id].set`: scatters break batch sharding.
    is_blank = jnp.arange(log_probs.shape[-1]) == blank_id
    token_log_probs = jnp.where(is_blank, _NEG_INF, log_probs)
    if min_log_prob is not None:
        token_log_probs = jnp.where(
            token_log_probs >= min_log_prob, token_log_probs, _NEG_INF
        )
    if skip_log_prob is not None:
        skip = log_probs[..., blank_id : blank_id + 1] > skip_log_prob
        token_log_probs = jnp.where(skip, _NEG_INF, token_log_probs)
    # The classes whose extensions compete per frame; W + 1 are enough to be
    # exact (see _beam_step). With top-k pruning the allowed classes are those
    # at or above the k-th log-probability, `floor`, of their frame.
    num_classes = log_probs.shape[-1]
    num_candidates = min(width + 1, num_classes, top_k or num_classes)

    # XLA:CPU takes its fast top-k path only when nothing but the top-k slice
    # of the sort is used; slicing the result again (the k-th value for
    # `floor`) falls back to a full sort, 8x slower at K = 1024 (measured).
    # The barriers keep the slices apart.
    def top(k):
        return jax.lax.optimization_barrier(_top_k(token_log_probs, k))

    candidate_lp, candidates = top(num_candidates)
    if top_k is None:
        # Derived from an input (not built fresh) so it keeps the batch sharding.
        floor = jnp.full_like(log_probs[..., 0], _NEG_INF)
    elif top_k == num_candidates:
        floor = candidate_lp[..., -1]
    else:
        floor = top(top_k)[0][..., -1]

    def one(init, lp, ok, tok_lp, cand, floor):
        return _search_one(
            init, lp, ok, tok_lp, cand, floor, blank_id, width, paths, max_length
        )

    # The initial beams, one set per sequence, derived from an input: the scan
    # carry is then batched (and batch-sharded) from the first trace of its
    # step; a constant carry mixes replicated and sharded operands in gathers.
    any_valid = jnp.any(valid, axis=1)
    init = jax.tree.map(
        lambda a: jnp.where(any_valid.reshape((-1,) + (1,) * a.ndim), a[None], a[None]),
        _initial_beams(width, log_probs.dtype),
    )

    # The barrier stops XLA from moving the pre-pass into the scan's body.
    inputs = jax.lax.optimization_barrier(
        (log_probs, valid, token_log_probs, candidates.astype(jnp.int32), floor)
    )
    return jax.vmap(one)(init, *inputs)
