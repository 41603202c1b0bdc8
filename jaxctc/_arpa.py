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
unigram of ``<unk>`` (or ``unk_log10``) for a word the file does not know.
"""

from __future__ import annotations

import gzip
import math
import os
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


def _open(path):
    path = os.fspath(path)
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if gz:
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


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
    for special in (BOS, EOS, UNK):
        word_id(special)
    ngrams, log_probs, backoffs = [], [], []
    for n, (g, p, b) in enumerate(zip(grams, probs, bows, strict=True), 1):
        ids = np.asarray(g, np.int32).reshape(len(g), n)
        if len(np.unique(ids, axis=0)) != len(ids):
            raise ValueError(f"{os.fspath(path)}: duplicate {n}-grams.")
        ngrams.append(ids)
        log_probs.append(np.asarray(p, np.float64) * _LN10)
        backoffs.append(np.asarray(b, np.float64) * _LN10)
    backoffs[-1] = np.zeros_like(backoffs[-1])
    return Arpa(words, ngrams, log_probs, backoffs)


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True
