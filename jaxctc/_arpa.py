"""Reading ARPA n-gram files on the host, in NumPy.

An ARPA file lists, per order ``n``, the n-grams ``w_1 .. w_n`` with their
log10 probability :math:`\\log_{10} P(w_n \\mid w_1 .. w_{n-1})` and, for
orders below the highest, a log10 backoff weight. The model it defines
(Katz backoff, as KenLM reads it) is, in natural-log units,

.. math::
    \\ln P(w \\mid h) = \\begin{cases}
        \\mathrm{logp}(h\\,w) & \\text{if } h\\,w \\text{ is listed,} \\\\
        \\mathrm{bow}(h) + \\ln P(w \\mid h_{2:}) & \\text{otherwise,}
    \\end{cases}

with :math:`\\mathrm{bow}(h) = 0` for an ``h`` that is not listed and the
unigram of ``<unk>`` (log10 -100, KenLM's rule, where the file has none) for a
word the file does not know.

A well-formed file is read in bulk, over all its lines at once: its bytes are
cut into tokens at whitespace in NumPy, the lines are checked by their token
counts, the words get their ids by sorting their bytes packed into integers
and the scores are parsed by one ``float`` each. Any other file (a malformed
line, whitespace or digits beyond ASCII, a NUL byte) is read line by line, by
the reader that defines what a file says and names the line of an error.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import re
import sys
from typing import NamedTuple

import numpy as np

_LN10 = math.log(10.0)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


class Arpa(NamedTuple):
    """An ARPA model as read: words and n-grams, scores in natural log.

    Attributes:
      words: the vocabulary, in the order of first appearance (``<s>``,
        ``</s>`` and ``<unk>`` are added if the file lacks them).
      ngrams: per order ``n = 1 .. N``, ``[count_n, n]`` int32 word ids.
      log_probs: per order, ``[count_n]`` float64, :math:`\\ln P`.
      backoffs: per order, ``[count_n]`` float64, ln backoff weights (0 where
        the file gives none; always 0 for the highest order).
    """

    words: list[str]
    ngrams: list[np.ndarray]
    log_probs: list[np.ndarray]
    backoffs: list[np.ndarray]

    @property
    def order(self) -> int:
        return len(self.ngrams)


def _is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _open(path):
    path = os.fspath(path)
    if _is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_bytes(path):
    path = os.fspath(path)
    with (gzip.open if _is_gzip(path) else open)(path, "rb") as f:
        return f.read()


def _error(path, number, message):
    return ValueError(f"{os.fspath(path)}, line {number}: {message}")


def _float(text, path, number, what):
    try:
        value = float(text)
    except ValueError:
        raise _error(path, number, f"{what} {text!r} is not a number.") from None
    if math.isnan(value) or value > 0:
        raise _error(path, number, f"{what} {text!r} must be a log10 <= 0.")
    return value


def read_arpa(path) -> Arpa:
    """Reads an ARPA file (plain or gzip-compressed) of any order.

    Raises:
      ValueError: for a malformed file, naming the file and the line: a
        missing ``\\data\\`` header or ``\\end\\``, a section out of order, an
        n-gram with the wrong number of words or fields, a score that is not
        a number, counts that disagree with the header, a duplicate n-gram.
    """
    # The bulk reader takes well-formed files; the rest (and the errors,
    # with their line) are the line reader's, which defines what is read.
    parsed = _read_bulk(_read_bytes(path))
    if parsed is None:
        parsed = _read_lines(path)
    words, grams, probs, bows = parsed
    known = set(words)
    words += [w for w in (BOS, EOS, UNK) if w not in known]
    ngrams, log_probs, backoffs = [], [], []
    for n, (ids, p, b) in enumerate(zip(grams, probs, bows, strict=True), 1):
        if _has_duplicate_rows(ids, len(words)):
            raise ValueError(f"{os.fspath(path)}: duplicate {n}-grams.")
        ngrams.append(ids)
        log_probs.append(p * _LN10)
        backoffs.append(b * _LN10)
    backoffs[-1] = np.zeros_like(backoffs[-1])
    return Arpa(words, ngrams, log_probs, backoffs)


def _has_duplicate_rows(ids, num_words):
    if num_words ** ids.shape[1] < 1 << 63:  # a row fits an int64
        keys = ids.astype(np.int64) @ num_words ** np.arange(ids.shape[1])
        keys.sort()
        return bool(np.any(keys[1:] == keys[:-1]))
    rows = ids[np.lexsort(ids.T[::-1])]
    return bool(np.any(np.all(rows[1:] == rows[:-1], axis=1)))


# str.split()'s whitespace (and str.strip()'s): by byte in ASCII, where the
# bulk reader cuts tokens with it; beyond ASCII the characters that send a
# file to the line reader.
_SPACE = np.array([c < 128 and chr(c).isspace() for c in range(256)])


@functools.cache
def _unicode_space():
    chars = "".join(c for c in map(chr, range(128, sys.maxunicode + 1)) if c.isspace())
    return re.compile(f"[{chars}]")


def _read_bulk(data: bytes):
    """What :func:`_read_lines` returns, for a well-formed file's bytes, read
    with NumPy over all lines at once; ``None`` for any other file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.isascii() and _unicode_space().search(text):
        return None
    del text
    if b"\r" in data:  # universal newlines, as text mode reads them
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if b"\0" in data:  # words are compared zero-padded (_intern)
        return None
    raw = np.frombuffer(data, np.uint8)
    # Tokens: the runs of bytes that are not whitespace, in file order.
    edges = np.diff(np.concatenate([[True], _SPACE[raw], [True]]).view(np.int8))
    starts, ends = np.flatnonzero(edges == -1), np.flatnonzero(edges == 1)
    if not len(starts):
        return None
    # The nonblank lines: their first token (the first after a newline) and
    # their number of tokens.
    after = np.searchsorted(starts, np.flatnonzero(raw == ord("\n")))
    after = after[(after > 0) & (after < len(starts))]
    first = np.concatenate([[0], after[np.diff(after, prepend=0) != 0]])
    sizes = np.diff(first, append=len(starts))
    marks = np.flatnonzero(raw[starts[first]] == ord("\\")).tolist()

    def text_of(i):  # nonblank line i, stripped
        return data[starts[first[i]] : ends[first[i] + sizes[i] - 1]].decode()

    headers = [text_of(i) for i in marks]
    if "\\data\\" not in headers:
        return None
    k = headers.index("\\data\\") + 1
    counts = {}
    for i in range(marks[k - 1] + 1, marks[k] if k < len(marks) else len(first)):
        count = _count(text_of(i))
        if count is None:
            return None
        counts[count[0]] = count[1]
    # (n, its first nonblank line, the line after its last)
    sections: list[tuple[int, int, int]] = []
    while k < len(marks) and headers[k] != "\\end\\":
        header, n = headers[k], len(sections) + 1
        lo, hi = marks[k] + 1, marks[k + 1] if k + 1 < len(marks) else len(first)
        if not (
            header.startswith("\\")
            and header.endswith("-grams:")
            and header[1:-7].isdigit()
            and int(header[1:-7]) == n
            and counts.get(n) == hi - lo
        ):
            return None
        sections.append((n, lo, hi))
        k += 1
    if k != len(marks) - 1 or marks[k] != len(first) - 1 or not sections:
        return None  # no \end\, or text after it
    prob_tokens, word_tokens, bow_tokens, bow_rows = [], [], [], []
    for n, lo, hi in sections:
        size = sizes[lo:hi]
        if not np.all((size == n + 1) | (size == n + 2)):
            return None
        token = first[lo:hi]
        prob_tokens.append(token)
        word_tokens.append(token[:, None] + np.arange(1, n + 1))
        bow_rows.append(np.flatnonzero(size == n + 2))
        bow_tokens.append(token[bow_rows[-1]] + n + 1)

    # The scores by float() of their bytes, which is float() of their text
    # (or an error for non-ASCII bytes: the line reader then decides): all
    # other bytes blanked, one split, one float() each.
    score_tokens = np.concatenate(prob_tokens + bow_tokens)
    delta = np.zeros(len(raw) + 1, np.int8)
    delta[starts[score_tokens]] = 1
    delta[ends[score_tokens]] = -1
    kept = np.cumsum(delta[:-1], dtype=np.int8).view(bool)
    fields = np.where(kept, raw, np.uint8(ord(" "))).tobytes().split()
    try:
        scores = np.fromiter(map(float, fields), np.float64, len(fields))
    except ValueError:
        return None
    is_prob = np.zeros(len(starts), bool)
    is_prob[np.concatenate(prob_tokens)] = True
    is_prob = is_prob[np.sort(score_tokens)]
    probs, bows = scores[is_prob], scores[~is_prob]
    if np.any(np.isnan(probs) | (probs > 0)) or np.any(np.isnan(bows)):
        return None
    tokens = np.concatenate([t.ravel() for t in word_tokens])
    ids, words = _intern(data, starts[tokens], ends[tokens])
    grams, log10_probs, log10_bows = [], [], []
    at_word = at_prob = at_bow = 0
    for (n, lo, hi), rows in zip(sections, bow_rows, strict=True):
        count = hi - lo
        grams.append(ids[at_word : at_word + count * n].reshape(count, n))
        log10_probs.append(probs[at_prob : at_prob + count])
        bow = np.zeros(count)
        bow[rows] = bows[at_bow : at_bow + len(rows)]
        log10_bows.append(bow)
        at_word, at_prob, at_bow = (
            at_word + count * n,
            at_prob + count,
            at_bow + len(rows),
        )
    return words, grams, log10_probs, log10_bows


