"""Edit distance and error rates against a plain Python Levenshtein."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxctc


def levenshtein(a, b):
    """The textbook full-table dynamic programme over two Python sequences."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        table[i][0] = i
    for j in range(len(b) + 1):
        table[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = min(
                table[i - 1][j] + 1,
                table[i][j - 1] + 1,
                table[i - 1][j - 1] + (a[i - 1] != b[j - 1]),
            )
    return table[len(a)][len(b)]


def words(tokens, separator):
    """Python's ``str.split()`` over a token list."""
    out, word = [], []
    for t in tokens:
        if t == separator:
            if word:
                out.append(tuple(word))
            word = []
        else:
            word.append(t)
    if word:
        out.append(tuple(word))
    return out


def random_batch(rng, batch, width, num_classes, right_padded):
    labels = rng.integers(0, num_classes, size=(batch, width))
    if right_padded:
        lengths = rng.integers(0, width + 1, size=batch)
        paddings = (np.arange(width)[None, :] >= lengths[:, None]).astype(np.float32)
    else:
        paddings = (rng.random((batch, width)) < 0.3).astype(np.float32)
    return labels.astype(np.int32), paddings


def unpad(labels, paddings):
    return [
        [int(x) for x, p in zip(row, pad, strict=True) if p == 0]
        for row, pad in zip(labels, paddings, strict=True)
    ]


@pytest.mark.parametrize("right_padded", [True, False])
@pytest.mark.parametrize("widths", [(7, 5), (4, 9), (1, 1), (6, 6)])
def test_edit_distance_matches_python(rng, right_padded, widths):
    hyp, hyp_pad = random_batch(rng, 64, widths[0], 3, right_padded)
    ref, ref_pad = random_batch(rng, 64, widths[1], 3, right_padded)
    got = jax.jit(jaxctc.edit_distance)(hyp, hyp_pad, ref, ref_pad)
    want = [
        levenshtein(a, b)
        for a, b in zip(unpad(hyp, hyp_pad), unpad(ref, ref_pad), strict=True)
    ]
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("right_padded", [True, False])
def test_word_distance_matches_python(rng, right_padded):
    # Class 0 is the separator, often enough to make many short words and
    # repeated, leading and trailing separators.
    hyp, hyp_pad = random_batch(rng, 128, 10, 3, right_padded)
    ref, ref_pad = random_batch(rng, 128, 8, 3, right_padded)
    got = jax.jit(jaxctc.edit_distance, static_argnames="separator_id")(
        hyp, hyp_pad, ref, ref_pad, separator_id=0
    )
    want = [
        levenshtein(words(a, 0), words(b, 0))
        for a, b in zip(unpad(hyp, hyp_pad), unpad(ref, ref_pad), strict=True)
    ]
    np.testing.assert_array_equal(np.asarray(got), want)


def test_words_longer_than_the_other_side():
    # "aaaa" vs "aa": the comparison of the first min(N, M) tokens alone would
    # call these equal; the lengths tell them apart.
    hyp = jnp.array([[1, 1, 1, 1]])
    ref = jnp.array([[1, 1]])
    got = jaxctc.edit_distance(
        hyp, jnp.zeros((1, 4)), ref, jnp.zeros((1, 2)), separator_id=0
    )
    assert got.tolist() == [1]


def test_error_rates_match_python(rng):
    hyp, hyp_pad = random_batch(rng, 32, 9, 4, True)
    ref, ref_pad = random_batch(rng, 32, 9, 4, True)
    hyps, refs = unpad(hyp, hyp_pad), unpad(ref, ref_pad)
    cer = jax.jit(jaxctc.char_error_rate)(hyp, hyp_pad, ref, ref_pad)
    edits = sum(levenshtein(a, b) for a, b in zip(hyps, refs, strict=True))
    want_cer = edits / sum(map(len, refs))
    assert cer.dtype == jnp.float32
    np.testing.assert_allclose(float(cer), want_cer, rtol=1e-6)
    wer = jaxctc.word_error_rate(hyp, hyp_pad, ref, ref_pad, separator_id=0)
    want_wer = sum(
        levenshtein(words(a, 0), words(b, 0)) for a, b in zip(hyps, refs, strict=True)
    ) / sum(len(words(b, 0)) for b in refs)
    assert wer.dtype == jnp.float32
    np.testing.assert_allclose(float(wer), want_wer, rtol=1e-6)


def test_symmetric_and_zero_on_equal(rng):
    a, a_pad = random_batch(rng, 32, 8, 5, False)
    b, b_pad = random_batch(rng, 32, 6, 5, False)
    ab = jaxctc.edit_distance(a, a_pad, b, b_pad)
    ba = jaxctc.edit_distance(b, b_pad, a, a_pad)
    np.testing.assert_array_equal(np.asarray(ab), np.asarray(ba))
    assert jaxctc.edit_distance(a, a_pad, a, a_pad).tolist() == [0] * 32


def test_empty_sides():
    labels = jnp.array([[1, 2, 3], [4, 5, 6]])
    paddings = jnp.array([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    empty = jnp.zeros((2, 0), jnp.int32)
    got = jaxctc.edit_distance(labels, paddings, empty, jnp.zeros((2, 0)))
    assert got.tolist() == [2, 0]
    got = jaxctc.edit_distance(empty, jnp.zeros((2, 0)), labels, paddings)
    assert got.tolist() == [2, 0]
    # No reference tokens at all: the rate divides by one, not zero.
    rate = jaxctc.char_error_rate(labels, paddings, empty, jnp.zeros((2, 0)))
    assert float(rate) == 2.0


def test_vmap_over_groups(rng):
    hyp, hyp_pad = random_batch(rng, 12, 6, 3, False)
    ref, ref_pad = random_batch(rng, 12, 5, 3, False)
    grouped = jax.vmap(jaxctc.edit_distance)(
        *(x.reshape(3, 4, -1) for x in (hyp, hyp_pad, ref, ref_pad))
    )
    flat = jaxctc.edit_distance(hyp, hyp_pad, ref, ref_pad)
    np.testing.assert_array_equal(np.asarray(grouped).reshape(-1), np.asarray(flat))


def test_bad_inputs():
    ok, pad = jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="`labels` must have rank 2"):
        jaxctc.edit_distance(ok[0], pad[0], ok, pad)
    with pytest.raises(TypeError, match="`references` must be an integer"):
        jaxctc.edit_distance(ok, pad, pad, pad)
    with pytest.raises(
        ValueError, match="`label_paddings` must have the shape of `labels`"
    ):
        jaxctc.edit_distance(ok, pad[:, :2], ok, pad)
    with pytest.raises(ValueError, match="same batch size"):
        jaxctc.edit_distance(ok, pad, ok[:1], pad[:1])
    with pytest.raises(TypeError, match="`separator_id`"):
        jaxctc.edit_distance(ok, pad, ok, pad, separator_id=1.0)


def test_edit_distance_compares_int64_labels_unwrapped():
    # Issue 11, item 8: with x64, 2**32 + 1 was narrowed to int32 (1) first.
    big = np.array([[2**32 + 1, 7]], np.int64)
    small = np.array([[1, 7]], np.int32)
    zeros = np.zeros((1, 2))
    assert jaxctc.edit_distance(big, zeros, small, zeros).tolist() == [1]
    assert jaxctc.edit_distance(small, zeros, big, zeros).tolist() == [1]
    assert jaxctc.edit_distance(big, zeros, big, zeros).tolist() == [0]
    words = jaxctc.edit_distance(big, zeros, small, zeros, separator_id=7)
    assert words.tolist() == [1]


@pytest.mark.parametrize("value", [0.5, 2.0, np.nan, -1.0])
@pytest.mark.parametrize("side", ["label_paddings", "reference_paddings"])
@pytest.mark.parametrize(
    "metric",
    [
        jaxctc.edit_distance,
        jaxctc.char_error_rate,
        lambda *a: jaxctc.word_error_rate(*a, separator_id=0),
    ],
)
def test_paddings_that_are_not_zero_or_one_raise(value, side, metric):
    # Issue 11, item 13: such paddings were read as "padded".
    labels = np.array([[1, 2, 0, 3]], np.int32)
    good = np.zeros((1, 4), np.float32)
    bad = good.copy()
    bad[0, 1] = value
    args = [labels, good, labels, good]
    args[1 if side == "label_paddings" else 3] = bad
    with pytest.raises(ValueError, match=f"`{side}` must contain only 0 and 1"):
        metric(*args)
