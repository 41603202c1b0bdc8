"""Edit distance and error rates over padded label batches, jittable.

The distances take the same ``labels [B, N]`` + ``label_paddings [B, N]``
layout as the loss and the decoders, so a decoder's output and the training
targets go straight in. Everything is a fixed-shape JAX computation: it runs
under ``jit`` and ``vmap`` and shards with the batch.

The dynamic programme runs over the hypothesis with ``lax.scan`` and keeps one
row ``D[i, 0..M]`` over the reference. Within a row the insertion chain
``D[i, j] = min(c[j], D[i, j - 1] + 1)`` is a running minimum,
``D[i, j] = j + cummin_k<=j (c[k] - k)``, so each row is one vector operation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxctc import _checks


def _check_pair(labels, paddings, name):
    paddings_name = f"{name[:-1]}_paddings"
    labels, paddings = _checks.check_labels(
        labels, paddings, name=name, paddings_name=paddings_name
    )
    _checks.check_paddings(paddings, paddings_name)
    return labels, paddings


def _check_inputs(labels, label_paddings, references, reference_paddings):
    labels, label_paddings = _check_pair(labels, label_paddings, "labels")
    references, reference_paddings = _check_pair(
        references, reference_paddings, "references"
    )
    if labels.shape[0] != references.shape[0]:
        raise ValueError(
            "`labels` and `references` must have the same batch size, got "
            f"{labels.shape} and {references.shape}."
        )
    # Compared in a dtype that holds both (int64 stays int64: an int64 label
    # wrapped to int32 could equal another).
    dtype = np.promote_types(labels.dtype, references.dtype)
    if not np.issubdtype(dtype, np.integer):  # uint64 with a signed type
        dtype = np.dtype(np.int64)
    dtype = jax.dtypes.canonicalize_dtype(dtype)
    labels, references = labels.astype(dtype), references.astype(dtype)
    return labels, label_paddings, references, reference_paddings


def _compact(labels, paddings):
    """Moves the valid entries to the front, in order: ``(labels, valid, count)``."""
    padded = paddings.astype(bool)
    order = jnp.argsort(padded, axis=1, stable=True)
    valid = jnp.take_along_axis(~padded, order, axis=1)
    labels = jnp.take_along_axis(labels, order, axis=1)
    return labels, valid, jnp.sum(valid, axis=1, dtype=jnp.int32)


def _levenshtein(mismatch, hyp_valid, ref_count):
    """Unit-cost edit distance ``[B]`` from a substitution cost matrix.

    ``mismatch [B, N, M]`` int32 is 1 where hypothesis item ``i`` differs from
    reference item ``j``; ``hyp_valid [B, N]`` marks the hypothesis items (any
    positions); the reference items are the first ``ref_count [B]`` columns.
    """
    batch, _, m = mismatch.shape
    j = jnp.arange(m + 1, dtype=jnp.int32)[None, :]
    first = jnp.broadcast_to(j, (batch, m + 1))

    def row(prev, inputs):
        cost, valid = inputs  # [B, M], [B]
        deletion = prev + 1
        substitution = prev[:, :-1] + cost
        c = jnp.concatenate(
            [deletion[:, :1], jnp.minimum(deletion[:, 1:], substitution)], axis=1
        )
        new = j + jax.lax.cummin(c - j, axis=1)
        return jnp.where(valid[:, None], new, prev), None

    last, _ = jax.lax.scan(
        row, first, (jnp.swapaxes(mismatch, 0, 1), jnp.swapaxes(hyp_valid, 0, 1))
    )
    return jnp.take_along_axis(last, ref_count[:, None], axis=1)[:, 0]


def _words(labels, valid, separator_id):
    """Splits compacted tokens into words, as ``str.split()`` does.

    Returns ``(words [B, N, N], lengths [B, N], is_word [B, N])``: word ``w``
    holds its tokens left-aligned (0 after its end: words are equal when
    their tokens and ``lengths`` are), ``lengths`` its length and ``is_word``
    whether that word exists.
    """
    batch, n = labels.shape
    content = valid & (labels != separator_id)
    before = jnp.concatenate([jnp.zeros((batch, 1), bool), content[:, :-1]], axis=1)
    start = content & ~before
    word = jnp.cumsum(start, axis=1, dtype=jnp.int32) - 1
    i = jnp.arange(n, dtype=jnp.int32)[None, :]
    start_at = jax.lax.cummax(jnp.where(start, i, -1), axis=1)
    pos = i - start_at
    word = jnp.where(content, word, n)  # out of range: dropped by the scatter
    b = jnp.arange(batch, dtype=jnp.int32)[:, None]
    words = jnp.zeros((batch, n, n), labels.dtype)
    words = words.at[b, word, pos].set(labels, mode="drop")
    lengths = jnp.zeros((batch, n), jnp.int32).at[b, word].add(1, mode="drop")
    num_words = jnp.sum(start, axis=1, dtype=jnp.int32)
    return words, lengths, i < num_words[:, None]


def edit_distance(
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
    references: jax.typing.ArrayLike,
    reference_paddings: jax.typing.ArrayLike,
    *,
    separator_id: int | None = None,
) -> jax.Array:
    r"""Levenshtein distance between hypotheses and references, per sequence.

    The least number of insertions, deletions and substitutions (each of cost
    1) that turn hypothesis ``b`` into reference ``b`` (the recursion is under
    Notes). Padded entries (paddings 1.0, at any position) are skipped. With
    ``separator_id`` the items are words instead of tokens: maximal runs of
    tokens other than ``separator_id``, so repeated, leading and trailing
    separators do not count (as Python's ``str.split()``).

    Cost: ``O(B N M)`` for tokens (a scan over ``N``), and
    ``O(B N M min(N, M))`` memory to compare words.

    Args:
      labels: ``[B, N]`` integer hypotheses (e.g. a decoder's ``labels``).
      label_paddings: ``[B, N]`` paddings of ``labels`` (1.0 = padded).
      references: ``[B, M]`` integer references (e.g. the training labels).
      reference_paddings: ``[B, M]`` paddings of ``references`` (1.0 = padded).
      separator_id: the token that separates words, or None for token level.

    Returns:
      ``[B]`` int32 distances, ``>= 0``; 0 exactly where the two sequences are
      equal; symmetric in hypothesis and reference.

    Raises:
      ValueError: ``labels`` or ``references`` not of rank 2, paddings of
        another shape, or batch sizes that differ; with concrete values
        (outside ``jit``), paddings that are not 0/1.
      TypeError: non-integer ``labels`` or ``references``, or a
        ``separator_id`` that is not an int.

    Notes:
      For hypothesis :math:`h` and reference :math:`r`,

      .. math::

         D_{i,j} = \min(D_{i-1,j} + 1,\; D_{i,j-1} + 1,\;
                        D_{i-1,j-1} + [h_i \ne r_j]),
         \qquad D_{i,0} = i,\; D_{0,j} = j.

    Examples:
      ``kitten`` to ``sitting`` takes three edits (two substitutions, one
      insertion); ``cat`` to ``cut`` one:

      >>> import jax.numpy as jnp, jaxctc
      >>> codes = lambda s: [ord(c) for c in s.ljust(7)]
      >>> hyp = jnp.array([codes("kitten"), codes("cat")])
      >>> ref = jnp.array([codes("sitting"), codes("cut")])
      >>> jaxctc.edit_distance(hyp, hyp == 32, ref, ref == 32).tolist()
      [3, 1]

    References:
      V. I. Levenshtein, Binary codes capable of correcting deletions,
      insertions, and reversals, Soviet Physics Doklady 10(8), 1966.
    """
    labels, label_paddings, references, reference_paddings = _check_inputs(
        labels, label_paddings, references, reference_paddings
    )
    if separator_id is not None:
        separator_id = _checks.python_int("separator_id", separator_id)
    return _distances(
        labels,
        label_paddings,
        references,
        reference_paddings,
        separator_id=separator_id,
    )


# Checked eagerly, computed as one jitted computation: called outside ``jit``
# it compiles once per shape (the scan alone would be traced on every call).
@functools.partial(jax.jit, static_argnames="separator_id")
def _distances(labels, label_paddings, references, reference_paddings, *, separator_id):
    hyp, hyp_valid, _ = _compact(labels, label_paddings)
    ref, ref_valid, ref_count = _compact(references, reference_paddings)
    if separator_id is None:
        mismatch = (hyp[:, :, None] != ref[:, None, :]).astype(jnp.int32)
        return _levenshtein(mismatch, hyp_valid, ref_count)
    hyp_words, hyp_lengths, hyp_is_word = _words(hyp, hyp_valid, separator_id)
    ref_words, ref_lengths, ref_is_word = _words(ref, ref_valid, separator_id)
    # Words longer than the shorter side's token count have different lengths
    # from every word on the other side, so comparing that many tokens plus the
    # lengths is exact.
    width = min(hyp.shape[1], ref.shape[1])
    same = jnp.all(
        hyp_words[:, :, None, :width] == ref_words[:, None, :, :width], axis=-1
    )
    same &= hyp_lengths[:, :, None] == ref_lengths[:, None, :]
    ref_count = jnp.sum(ref_is_word, axis=1, dtype=jnp.int32)
    return _levenshtein((~same).astype(jnp.int32), hyp_is_word, ref_count)


def _error_rate(labels, label_paddings, references, reference_paddings, separator_id):
    distances = edit_distance(
        labels,
        label_paddings,
        references,
        reference_paddings,
        separator_id=separator_id,
    )
    references, reference_paddings = _check_pair(
        references, reference_paddings, "references"
    )
    ref, valid, count = _compact(references, reference_paddings)
    if separator_id is not None:
        count = jnp.sum(_words(ref, valid, separator_id)[2], axis=1, dtype=jnp.int32)
    total = jnp.maximum(jnp.sum(count), 1).astype(jnp.float32)
    return jnp.sum(distances).astype(jnp.float32) / total


def char_error_rate(
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
    references: jax.typing.ArrayLike,
    reference_paddings: jax.typing.ArrayLike,
) -> jax.Array:
    r"""Character (token) error rate of a batch: edits per reference token.

    The corpus-level rate: total edits (:func:`edit_distance`) over total
    reference length, not the mean of per-line rates (see Notes). To
    accumulate over batches, sum :func:`edit_distance` and the reference
    lengths separately and divide at the end.

    Args:
      labels: ``[B, N]`` integer hypotheses.
      label_paddings: ``[B, N]`` paddings of ``labels`` (1.0 = padded).
      references: ``[B, M]`` integer references.
      reference_paddings: ``[B, M]`` paddings of ``references`` (1.0 = padded).

    Returns:
      A float32 scalar ``>= 0``; 0 when every hypothesis equals its reference;
      it can exceed 1 when the hypotheses are longer than the references.

    Raises:
      ValueError, TypeError: as :func:`edit_distance`.

    Notes:
      .. math::

         \mathrm{CER} = \frac{\sum_b D(h_b, r_b)}{\max(1, \sum_b |r_b|)}.

    Examples:
      One substitution in ``cut`` and a correct ``dog``: 1 edit over 6
      reference characters:

      >>> import jax.numpy as jnp, jaxctc
      >>> hyp = jnp.array([[3, 1, 20], [4, 15, 7]])
      >>> ref = jnp.array([[3, 21, 20], [4, 15, 7]])
      >>> zeros = jnp.zeros((2, 3))
      >>> round(float(jaxctc.char_error_rate(hyp, zeros, ref, zeros)), 4)
      0.1667
    """
    return _error_rate(labels, label_paddings, references, reference_paddings, None)


def word_error_rate(
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
    references: jax.typing.ArrayLike,
    reference_paddings: jax.typing.ArrayLike,
    *,
    separator_id: int,
) -> jax.Array:
    r"""Word error rate of a batch: word edits per reference word.

    Total word edits (the word-level :func:`edit_distance`) over total
    reference words, words being the maximal runs of tokens other than
    ``separator_id`` (as ``str.split()``); see Notes.

    Args:
      labels: ``[B, N]`` integer hypotheses.
      label_paddings: ``[B, N]`` paddings of ``labels`` (1.0 = padded).
      references: ``[B, M]`` integer references.
      reference_paddings: ``[B, M]`` paddings of ``references`` (1.0 = padded).
      separator_id: the token between words (e.g. the space's class index).

    Returns:
      A float32 scalar ``>= 0``, total word edits over total reference words.

    Raises:
      ValueError, TypeError: as :func:`edit_distance`.

    Notes:
      .. math::

         \mathrm{WER} = \frac{\sum_b D_w(h_b, r_b)}{\max(1, \sum_b |r_b|_w)}.

    Examples:
      ``the cat sat`` against ``the cat sat down``: one deleted word of four.
      With 0 as the separator:

      >>> import jax.numpy as jnp, jaxctc
      >>> hyp = jnp.array([[5, 0, 6, 0, 7, 0, 0]])
      >>> ref = jnp.array([[5, 0, 6, 0, 7, 0, 8]])
      >>> zeros = jnp.zeros((1, 7))
      >>> float(jaxctc.word_error_rate(hyp, zeros, ref, zeros, separator_id=0))
      0.25
    """
    return _error_rate(
        labels, label_paddings, references, reference_paddings, separator_id
    )