def _count(line):
    """``(n, count)`` of a line ``ngram n=count``, or ``None``."""
    key, _, value = line.partition("=")
    parts = key.split()
    if len(parts) != 2 or parts[0] != "ngram" or not parts[1].isdigit():
        return None
    if not value.strip().isdigit():
        return None
    try:
        return int(parts[1]), int(value)
    except ValueError:  # digits that int() does not take ("²")
        return None


_MASKS = {
    width: np.array(
        [(1 << 8 * k) - 1 for k in range(width)] + [(1 << 8 * width) - 1], dtype
    )
    for width, dtype in ((8, np.uint64), (4, np.uint32))
}


def _intern(data, starts, ends):
    """``(ids, words)``: int32 ids of the words ``data[starts[i]:ends[i]]``
    (UTF-8 without NUL bytes), numbered in the order of first appearance."""
    padded = data + bytes(8)
    lengths = ends - starts

    def read(offset, at, width):
        # ``width`` bytes from every byte offset, as little-endian integers,
        # with the bytes past each word's end set to 0.
        dtype = _MASKS[width].dtype.newbyteorder("<")
        view = np.ndarray((len(data),), dtype, padded, 0, (1,))
        return (
            view[starts[at] + offset]
            & _MASKS[width][np.minimum(lengths[at] - offset, width)]
        )

    # A word's first 8 bytes are a uint64 (zero-padded: no NUL, so the
    # lengths differ too); longer words are told apart 4 bytes at a time, by
    # the id so far and the next 4 bytes.
    key = read(0, slice(None), 8)
    longer = np.flatnonzero(lengths > 8)
    if longer.size:
        key = _first_appearance(key)[1]
        top, offset = key.max() + 1, 8
        while longer.size:
            if top >= 1 << 31:  # keep the ids below 2**32 for the pairs
                key = _first_appearance(key)[1]
                top = key.max() + 1
            pair = (key[longer].astype(np.uint64) << 32) | read(offset, longer, 4)
            inverse = _first_appearance(pair)[1]
            key[longer] = top + inverse
            top += inverse.max() + 1
            offset += 4
            longer = longer[lengths[longer] > offset]
    first, inverse = _first_appearance(key)
    order = np.argsort(first)
    rank = np.empty(len(order), np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    words = [data[starts[i] : ends[i]].decode() for i in first[order].tolist()]
    return rank[inverse], words


def _first_appearance(keys):
    """``(first, inverse)``: per distinct key (in sorted order), the index
    of its first occurrence, and per key the index of its distinct key."""
    if not len(keys):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    new = np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]])
    group = np.flatnonzero(new)
    inverse = np.empty(len(keys), np.int64)
    inverse[order] = np.cumsum(new) - 1
    return np.minimum.reduceat(order, group), inverse


