"""Real text for the CRNN: sentences of the documentation Python ships.

The corpus is ``pydoc_data/topics.py`` of the standard library (the text of
``help("topics")``, about 460k characters of English prose and code), so it is
on every machine that runs the example and nothing is downloaded. Its prose
paragraphs are split into sentences, normalised to the recognizer's alphabet
(upper case, digits, space) and deduplicated, then split once, by a seeded
permutation of the distinct sentences, into three disjoint parts:

- **train** (85%): the recognizer's training lines and the text the ARPA
  language model is built from;
- **validation** (5%): lines for tuning the LM's weight and word bonus;
- **test** (10%): the held-out lines every reported figure is measured on.

No test or validation sentence is in the LM's text (sentences that occur
twice in the documentation are deduplicated before the split), so the LM
knows the test lines' words and phrases only where the documentation repeats
them in other sentences.

A line is a run of whole words of at most ``max_len`` characters: the test
and validation sentences, and the LM's text, are cut into lines greedily (as
many words as fit); training lines are random runs of words from a random
training sentence, so the recognizer sees each sentence cut in many ways.
The text, and so every figure, depends on the Python version (its
documentation changes between releases).
"""

from __future__ import annotations

import contextlib
import io
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

SPLIT_SEED = 20_250_101  # the sentence split's permutation: fixed, like the test set


def paragraphs() -> list[str]:
    """The prose paragraphs of ``pydoc_data.topics``, each on one line.

    Code examples, grammar rules and tables are indented deeper than the
    prose (or are runs of symbols) in that text, so lines indented by more
    than five spaces end a paragraph and are dropped, as are heading rules.
    """
    from pydoc_data.topics import topics

    found = []
    for text in topics.values():
        block: list[str] = []
        for line in text.splitlines() + [""]:
            stripped = line.strip()
            indent = len(line) - len(line.lstrip())
            if not stripped or indent > 5 or set(stripped) <= set("*=-^~"):
                if block:
                    found.append(" ".join(block))
                    block = []
                continue
            block.append(stripped)
    return found


def normalize(text: str, alphabet: str) -> str:
    """``text`` in ``alphabet``: upper case, apostrophes dropped, others a space.

    "Doesn't" becomes "DOESNT" (one word, as it is read), "built-in" becomes
    "BUILT IN"; runs of spaces are one space, none at the ends.
    """
    text = unicodedata.normalize("NFKD", text).upper()
    text = text.replace("'", "").replace("\u2019", "")
    text = "".join(c if c in alphabet else " " for c in text)
    return " ".join(text.split())


def sentences(alphabet: str, min_words: int = 3) -> list[str]:
    """The corpus's distinct prose sentences in ``alphabet``, in text order.

    A sentence ends at ``.``, ``!``, ``?``, ``:`` or ``;`` before a space.
    Sentences of fewer than ``min_words`` words (headings, fragments) and
    those less than 90% letters and spaces (code and formulas in the prose)
    are left out.
    """
    found = []
    for paragraph in paragraphs():
        for raw in re.split(r"(?<=[.!?:;])\s+", paragraph):
            letters = sum(c.isalpha() or c == " " for c in raw)
            if letters < 0.9 * len(raw):
                continue
            text = normalize(raw, alphabet)
            if len(text.split()) >= min_words:
                found.append(text)
    return list(dict.fromkeys(found))


def chunk(sentence: str, max_len: int) -> list[str]:
    """``sentence`` cut greedily into lines of whole words, each ``<= max_len``.

    A word longer than ``max_len`` is left out (it cannot be drawn).
    """
    lines, line = [], ""
    for word in sentence.split():
        if len(word) > max_len:
            if line:
                lines.append(line)
            line = ""
        elif not line:
            line = word
        elif len(line) + 1 + len(word) <= max_len:
            line += " " + word
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


class Split(NamedTuple):
    """The corpus's three disjoint parts, as sentences.

    Attributes:
      train: the training sentences; also the LM's text.
      validation: sentences for tuning the LM's weights.
      test: the held-out sentences.
    """

    train: list[str]
    validation: list[str]
    test: list[str]


def split(
    alphabet: str, validation: float = 0.05, test: float = 0.10, seed=SPLIT_SEED
) -> Split:
    """The distinct sentences, split by a seeded permutation."""
    found = sentences(alphabet)
    order = np.random.default_rng(seed).permutation(len(found))
    n_test = round(test * len(found))
    n_validation = round(validation * len(found))
    pick = [found[i] for i in order]
    return Split(
        train=pick[n_test + n_validation :],
        validation=pick[n_test : n_test + n_validation],
        test=pick[:n_test],
    )


def lines(sentences: Sequence[str], max_len: int) -> list[str]:
    """Every sentence cut into lines (:func:`chunk`), in order."""
    return [line for s in sentences for line in chunk(s, max_len)]


class RandomLines:
    """Draws training lines: random runs of whole words of training sentences.

    Args:
      sentences: the sentences to draw from.
      max_len: the longest line, in characters.

    A line is a random sentence's words from a random first word, as many as
    fit in a random length between a third of ``max_len`` and ``max_len``
    (at least one word), so lines are cut in many places and of many lengths.
    """

    def __init__(self, sentences: Sequence[str], max_len: int):
        self.words = [[w for w in s.split() if len(w) <= max_len] for s in sentences]
        self.words = [w for w in self.words if w]
        self.max_len = max_len

    def __call__(self, rng: np.random.Generator, count: int) -> list[str]:
        drawn = []
        for _ in range(count):
            words = self.words[rng.integers(len(self.words))]
            first = rng.integers(len(words))
            budget = rng.integers(max(1, self.max_len // 3), self.max_len + 1)
            line = words[first]
            for word in words[first + 1 :]:
                if len(line) + 1 + len(word) > budget:
                    break
                line += " " + word
            drawn.append(line)
        return drawn


def build_arpa(texts: Sequence[str], path: Path, order: int = 3) -> dict:
    """Writes a Kneser-Ney ``order``-gram ARPA of ``texts`` to ``path``.

    Built with kaldingram (the Kaldi scripts' back-off Kneser-Ney, equal to
    SRILM's ``ngram-count -ukndiscount``), one ``<s> .. </s>`` per text, no
    count cut-offs. Returns the number of n-grams of each order,
    ``{"1": ..., "2": ..., ...}``.
    """
    from kaldingram.train import NgramCounts

    # kaldingram draws a progress bar per pass; the build takes a second or
    # two, so they are only noise among the example's own.
    with contextlib.redirect_stderr(io.StringIO()):
        counts = NgramCounts(order)
        for text in texts:
            counts.add_raw_counts_from_line(text)
        counts.cal_discounting_constants()
        counts.cal_f()
        counts.cal_bow()
        path = Path(path)
        with path.open("w", encoding="utf-8") as f:
            counts.print_as_arpa(fout=f)
    sizes = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            match = re.match(r"ngram (\d+)=(\d+)", line.strip())
            if match:
                sizes[match[1]] = int(match[2])
            elif line.startswith("\\1-grams"):
                break
    return sizes
