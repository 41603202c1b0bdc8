"""CTC prefix beam search: its state, the phases of its step, the search.

The search keeps ``W`` prefixes per sequence in a fixed-shape state and runs
one ``lax.scan`` over frames. Its step reads like this (one sequence):

- **stay**: every prefix absorbs the frame as a blank or as its last token
  repeated;
- **merge**: a prefix ``p`` whose extension ``p + k`` is already another
  beam hands that beam its mass (two beams are one prefix: summed, exactly);
- **extend**: every other ``p + k`` for the frame's candidate classes ``k``;
- **prune**: the ``W`` most probable of the stays and the extensions stay.

"A token equal to the prefix's last token needs a blank in between" is one
rule, :func:`_passed_on`, used wherever a prefix passes mass to a new token.

Merging needs to know which beam extends which. Comparing stored prefixes
would cost ``O(W^2 L)``, so each beam carries two 32-bit rolling hashes of its
prefix and of its parent (the prefix without its last token): beam ``c``
extends beam ``p`` exactly when ``c``'s parent hashes are ``p``'s hashes and
``c`` is one token longer (a false match needs two independent 32-bit hashes
to collide at once). The labels are not stored per beam either: each frame
records where every beam's best blank- and label-ending alignment came from
(``O(W)`` integers), and one reverse scan at the end reads the labels and the
frames of their tokens back off the best alignment.

**Candidates.** Only the frame's most probable classes can extend a prefix
into the beam: an extension ``(p, k)`` with ``W + 1`` better classes ``k'`` is
beaten by at least ``W`` distinct entries (the extensions ``(p, k')`` or the
beams they merge into; one ``k'`` may repeat ``p``'s last token). Trained
models are peaky, and on most frames far fewer matter, so the step first runs
with the ``C = 4`` best classes of the frame (``_frames.best_classes``, exact,
found before the scan) and a bound on every other class. When the bound shows
that another class could still enter the beam (the best prefix's mass times
the bound beats the ``W``-th kept entry), that sequence's step is run again on
the frame's ``W + 1`` best classes, read from its logits row. The result is
the search over all classes, exactly; only the work differs. With fusion
scorers the candidates are, by definition, the frame's ``token_top_k``
(default ``W + 1``) best classes; when every scorer bounds its contribution
(``bound()``), the same two passes find the search over those, the bound
added to the best prefix's rank.

**The staircase.** The prune keeps ``W`` entries, so the extension of the
beam ranked ``r`` by the ``j``-th best candidate matters only while fewer
than ``W`` entries are sure to beat it (:func:`staircase`: about
``W (1 + ln W)`` of the ``W C``). Without scorers the beams stay sorted and
that is exact by itself. With bounded scorers the step scores only those
entries (in a few rectangles of ranks, :func:`_fuse_staircase`) and checks
the others against the ``W``-th kept entry with the bound, each beam's rank
plus the best candidate after its row; a frame where one could enter is run
again on every extension, so the result is the same.

**Scores** are logits minus the frame's largest logit while searching: every
alignment has one class per valid frame, so each frame's log-normalizer is
shared by all prefixes and changes no decision; it is subtracted at the end
(``_frames.log_sum``), so unused scores cost no ``exp`` pass under ``jit``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxctc import _buckets, _frames
from jaxctc._checks import (
    check_decoder_inputs,
    compute_dtype,
    python_int,
    raise_on_nan,
)
from jaxctc._hypotheses import (
    Hypotheses,
    length_paddings,
    scatter_spans,
)

_NEG_INF = -np.inf

# The frame's best classes tried first when K is large (see the module
# docstring); below `_ALL_CLASSES` classes the step takes the exact W + 1 at
# once.
_FIRST_CANDIDATES = 4
_ALL_CLASSES = 64


# ----------------------------------------------------------------------------
# Prefix hashes
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


# ----------------------------------------------------------------------------
# State and per-frame inputs
# ----------------------------------------------------------------------------


class Beams(NamedTuple):
    """The state of ``W`` prefixes (one sequence), each field ``[W]``.

    ``blank``/``label``: score of the prefix over the frames so far with the
    last frame a blank / the prefix's last token (summed over the alignments
    the beam kept); ``best_blank``/``best_label``: the same for the single
    best alignment; ``last``: last token (-1 for the empty prefix);
    ``length``; ``hash1``/``hash2``: prefix hashes; ``parent1``/``parent2``:
    hashes of the prefix without its last token. Scores are sums of
    ``logit - shift`` (see the module docstring); ``-inf`` marks an empty
    slot. With scorers: ``fusion``, the sum of their contributions to the
    prefix, and ``scorer``, a tuple of their states (``None`` without).
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
    fusion: jax.Array | None = None
    scorer: tuple | None = None


def initial_beams(width, dtype, scorers=()):
    """The empty prefix with score 0 in slot 0, the other slots empty."""
    neg = jnp.full((width,), _NEG_INF, dtype)
    empty = neg.at[0].set(0.0)
    zeros = jnp.zeros((width,), jnp.uint32)
    return Beams(
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
        fusion=jnp.zeros((width,), dtype) if scorers else None,
        scorer=tuple(s.init((width,)) for s in scorers) if scorers else None,
    )


