"""Greedy (best-path) decoding."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxctc import _frames, _lattice
from jaxctc._hypotheses import (
    Hypotheses,
    check_inputs,
    length_paddings,
    raise_on_nan,
    scatter_spans,
)


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
    class repeated across a padded frame is merged. Ties go to the lower
    class index.

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
      each token's run, -1 where padded. ``log_probs`` is

      .. math::
          \mathrm{log\_probs} = \sum_{t \text{ valid}} \max_k
              \log \mathrm{softmax}(x_t)_k = \log P(\hat\pi \mid x),

      the log-probability of the single best alignment, always ``<= 0`` (0
      for a sequence with no valid frame, ``-inf`` if a valid frame has only
      ``-inf`` logits). It is a lower bound on
      :math:`\log P(\mathrm{labels} \mid x)`, which sums over all alignments
      of the labels (see :func:`sequence_log_probs`). TF's
      ``ctc_greedy_decoder`` and Keras' ``ctc_decode`` instead return the
      negated sum of the *unnormalised* maximal inputs.

    Raises:
      ValueError: at trace time, for a bad rank or shape or a ``blank_id``
        out of range; with concrete values (outside ``jit``), for NaN or
        ``+inf`` logits (under ``jit``: an unspecified hypothesis and score)
        or paddings that are not 0/1.
      TypeError: for non-float ``logits``, a non-int ``blank_id`` or a
        non-bool ``merge_repeated``.

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
    logits, logit_paddings, blank_id = check_inputs(logits, logit_paddings, blank_id)
    merge_repeated = _lattice.check_bool("merge_repeated", merge_repeated)
    hyp, has_nan = _greedy(logits, logit_paddings, blank_id, merge_repeated)
    raise_on_nan(has_nan)
    return hyp


@functools.partial(jax.jit, static_argnums=(2, 3))
def _greedy(logits, logit_paddings, blank_id, merge_repeated):
    batch, frames, _ = logits.shape
    valid = logit_paddings == 0
    best, top = _frames.argmax(logits)
    shift = jnp.where(jnp.isfinite(top), top, 0.0)
    # The best class's log-softmax: 0 - log_sum, or -inf on a frame of -inf.
    frame_score = (top - shift) - _frames.log_sum(logits, shift)
    score = jnp.sum(jnp.where(valid, frame_score, 0.0), axis=1)

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
    labels, starts, ends = scatter_spans(position, best, t, frames)
    num_labels = jnp.sum(new_token, axis=1, dtype=jnp.int32)
    hyp = Hypotheses(
        labels,
        length_paddings(num_labels, frames),
        jnp.minimum(score, 0.0),
        starts,
        ends,
    )
    return hyp, jnp.any(jnp.isnan(top) | (top == jnp.inf), axis=1)