def _read_lines(path):
    """``(words, ids, log10 probabilities, log10 backoffs)`` of a file, line
    by line (words in the order of first appearance; per order ``n``,
    ``[count_n, n]`` int32 ids and ``[count_n]`` float64 scores)."""
    words: list[str] = []
    index: dict[str, int] = {}

    def word_id(word):
        i = index.get(word)
        if i is None:
            i = index[word] = len(words)
            words.append(word)
        return i

    counts: dict[int, int] = {}
    grams: list[list[tuple[int, ...]]] = []
    probs: list[list[float]] = []
    bows: list[list[float]] = []
    section = None  # None: before \data\; 0: in \data\; n: in \n-grams:
    ended = False
    number = 0
    with _open(path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            if ended:
                raise _error(path, number, "text after \\end\\.")
            if section is None:
                if line == "\\data\\":
                    section = 0
                continue  # text before \data\ is a comment
            if line == "\\end\\":
                ended = True
                continue
            if line.startswith("\\") and line.endswith("-grams:"):
                n = line[1:-7]
                if not n.isdigit() or int(n) != len(grams) + 1:
                    raise _error(
                        path,
                        number,
                        f"section {line!r} out of order: expected "
                        f"\\{len(grams) + 1}-grams:.",
                    )
                section = int(n)
                if section not in counts:
                    raise _error(path, number, f"{line} has no count in \\data\\.")
                grams.append([])
                probs.append([])
                bows.append([])
                continue
            if section == 0:
                key, _, value = line.partition("=")
                parts = key.split()
                if len(parts) != 2 or parts[0] != "ngram" or not parts[1].isdigit():
                    raise _error(
                        path, number, f"expected 'ngram N=count', got {line!r}."
                    )
                if not value.strip().isdigit():
                    raise _error(path, number, f"count {value!r} is not an integer.")
                counts[int(parts[1])] = int(value)
                continue
            n = section
            fields = line.split()
            if len(fields) not in (n + 1, n + 2):
                raise _error(
                    path,
                    number,
                    f"a {n}-gram needs a log10 probability, {n} words and an "
                    f"optional backoff; got {len(fields)} fields.",
                )
            logp = _float(fields[0], path, number, "log10 probability")
            bow = 0.0
            if len(fields) == n + 2:
                bow = float(fields[-1]) if _is_number(fields[-1]) else math.nan
                if math.isnan(bow):
                    raise _error(
                        path, number, f"backoff {fields[-1]!r} is not a number."
                    )
            grams[-1].append(tuple(word_id(w) for w in fields[1 : n + 1]))
            probs[-1].append(logp)
            bows[-1].append(bow)
    if section is None:
        raise _error(path, number, "no \\data\\ header: not an ARPA file.")
    if not ended:
        raise _error(path, number, "the file ends before \\end\\.")
    if not grams:
        raise _error(path, number, "no n-gram sections.")
    for n in range(1, len(grams) + 1):
        if counts.get(n) != len(grams[n - 1]):
            raise _error(
                path,
                number,
                f"\\data\\ says ngram {n}={counts.get(n)}, the file lists "
                f"{len(grams[n - 1])}.",
            )
    ids = [np.asarray(g, np.int32).reshape(len(g), n) for n, g in enumerate(grams, 1)]
    return (
        words,
        ids,
        [np.asarray(p, np.float64) for p in probs],
        [np.asarray(b, np.float64) for b in bows],
    )


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True