class Frame(NamedTuple):
    """One frame's inputs to the step of one sequence (scores: logit - shift).

    Attributes:
      blank: ``[]`` the blank's score.
      last: ``[W]`` the score of each beam's last token (to repeat it).
      last_allowed: ``[W]`` the same, ``-inf`` where that token may not
        extend a prefix on this frame (so it may not merge either).
      classes: ``[C]`` int32, the candidate classes (distinct, any order).
      scores: ``[C]`` their scores, ``-inf`` where not allowed.
      bound: ``[]`` an upper bound on the score of every allowed class outside
        ``classes``; ``-inf`` when there is none.
    """

    blank: jax.Array
    last: jax.Array
    last_allowed: jax.Array
    classes: jax.Array
    scores: jax.Array
    bound: jax.Array


class Stay(NamedTuple):
    """Each beam's prefix after the frame, unchanged (``[W]`` each).

    ``src_blank``/``src_label`` code where the best blank- and label-ending
    alignment came from: ``2 * beam + (0 blank | 1 label)`` at the previous
    frame.
    """

    blank: jax.Array
    label: jax.Array
    best_blank: jax.Array
    src_blank: jax.Array
    best_label: jax.Array
    src_label: jax.Array


# ----------------------------------------------------------------------------
# The step's phases (one sequence)
# ----------------------------------------------------------------------------


def _passed_on(repeat, blank, any_end):
    """The score a prefix passes on to a new token: a token equal to the
    prefix's last token needs a blank in between, so only the blank-ending
    score passes (``repeat``), otherwise the score of either ending."""
    return jnp.where(repeat, blank, any_end)


def _first_true(mask, axis):
    """The index of the first ``True`` along ``axis`` (0 where there is none)
    and whether there is one, from one min-reduce: XLA:CPU does not
    vectorize ``argmax`` (a variadic reduce), which took 15% of the search at
    ``W = 64``, ``K = 1024`` (measured), and an ``any`` beside the min would
    be a second pass over the mask."""
    n = mask.shape[axis]
    iota = jax.lax.broadcasted_iota(jnp.int32, mask.shape, axis % mask.ndim)
    first = jnp.min(jnp.where(mask, iota, n), axis=axis)
    found = first < n
    return jnp.where(found, first, 0), found


def _ending(beams):
    """1 where a beam's best alignment ends on its last token, else 0."""
    return (beams.best_label > beams.best_blank).astype(jnp.int32)


def _stay(beams, frame):
    total = jnp.logaddexp(beams.blank, beams.label)
    best_any = jnp.maximum(beams.best_blank, beams.best_label)
    w = jnp.arange(beams.blank.shape[0], dtype=jnp.int32)
    return Stay(
        blank=total + frame.blank,
        label=beams.label + frame.last,
        best_blank=best_any + frame.blank,
        src_blank=2 * w + _ending(beams),
        best_label=beams.best_label + frame.last,
        src_label=2 * w + 1,
    )


def _merge(beams, frame, stay):
    """Adds to each beam the extension of its parent beam (when present).

    Returns the updated stays and ``[W, C]`` the extensions that are beams
    already (to be left out of the extensions).
    """
    width = beams.blank.shape[0]
    total = jnp.logaddexp(beams.blank, beams.label)
    alive = total > _NEG_INF
    best_any = jnp.maximum(beams.best_blank, beams.best_label)
    match = (
        (alive[:, None] & alive[None, :])
        & (beams.length[:, None] + 1 == beams.length[None, :])
        & (beams.hash1[:, None] == beams.parent1[None, :])
        & (beams.hash2[:, None] == beams.parent2[None, :])
    )  # [parent, child]
    parent, merged = _first_true(match, axis=0)
    repeat = beams.last == beams.last[parent]
    mass = _passed_on(repeat, beams.blank[parent], total[parent]) + frame.last_allowed
    label = jnp.logaddexp(stay.label, jnp.where(merged, mass, _NEG_INF))
    best = jnp.where(
        merged,
        _passed_on(repeat, beams.best_blank[parent], best_any[parent])
        + frame.last_allowed,
        _NEG_INF,
    )
    src = 2 * parent + jnp.where(repeat, 0, _ending(beams)[parent])
    better = best > stay.best_label
    stay = stay._replace(
        label=label,
        best_label=jnp.where(better, best, stay.best_label),
        src_label=jnp.where(better, src, stay.src_label),
    )
    # The parent's extension by the child's last token is the child.
    same = frame.classes[None, :] == beams.last[:, None]  # [child, C]
    column, in_classes = _first_true(same, axis=1)
    drop = merged & in_classes
    duplicate = (
        jnp.zeros(same.shape, bool)
        .at[jnp.where(drop, parent, width), column]
        .set(True, mode="drop")
    )
    return stay, duplicate


def _extend(beams, frame, duplicate, max_length):
    """``[W, C]`` scores of the extensions ``prefix(w) + classes[c]``."""
    total = jnp.logaddexp(beams.blank, beams.label)
    repeat = frame.classes[None, :] == beams.last[:, None]
    score = (
        _passed_on(repeat, beams.blank[:, None], total[:, None]) + frame.scores[None]
    )
    allowed = (beams.length < max_length)[:, None] & ~duplicate
    return jnp.where(allowed, score, _NEG_INF)


