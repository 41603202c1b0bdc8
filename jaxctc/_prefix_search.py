"""Graves' best-first prefix search decoding, on the host with NumPy.

The search expands, at every step, the prefix whose extensions are most
probable, and stops once no unexpanded prefix can beat the best complete
labelling found, so its answer is the most probable labelling. Its running time
depends on the data (exponential in the worst case), which has no fixed-shape
``jit`` form; it runs in float64 log-space on the host, one sequence at a time.
"""

from __future__ import annotations

import heapq
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jaxctc import _checks
from jaxctc._hypotheses import Hypotheses

_NEG_INF = -np.inf


def _log_sub(a, b):
    """``log(exp(a) - exp(b))`` elementwise for ``a >= b`` (``-inf`` if equal)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = a + np.log1p(-np.exp(b - a))
    return np.where(b < a, out, _NEG_INF)


class _Prefix:
    """A prefix and its forward variables over frames ``t = 0..T-1``.

    ``label[t]`` / ``blank[t]``: log-probability that frames ``0..t`` spell the
    prefix and frame ``t`` is its last token / a blank (Graves'
    :math:`\\gamma_t(p)^n`, :math:`\\gamma_t(p)^b`).
    """

    def __init__(self, tokens, label, blank):
        self.tokens, self.label, self.blank = tokens, label, blank


def _children(log_probs, prefix, tokens, blank_id):
    """Forward variables of ``prefix + k`` for every class ``k`` in ``tokens``.

    Returns ``(label [C, T], blank [C, T], starts_with [C])``,
    ``starts_with`` the log-probability that the labelling begins with
    ``prefix + k`` (Graves' ``prefixProb``).
    """
    frames = log_probs.shape[0]
    y = log_probs[:, tokens].T  # [C, T]
    y_blank = log_probs[:, blank_id]
    last = prefix.tokens[-1] if prefix.tokens else -1
    same = tokens == last
    label = np.empty((len(tokens), frames))
    blank = np.empty((len(tokens), frames))
    label[:, 0] = y[:, 0] if not prefix.tokens else _NEG_INF
    blank[:, 0] = _NEG_INF
    starts_with = label[:, 0].copy()
    for t in range(1, frames):
        # The new token opens at t: the prefix is complete at t - 1 (and ends in
        # a blank if the token repeats its last one).
        done = prefix.blank[t - 1]
        opened = np.where(same, done, np.logaddexp(done, prefix.label[t - 1])) + y[:, t]
        starts_with = np.logaddexp(starts_with, opened)
        label[:, t] = np.logaddexp(opened, label[:, t - 1] + y[:, t])
        blank[:, t] = np.logaddexp(blank[:, t - 1], label[:, t - 1]) + y_blank[t]
    return label, blank, starts_with


def _search(log_probs, blank_id, max_expansions):
    """The most probable labelling of ``[T, K]`` log-probabilities."""
    frames, num_classes = log_probs.shape
    if frames == 0:
        return (), 0.0
    tokens = np.array([k for k in range(num_classes) if k != blank_id], np.int64)
    empty = _Prefix((), np.full(frames, _NEG_INF), np.cumsum(log_probs[:, blank_id]))
    best, best_score = (), float(empty.blank[-1])
    order = itertools.count()  # tie-breaker: the heap never compares prefixes
    heap = [(-float(_log_sub(0.0, best_score)), next(order), empty)]
    expanded = 0
    # Each entry's key is the log-probability of the labellings that strictly
    # extend it; every labelling not seen yet extends some entry.
    while heap and -heap[0][0] > best_score:
        if max_expansions is not None and expanded >= max_expansions:
            break
        _, _, prefix = heapq.heappop(heap)
        expanded += 1
        label, blank, starts_with = _children(log_probs, prefix, tokens, blank_id)
        exact = np.logaddexp(label[:, -1], blank[:, -1])
        k = int(np.argmax(exact))
        if exact[k] > best_score:
            best, best_score = prefix.tokens + (int(tokens[k]),), float(exact[k])
        extend = _log_sub(starts_with, exact)
        for c in np.flatnonzero(extend > best_score):
            child = _Prefix(prefix.tokens + (int(tokens[c]),), label[c], blank[c])
            heapq.heappush(heap, (-float(extend[c]), next(order), child))
    return best, best_score


def _labelling_log_prob(log_probs, labels, blank_id):
    """``log P(labels | x)`` by extending the empty prefix token by token."""
    frames = log_probs.shape[0]
    if frames == 0:
        return 0.0 if not labels else _NEG_INF
    prefix = _Prefix((), np.full(frames, _NEG_INF), np.cumsum(log_probs[:, blank_id]))
    for k in labels:
        label, blank, _ = _children(log_probs, prefix, np.array([k]), blank_id)
        prefix = _Prefix(prefix.tokens + (k,), label[0], blank[0])
    return float(np.logaddexp(prefix.label[-1], prefix.blank[-1]))


def prefix_search(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    *,
    blank_id: int = 0,
    split_threshold: float | None = None,
    max_expansions: int | None = None,
) -> Hypotheses:
    r"""Graves' prefix search: the most probable labelling, found exactly.

    Finds ``argmax_y P(y | x)`` over all labellings by best-first search over
    prefixes: it keeps the prefixes ``p`` not yet expanded, keyed by
    ``P(p... | x)``, the probability of the labellings that strictly extend
    ``p``, expands the largest (computing every ``p + k`` in one pass over the
    frames), and stops when that key is no
    larger than the best complete labelling found. The answer is exact;
    the running time grows with how uncertain the outputs are (exponential
    in the worst case).

    With ``split_threshold``, Graves' heuristic: the frames are cut after
    every frame whose blank probability exceeds it, each section is searched
    on its own and the results concatenated (fast, no longer guaranteed
    best).

    This runs on the host in float64 NumPy, one sequence at a time: it is not
    jittable (its work depends on the values). Use :func:`prefix_beam_search`
    inside ``jit``.

    Args:
      logits: ``[B, T, K]`` unnormalised scores (``log_softmax`` is applied),
        concrete values (not traced). ``-inf`` masks a class.
      logit_paddings: ``[B, T]``, 1.0 on padded frames (skipped), 0.0 elsewhere.
      blank_id: the blank's class index, in ``[0, K)``.
      split_threshold: blank probability above which a frame ends a section;
        default: no splitting (exact search).
      max_expansions: stop after this many prefix expansions per section and
        return the best labelling found (then not guaranteed best); default
        unbounded.

    Returns:
      :class:`Hypotheses` with ``labels [B, T]`` int32 (padded with 0),
      ``label_paddings [B, T]`` float32 and ``log_probs [B]``: the exact
      ``log P(labels | x)`` of the returned labelling
      (natural log, ``<= 0``; 0 for a sequence with no valid frame), in the
      compute dtype; ``starts`` and ``ends`` are None.

    Raises:
      ValueError: for a bad rank or shape, a ``blank_id`` out of range, NaN
        or ``+inf`` logits, or paddings that are not 0/1.
      TypeError: for non-float ``logits``, or traced inputs (inside ``jit``).

    Examples:
      The best path (``- -`` when blank has 0.6 per frame) is not the best
      labelling: ``[1]`` has ``0.4 * 0.6 + 0.6 * 0.4 + 0.4 * 0.4 = 0.64``:

      >>> import jax.numpy as jnp, jaxctc
      >>> logits = jnp.log(jnp.array([[[0.6, 0.4], [0.6, 0.4]]]))
      >>> hyp = jaxctc.prefix_search(logits, jnp.zeros((1, 2)))
      >>> hyp.labels[0, :1].tolist(), round(float(jnp.exp(hyp.log_probs[0])), 4)
      ([1], 0.64)

    References:
      Graves et al., `Connectionist temporal classification: labelling
      unsegmented sequence data with recurrent neural networks
      <https://dl.acm.org/doi/10.1145/1143844.1143891>`_, ICML 2006, 3.2.
    """
    if any(isinstance(a, jax.core.Tracer) for a in (logits, logit_paddings)):
        raise TypeError(
            "`prefix_search` runs on the host and cannot be traced (jit, vmap): "
            "call it on concrete arrays, or use `prefix_beam_search`."
        )
    logits, logit_paddings, blank_id = _checks.check_decoder_inputs(
        logits, logit_paddings, blank_id
    )
    _checks.check_finite_logits(logits)
    dtype = _checks.compute_dtype(logits.dtype)
    x = np.asarray(logits.astype(dtype), np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.max(x, axis=-1, keepdims=True)
        x = x - np.where(np.isfinite(m), m, 0.0)
        norm = np.log(np.sum(np.exp(x), axis=-1, keepdims=True))
        log_probs = x - np.where(np.isfinite(norm), norm, 0.0)
    valid = np.asarray(logit_paddings) == 0
    batch, frames, _ = log_probs.shape
    labels = np.zeros((batch, frames), np.int32)
    scores = np.zeros(batch)
    lengths = np.zeros(batch, np.int64)
    for b in range(batch):
        lp = log_probs[b, valid[b]]
        if split_threshold is None:
            best, scores[b] = _search(lp, blank_id, max_expansions)
        else:
            cuts = np.flatnonzero(lp[:, blank_id] > np.log(split_threshold)) + 1
            best = ()
            for section in np.split(lp, cuts):
                best += _search(section, blank_id, max_expansions)[0]
            scores[b] = _labelling_log_prob(lp, best, blank_id)
        labels[b, : len(best)] = best
        lengths[b] = len(best)
    paddings = (np.arange(frames)[None, :] >= lengths[:, None]).astype(np.float32)
    return Hypotheses(
        jnp.asarray(labels),
        jnp.asarray(paddings),
        jnp.asarray(np.minimum(scores, 0.0), dtype),
    )