def staircase(width, num_candidates):
    """The ``(rank, column)`` extensions that can enter a beam of ``width``,
    flat ``rank * C + column`` (static, int32), when the beams are sorted by
    total, best first, and the candidates by score, best first.

    The extension of the beam ranked ``r`` by the ``j``-th class (from 0) is
    beaten by every extension ``(r', j')`` with ``r' <= r`` and ``j' <= j``
    (each scores at least as much and comes first in the prune's order),
    except the one class per beam that repeats its last token (it passes on
    only the blank-ending mass): at least ``j`` of them for each of the ``r``
    better beams and ``j - 1`` for beam ``r`` itself, ``r j + max(j - 1,
    0)`` distinct entries, each an extension or, where it is a beam already,
    that beam's stay (which holds the extension's mass). From ``W`` of them
    on it cannot be among the ``W`` best, so the prune needs only the others:
    about ``W (1 + ln W)`` of the ``W C`` at ``C = W + 1``.
    """
    return np.array(
        [
            r * num_candidates + j
            for r in range(width)
            for j in range(num_candidates)
            if r * j + max(j - 1, 0) < width
        ],
        np.int32,
    )


def staircase_rows(width, num_candidates):
    """``[W]`` the number of columns of each rank's row of the
    :func:`staircase` (static; its rows are each a run of first columns)."""
    counts = np.zeros(width, np.int32)
    np.add.at(counts, staircase(width, num_candidates) // num_candidates, 1)
    return counts


def _staircase_pays(width, num_candidates):
    """Whether reading only the :func:`staircase` is worth its gather."""
    return 4 * staircase(width, num_candidates).size < 3 * width * num_candidates


def _row_blocks(counts):
    """Blocks ``(first rank, end rank, columns)`` of ranks ``[1, 2)``, ``[2,
    4)``, ``[4, 8)``, ... (rank 0 alone) covering the rows of ``counts``
    (non-increasing): about ``log2 W`` rectangles instead of ``W`` rows."""
    blocks, start = [], 0
    while start < counts.size:
        end = min(max(2 * start, 1), counts.size)
        blocks.append((start, end, int(counts[start])))
        start = end
    return blocks


def _prune(stays, entries):
    """The ``W`` best of the ``W`` stays and the ``E`` extension ``entries``.

    Returns ``[W]`` choices, best first (``w < W``: beam ``w``'s stay;
    ``W + e``: entry ``e``) and the ``W``-th best score. Ties keep the lower
    index of ``concat([stays, entries])``.
    """
    width = stays.shape[0]
    scores = jnp.concatenate([stays, entries])
    top, choice = _frames.top_k(scores, width)
    return choice.astype(jnp.int32), top[-1]


def _fuse(scorers, beams, classes, shape):
    """``[W, C]`` the scorers' summed contributions of extending each beam by
    each class, and their states after it (leading shape ``[W, C]``)."""
    tokens = jnp.broadcast_to(classes[None, :], shape)
    total = jnp.zeros(shape, beams.fusion.dtype)
    states = []
    for scorer, state in zip(scorers, beams.scorer, strict=True):
        delta, after = scorer.score(state, tokens)
        total = total + delta.astype(total.dtype)
        states.append(after)
    return total, tuple(states)


def _fuse_staircase(scorers, beams, classes, rows):
    """:func:`_fuse` for the :func:`staircase` entries only, flat in its
    order (leading shape ``[E]``): the scorers score rectangles of ranks
    (:func:`_row_blocks`), and the entries are read off them."""
    totals, states = [], []
    for start, end, columns in _row_blocks(rows):
        part = jax.tree.map(functools.partial(_rows_of, start=start, end=end), beams)
        total, after = _fuse(scorers, part, classes[:columns], (end - start, columns))
        pick = np.array(
            [
                (r - start) * columns + j
                for r in range(start, end)
                for j in range(int(rows[r]))
            ],
            np.int32,
        )
        totals.append(total.reshape(-1)[pick])
        states.append(jax.tree.map(functools.partial(_entries_of, pick=pick), after))
    assert end == beams.blank.shape[0]  # every rank has at least its first column
    return jnp.concatenate(totals), jax.tree.map(lambda *a: jnp.concatenate(a), *states)


def _rows_of(a, start, end):
    return a[start:end]


def _entries_of(a, pick):
    """The entries ``pick`` of the flattened two leading axes of ``a``."""
    return a.reshape((-1,) + a.shape[2:])[pick]


def _step(
    beams,
    frame,
    max_length,
    scorers=(),
    fusion_bound=None,
    sorted_beams=False,
    fused_staircase=False,
):
    """One frame of the search for one sequence.

    Returns the new beams, per new beam the sources of its best blank- and
    label-ending alignments, and whether an extension left out (by a class
    outside ``frame.classes``, or outside the fused staircase) could have
    entered the beam (then the step must run again with more). With scorers,
    ``fusion_bound`` ``[K]`` bounds their summed contribution of each class
    from above. ``sorted_beams``: the beams are sorted by total, best first, and
    none is at ``max_length`` (as the search without scorers keeps them from
    the empty prefix), so the prune reads only the :func:`staircase` of the
    extensions. ``fused_staircase`` (with scorers): the scorers score and the
    prune reads only the staircase too, and every extension outside it is
    checked against the ``W``-th kept entry with ``fusion_bound``: the
    staircase holds the extensions that the beams' ranks and the classes'
    scores alone put first, and the check makes the step exact whatever the
    scorers add.
    """
    width = beams.blank.shape[0]
    num_candidates = frame.classes.shape[0]
    stay = _stay(beams, frame)
    stay, duplicate = _merge(beams, frame, stay)
    ext = _extend(beams, frame, duplicate, max_length)
    stay_rank = jnp.logaddexp(stay.blank, stay.label)
    index = None  # the entries' places in the [W, C] grid (None: all of it)
    if fused_staircase or (sorted_beams and _staircase_pays(width, num_candidates)):
        index = staircase(width, num_candidates)
    rows = staircase_rows(width, num_candidates)
    if scorers:  # the ranking adds the scorers' contributions (flat, [E])
        if fused_staircase:
            fused, fused_states = _fuse_staircase(scorers, beams, frame.classes, rows)
        else:
            fused, fused_states = _fuse(scorers, beams, frame.classes, ext.shape)
            fused = fused.reshape(-1)
            fused_states = jax.tree.map(
                lambda a: a.reshape((-1,) + a.shape[2:]), fused_states
            )
        stay_rank = stay_rank + beams.fusion
        ext_rank = ext + beams.fusion[:, None]
    else:
        ext_rank = ext
    entries = ext_rank.ravel() if index is None else ext_rank.ravel()[index]
    if scorers:
        entries = entries + fused
    choice, worst = _prune(stay_rank, entries)

    is_stay = choice < width
    entry = jnp.maximum(choice - width, 0)
    flat = entry
    if index is not None:
        # The table made a per-sequence value (times zero), so that on a
        # batch-sharded input it is sharded like `flat`: JAX's explicit
        # sharding refuses a replicated operand gathered by sharded indices.
        flat = (jnp.asarray(index) + flat[:1] * 0)[flat]
    src = jnp.where(is_stay, choice, flat // num_candidates)
    column = flat % num_candidates
    token = frame.classes[column]
    repeat = token == beams.last[src]
    best_any = jnp.maximum(beams.best_blank, beams.best_label)
    ext_best = (
        _passed_on(repeat, beams.best_blank[src], best_any[src]) + frame.scores[column]
    )
    ext_src = 2 * src + jnp.where(repeat, 0, _ending(beams)[src])
    new = Beams(
        blank=jnp.where(is_stay, stay.blank[src], _NEG_INF),
        label=jnp.where(is_stay, stay.label[src], ext.ravel()[flat]),
        best_blank=jnp.where(is_stay, stay.best_blank[src], _NEG_INF),
        best_label=jnp.where(is_stay, stay.best_label[src], ext_best),
        last=jnp.where(is_stay, beams.last[src], token),
        length=beams.length[src] + jnp.where(is_stay, 0, 1),
        hash1=jnp.where(
            is_stay, beams.hash1[src], _extend_hash(beams.hash1[src], token, _M1)
        ),
        hash2=jnp.where(
            is_stay, beams.hash2[src], _extend_hash(beams.hash2[src], token, _M2)
        ),
        parent1=jnp.where(is_stay, beams.parent1[src], beams.hash1[src]),
        parent2=jnp.where(is_stay, beams.parent2[src], beams.hash2[src]),
    )
    if scorers:
        new = new._replace(
            fusion=beams.fusion[src]
            + jnp.where(is_stay, 0.0, fused[entry]).astype(beams.fusion.dtype),
            scorer=jax.tree.map(
                lambda old, ext: jnp.where(
                    is_stay.reshape(is_stay.shape + (1,) * (old.ndim - 1)),
                    old[src],
                    ext[entry],
                ),
                beams.scorer,
                fused_states,
            ),
        )
    sources = (
        jnp.where(is_stay, stay.src_blank[src], 0),
        jnp.where(is_stay, stay.src_label[src], ext_src),
    )
    total = jnp.logaddexp(beams.blank, beams.label)
    other = frame.bound  # what a class outside the candidates could add
    if scorers:
        total = total + beams.fusion
        other = other + jnp.max(fusion_bound).astype(total.dtype)
    base = jnp.where(beams.length < max_length, total, _NEG_INF)
    redo = jnp.max(base) + other > worst
    if fused_staircase:
        # Beyond its row of the staircase, a beam's best extension is by the
        # best candidate after the row's last (the scores need not be
        # sorted); a class that may not extend (-inf) adds nothing.
        bound = _buckets.take(fusion_bound, frame.classes).astype(total.dtype)
        ceiling = jnp.where(frame.scores > _NEG_INF, frame.scores + bound, _NEG_INF)
        after = jax.lax.cummax(ceiling, axis=0, reverse=True)
        outside = jnp.where(
            rows < num_candidates,
            after[np.minimum(rows, num_candidates - 1)],
            _NEG_INF,
        )
        redo = redo | (jnp.max(base + outside) > worst)
    return new, sources, redo


# ----------------------------------------------------------------------------
# The search over a batch
# ----------------------------------------------------------------------------


class _Options(NamedTuple):
    blank_id: int
    width: int
    max_length: int
    num_candidates: int  # C, the classes tried first
    num_exact: int  # the classes of the exact fallback (W + 1 or fewer)
    top_k: int | None


def search_options(num_classes, blank_id, width, max_length, top_k, scorers):
    """The search's static options for ``K = num_classes``."""
    tokens = max(num_classes - 1, 1)  # the non-blank classes (K = 1: none)
    if scorers:
        # No rule makes fewer classes exact with scorers: the frame's
        # `token_top_k` (default W + 1) best classes are the candidates. The
        # scorers' bounds let the step try the few best of them first.
        exact = min(top_k or width + 1, tokens)
    else:
        exact = min(width + 1, tokens, top_k or tokens)
    few_first = num_classes > _ALL_CLASSES and _bounded(scorers)
    first = min(_FIRST_CANDIDATES, exact) if few_first else exact
    return _Options(blank_id, width, max_length, first, exact, top_k)


def _thresholds(best, norm, min_log_prob, skip_log_prob, floor):
    """``[B, T]`` the lowest score (logit - shift) a class needs to extend a
    prefix on each frame (``+inf``: no class may)."""
    threshold = jnp.full(best.shift.shape, _NEG_INF, best.shift.dtype)
    if min_log_prob is not None:
        threshold = jnp.maximum(threshold, min_log_prob + norm)
    if floor is not None:
        threshold = jnp.maximum(threshold, floor)
    if skip_log_prob is not None:
        skip = best.blank - norm > skip_log_prob
        threshold = jnp.where(skip, np.inf, threshold)
    return threshold


def _allowed(scores, threshold):
    return jnp.where(scores >= threshold, scores, _NEG_INF)


def _exact_candidates(row, shift, threshold, options):
    """The ``num_exact`` best allowed classes of logits rows ``[F, K]``."""
    dtype = shift.dtype
    x = row.astype(dtype) - shift[:, None]
    x = _frames.blank_masked(_allowed(x, threshold[:, None]), options.blank_id)
    scores, classes = _frames.top_k(x, options.num_exact)
    return classes.astype(jnp.int32), scores


def _bounded(scorers):
    """Whether every scorer bounds its contribution of a token (``bound()``)."""
    return all(hasattr(s, "bound") for s in scorers)


def _fusion_bound(scorers, num_classes):
    """``[K]`` an upper bound on the scorers' summed contribution of each
    class (``+inf`` unless every scorer has a ``bound()``, a scalar or one
    per class)."""
    if not _bounded(scorers):
        return jnp.full((num_classes,), np.inf, jnp.float32)
    bound = sum(
        jnp.broadcast_to(jnp.asarray(s.bound(), jnp.float32), (num_classes,))
        for s in scorers
    )
    return jnp.where(jnp.isnan(bound), jnp.inf, bound)  # NaN: no bound


def _search(
    logits, logit_paddings, min_log_prob, skip_log_prob, scorers, options, init=None
):
    """The scan over the frames of ``logits`` from the beams ``init`` (``[B,
    W]`` fields; default the empty prefix). Returns the beams after the last
    frame, the trace ``[B, T, W]`` (each frame's sources, last tokens and
    lengths) for reading alignments back, the sum of the valid frames'
    log-normalizers ``[B]`` and per sequence whether a logit was NaN or +inf.
    """
    batch, frames, num_classes = logits.shape
    dtype = compute_dtype(logits.dtype)
    width = options.width
    top_k = options.top_k
    valid = logit_paddings == 0
    first = options.num_candidates
    # With top-k pruning the k-th best class sets the frame's floor: the same
    # two-level pass finds it.
    best = _frames.best_classes(logits, options.blank_id, max(first, top_k or 0))
    norm = _frames.log_sum(logits, best.shift)
    floor = None if top_k is None else best.scores[..., top_k - 1]
    threshold = _thresholds(best, norm, min_log_prob, skip_log_prob, floor)
    if best.scores.shape[-1] > first:
        bound = best.scores[..., first]
    else:
        bound = best.bound
    bound = _allowed(bound, threshold)
    if first >= min(num_classes - 1, top_k or num_classes):
        bound = jnp.full_like(bound, _NEG_INF)  # every allowed class is a candidate
    best = best._replace(
        classes=best.classes[..., :first], scores=best.scores[..., :first]
    )
    more_classes = options.num_candidates < options.num_exact
    # With scorers that bound their contributions, and every candidate at
    # once (K <= 64), the step first scores only the staircase of the
    # extensions (see `_step`). With the few best classes first (K > 64) it
    # would rarely be exact: 1.4-2.2x the time at K = 1024 (measured).
    fused_staircase = (
        bool(scorers)
        and _bounded(scorers)
        and not more_classes
        and _staircase_pays(width, first)
    )
    fallback = (more_classes or fused_staircase) and batch > 0
    frame_inputs = (
        valid,
        best.blank,
        best.classes,
        _allowed(best.scores, threshold[..., None]),
        bound,
        threshold,
        best.shift,
    )

    def frame_of(beams, last_logits, blank, classes, scores, bound, threshold, shift):
        """The step's inputs; ``last_logits [B', W]``: each beam's last token's
        logit on this frame."""
        x = last_logits.astype(dtype) - shift[:, None]
        x = jnp.where(beams.last >= 0, x, _NEG_INF)  # the empty prefix: none
        return Frame(
            blank=blank,
            last=x,
            last_allowed=_allowed(x, threshold[:, None]),
            classes=classes,
            scores=scores,
            bound=bound,
        )

    step_of = functools.partial(
        _step,
        max_length=options.max_length,
        scorers=scorers,
        fusion_bound=_fusion_bound(scorers, num_classes) if scorers else None,
        # From the empty prefix, without scorers, the prune keeps the
        # beams sorted by total, and in T frames none reaches a length
        # of T or more.
        sorted_beams=init is None and not scorers and options.max_length >= frames,
    )
    step = jax.vmap(functools.partial(step_of, fused_staircase=fused_staircase))
    full_step = jax.vmap(step_of)

    def exact_all(beams, t, inputs, frame, new, sources, redo):
        """Re-runs the step with ``num_exact`` classes and every extension
        for every sequence when one is flagged, and keeps it for the flagged
        ones.

        All rows, not a gather of the flagged ones: each sequence's work stays
        on its own device when the batch is sharded (the ``any`` is the one
        value they share). It costs about as much on one device (measured).
        """
        _, blank, _, _, _, threshold, shift = inputs

        def run(new, sources):
            exact = frame._replace(bound=jnp.full_like(frame.bound, _NEG_INF))
            if more_classes:
                row = jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)
                classes, scores = _exact_candidates(row, shift, threshold, options)
                exact = exact._replace(classes=classes, scores=scores)
            fixed, fixed_sources, _ = full_step(beams, exact)

            def pick(a, b):
                return jnp.where(redo.reshape(redo.shape + (1,) * (a.ndim - 1)), a, b)

            return (
                jax.tree.map(pick, fixed, new),
                jax.tree.map(pick, fixed_sources, sources),
            )

        return jax.lax.cond(jnp.any(redo), run, lambda *a: a, new, sources)

    def scan_step(beams, xs):
        t, inputs = xs
        ok = inputs[0]
        # Per sequence (vmapped), so that a batch-sharded input needs no
        # communication for it.
        last = jax.vmap(lambda x, k: x[t, k])(logits, jnp.maximum(beams.last, 0))
        frame = frame_of(beams, last, *inputs[1:])
        new, sources, redo = step(beams, frame)
        if fallback:
            redo = ok & redo
            new, sources = exact_all(beams, t, inputs, frame, new, sources, redo)

        def keep(a, b):
            return jnp.where(ok.reshape(ok.shape + (1,) * (a.ndim - 1)), a, b)

        new = jax.tree.map(keep, new, beams)
        # The barrier keeps XLA:CPU from fusing these values into the update of
        # the whole [T, ...] trace buffer (which then costs O(T) per frame).
        trace = jax.lax.optimization_barrier((*sources, new.last, new.length))
        return new, trace

    # The initial beams, one set per sequence, derived from an input: the scan
    # carry is then batched (and batch-sharded) from the first trace of its
    # step; a constant carry mixes replicated and sharded operands in gathers.
    any_valid = jnp.any(valid, axis=1)
    if init is None:
        init = jax.tree.map(lambda a: a[None], initial_beams(width, dtype, scorers))
    init = jax.tree.map(
        lambda a: jnp.where(any_valid.reshape((-1,) + (1,) * (a.ndim - 1)), a, a),
        init,
    )
    xs = (
        jnp.arange(frames, dtype=jnp.int32),
        jax.tree.map(lambda a: jnp.moveaxis(a, 1, 0), frame_inputs),
    )
    if frames:
        beams, trace = jax.lax.scan(scan_step, init, xs)
    else:  # nothing to read from the logits (the step's gathers need a frame)
        beams = init
        empty = jnp.zeros((0, batch, width), jnp.int32)
        trace = (empty, empty, empty, empty)
    offset = jnp.sum(jnp.where(valid, norm, 0.0), axis=1)
    trace = jax.tree.map(lambda a: jnp.moveaxis(a, 1, 0), trace)  # [B, T, W]
    # NaN, or +inf as the blank or the best other class (the shift is then 0).
    bad = best.nan | (best.blank == jnp.inf) | (best.scores[..., 0] == jnp.inf)
    return beams, trace, offset, jnp.any(bad, axis=1)


class Ranked(NamedTuple):
    """The ``P`` best beams of one sequence after its last frame (``[P]``).

    ``slot``: the beam; ``ranks``: its ranking score (log-probability plus
    the scorers' contributions, their end terms included); ``log_probs``;
    ``alive``: whether it holds a hypothesis; ``sub``: 1 where its best
    alignment ends on its last token, else 0.
    """

    slot: jax.Array
    ranks: jax.Array
    log_probs: jax.Array
    alive: jax.Array
    sub: jax.Array


def rank_beams(beams, offset, paths, scorers=()):
    """The ``paths`` best of one sequence's beams (see :class:`Ranked`);
    ``offset`` is the sum of its valid frames' log-normalizers."""
    total = jnp.minimum(jnp.logaddexp(beams.blank, beams.label) - offset, 0.0)
    rank = total
    if scorers:
        rank = total + beams.fusion
        for scorer, state in zip(scorers, beams.scorer, strict=True):
            rank = rank + scorer.final(state).astype(rank.dtype)
        rank = jnp.where(total > _NEG_INF, rank, _NEG_INF)
    ranks, slot = _frames.top_k(rank, paths)
    # A hypothesis that a scorer rules out (rank -inf, e.g. a lexicon's) is
    # returned as a missing one: no labels, log-probability -inf.
    alive = (total[slot] > _NEG_INF) & (ranks > _NEG_INF)
    scores = jnp.where(alive, total[slot], _NEG_INF)
    sub = (beams.best_label[slot] > beams.best_blank[slot]).astype(jnp.int32)
    return Ranked(slot, ranks, scores, alive, sub)


def trace_back(slot, sub, trace, valid, max_length):
    """Follows the best alignments of the beams ``slot`` (ending ``sub``: 1
    on the last token, 0 on a blank) back over the frames of ``trace``.

    Returns where they came from at the first frame (``slot``, ``sub``) and
    ``[T, R]`` per frame the position of the token the alignment is on
    (``max_length`` on a blank or a padded frame) and that token.
    """

    def back(state, y):
        slot, sub = state
        src_blank, src_label, last, length, ok = y
        on_token = ok & (sub == 1)
        position = jnp.where(on_token, length[slot] - 1, max_length)
        code = jnp.where(sub == 1, src_label[slot], src_blank[slot])
        state = (jnp.where(ok, code // 2, slot), jnp.where(ok, code % 2, sub))
        return state, (position, last[slot])

    return jax.lax.scan(back, (slot, sub), (*trace, valid), reverse=True)


def _read_back(beams, trace, valid, offset, paths, max_length, scorers=()):
    """The ``paths`` best hypotheses of one sequence and their tokens' frames."""
    frames = valid.shape[0]
    slot, ranks, scores, alive, sub = rank_beams(beams, offset, paths, scorers)

    # Read each hypothesis' best alignment back, last frame first.
    _, (position, token) = trace_back(slot, sub, trace, valid, max_length)
    position = jnp.where(alive, position, max_length)
    t = jnp.arange(frames, dtype=jnp.int32)
    labels, starts, ends = scatter_spans(position.T, token.T, t, max_length)
    length = jnp.where(alive, beams.length[slot], 0)
    return Hypotheses(
        labels, length_paddings(length, max_length), scores, starts, ends, ranks
    )


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
    scorers=(),
) -> Hypotheses:
    r"""CTC prefix beam search: the most probable labellings, jittable.

    Keeps the ``beam_width`` most probable prefixes. Each prefix carries the
    probability of the frames so far over the alignments that spell it, split
    by whether the last frame is a blank or its last token; every frame, each
    beam is extended by every class, an extension equal to an existing beam is
    merged into it by summing, and the ``W`` most probable prefixes are kept
    (the recursion is under Notes). The whole search is one ``lax.scan`` over
    frames with fixed shapes, batched, with no host callbacks and a compile
    time independent of ``T``. Per frame it reads the logits once to find the
    few classes that can enter the beam (see "Speed" below).

    Scores: ``log_probs`` is the log of the total probability of all
    alignments of that labelling that the beam kept, after the last frame,
    always ``<= 0``. It is a lower bound on ``log P(labels | x)`` (exact when
    the beam never dropped a prefix of the labelling or a path to it;
    :func:`sequence_log_probs` gives the exact value). TF's
    ``ctc_beam_search_decoder`` and Keras' ``ctc_decode`` also return a
    log-probability (negative), computed on their inputs as given.

    Speed: only the ``W + 1`` most probable classes of a frame can extend a
    prefix into the beam, and on a trained model's output usually fewer do.
    For ``K > 64`` the search tries the 4 best classes of each frame first
    (found exactly, in two levels over blocks of classes) and re-runs a frame
    with the ``W + 1`` best classes, for every sequence, only when a bound shows that another class could enter one of
    them; the result is the same as trying every class. Its cost is that pass,
    one ``exp`` pass for the scores, and per frame work that depends on ``W``,
    not on ``K``, plus the re-runs (on model-like outputs with ``B = 200``,
    mostly the first frames, while the beams fill: 4-5% of the frames at
    ``W = 16``, 13-15% at ``W = 64``).

    Args:
      logits: ``[B, T, K]`` unnormalised scores (``log_softmax`` is applied),
        any float dtype; bf16/f16 are read as they are and computed in
        float32. ``-inf`` masks a class.
      logit_paddings: ``[B, T]``, 1.0 on padded frames (skipped), 0.0 elsewhere.
      beam_width: ``W``, the number of prefixes kept per frame.
      top_paths: ``P <= W``, the number of hypotheses returned per sequence.
      blank_id: the blank's class index, in ``[0, K)``.
      max_label_length: ``L``, the longest labelling considered (prefixes
        are not extended beyond it); default ``T``, which loses nothing.
      token_top_k: pruning: per frame, only the ``token_top_k`` most probable
        non-blank classes may extend a prefix (flashlight's
        ``beam_size_token``); default: all. At most 4 is also the fastest
        setting (no re-runs); from ``W + 1`` on it changes only which
        extensions merge into existing beams (a token ranked below
        ``token_top_k`` no longer adds its mass to a beam that ends in it).
      token_min_log_prob: pruning: per frame, classes with a log-probability
        below this do not extend prefixes (pyctcdecode's ``token_min_logp``,
        -5 there); default: no threshold.
      blank_skip_log_prob: pruning: frames whose blank log-probability exceeds
        this extend no prefix (prefixes only absorb the blank or repeat their
        last token there); default: off.
      scorers: fusion scorers (e.g. :class:`NGramLM`), each adding its
        contribution to a prefix's ranking whenever the prefix gets a new
        token (see ``jaxctc._lm`` for the protocol: ``init``, ``score``,
        ``final``). The prefixes' probabilities are still summed exactly
        over alignments (a scorer depends on the prefix only), but the ``W +
        1`` rule above no longer bounds the classes that can enter the beam:
        with scorers each frame's ``token_top_k`` (default ``W + 1``) most
        probable classes are the candidates. Without scorers the results
        are those of the search without the argument, bit for bit.

    Returns:
      :class:`Hypotheses` with ``labels [B, P, L]`` int32 (padded with 0),
      ``label_paddings [B, P, L]`` float32, ``log_probs [B, P]`` as above,
      best first, in the compute dtype, and ``starts``/``ends [B, P, L]``:
      the first and last frame of each token in the most probable alignment
      that the beam kept for the hypothesis. When fewer than ``P``
      hypotheses have nonzero probability the rest are marked with
      ``log_probs = -inf`` and all padding. A sequence with no valid frame
      gives the empty labelling with ``log_probs = 0``. ``scores [B, P]``:
      the ranking score, ``log_probs`` plus every scorer's contribution to
      the hypothesis (equal to ``log_probs`` without scorers); hypotheses are
      ordered by it.

    Raises:
      ValueError: at trace time, for a bad rank or shape, a ``blank_id`` out
        of range, ``beam_width < 1``, ``top_paths`` outside ``[1,
        beam_width]``, ``max_label_length < 0`` or ``token_top_k < 1``; with
        concrete values (outside ``jit``), for NaN or ``+inf`` logits
        (under ``jit``: an unspecified hypothesis and score) or paddings that
        are not 0/1.
      TypeError: for non-float ``logits`` or non-int options.

    Notes:
      A prefix :math:`y` holds :math:`p_b(y)` and :math:`p_{nb}(y)`, the
      log-probabilities of its alignments ending in a blank and in its last
      token. Per frame, with :math:`\ell = \log\mathrm{softmax}(x_t)` and
      :math:`\oplus` the log-sum,

      .. math::
          p_b(y) &\leftarrow (p_b(y) \oplus p_{nb}(y)) + \ell_{\mathrm{blank}}, \\
          p_{nb}(y) &\leftarrow (p_{nb}(y) + \ell_{y_{-1}})
              \oplus \bigoplus_{y = y' k} (p_b(y') [\oplus p_{nb}(y')
              \text{ if } k \ne y'_{-1}]) + \ell_k,

      over the extensions :math:`y' k` of every beam :math:`y'` by every
      class :math:`k`; ``log_probs`` is :math:`p_b(y) \oplus p_{nb}(y)` after
      the last frame.

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
    logits, logit_paddings, blank_id = check_decoder_inputs(
        logits, logit_paddings, blank_id
    )
    _, frames, num_classes = logits.shape
    width = python_int("beam_width", beam_width, 1)
    paths = python_int("top_paths", top_paths, 1)
    if paths > width:
        raise ValueError(f"`top_paths` must be <= `beam_width` ({width}), got {paths}.")
    if max_label_length is None:
        max_length = frames
    else:
        max_length = python_int("max_label_length", max_label_length, 0)
    top_k = None
    if token_top_k is not None:
        top_k = python_int("token_top_k", token_top_k, 1)
        top_k = top_k if top_k < num_classes - 1 else None
    hyp, has_nan = _beam_search(
        logits,
        logit_paddings,
        token_min_log_prob,
        blank_skip_log_prob,
        _check_scorers(scorers),
        blank_id=blank_id,
        width=width,
        paths=paths,
        max_length=max_length,
        top_k=top_k,
    )
    raise_on_nan(has_nan)
    return hyp


def _check_scorers(scorers):
    scorers = tuple(scorers)
    for i, scorer in enumerate(scorers):
        missing = [m for m in ("init", "score", "final") if not hasattr(scorer, m)]
        if missing:
            raise TypeError(
                f"`scorers[{i}]` ({type(scorer).__name__}) lacks {', '.join(missing)}: "
                "a scorer has init(shape), score(state, tokens) and final(state)."
            )
    return scorers


@functools.partial(
    jax.jit, static_argnames=("blank_id", "width", "paths", "max_length", "top_k")
)
def _beam_search(
    logits,
    logit_paddings,
    min_log_prob,
    skip_log_prob,
    scorers,
    *,
    blank_id,
    width,
    paths,
    max_length,
    top_k,
):
    options = search_options(
        logits.shape[2], blank_id, width, max_length, top_k, scorers
    )
    beams, trace, offset, has_nan = _search(
        logits, logit_paddings, min_log_prob, skip_log_prob, scorers, options
    )
    valid = logit_paddings == 0
    read = functools.partial(
        _read_back, paths=paths, max_length=max_length, scorers=scorers
    )
    return jax.vmap(read)(beams, trace, valid, offset), has_nan
