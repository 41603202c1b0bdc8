"""The labels' text as symbols, and tries over symbols: the host-side
machinery of the scorers that read text (:class:`Hotwords`, :class:`Lexicon`,
a word-level :class:`NGramLM`).

Each label is read as a string of **symbols**: its characters, with a leading
``word_delimiter`` read as one **boundary** symbol (:data:`BOUNDARY`). With
character labels the delimiter label (``" "``, wav2vec2's ``"|"``) is the
boundary alone; with BPE labels (``word_delimiter="▁"``, sentencepiece's
word-initial marker) ``"▁bun"`` is the boundary, then ``b``, ``u``, ``n``. A
scorer works on the symbol stream that a hypothesis spells, so it does not
care how the text was cut into tokens: appending a token walks its symbols,
and the host folds each walk into one transition per ``(state, token)`` pair,
so that the device does one lookup per candidate.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

BOUNDARY = 0  # the symbol of a word boundary; characters are 1, 2, ...


@dataclasses.dataclass(frozen=True)
class Spelling:
    """The labels as symbols.

    Attributes:
      symbols: per class, its symbols (``()`` for the blank).
      alphabet: each character's symbol.
      delimiter: the word delimiter, ``None`` without word boundaries.
    """

    symbols: tuple[tuple[int, ...], ...]
    alphabet: dict[str, int]
    delimiter: str | None

    @property
    def num_symbols(self) -> int:
        return len(self.alphabet) + 1

    def text(self, text: str, name: str) -> tuple[int, ...]:
        """The symbols of ``text``: its whitespace-separated words joined by
        boundaries (with a delimiter), else its characters as they are."""
        if not isinstance(text, str):
            raise ValueError(f"`{name}`: expected a string, got {text!r}.")
        words = text.split() if self.delimiter is not None else [text]
        out: list[int] = []
        for i, word in enumerate(words):
            if i:
                out.append(BOUNDARY)
            for char in word:
                if char not in self.alphabet:
                    raise ValueError(
                        f"`{name}`: the character {char!r} of {text!r} is not in "
                        "any label."
                    )
                out.append(self.alphabet[char])
        return tuple(out)

    def tokens(self, ids, name: str) -> tuple[int, ...]:
        """The symbols that the token sequence ``ids`` spells."""
        out: list[int] = []
        for k in ids:
            if not isinstance(k, (int, np.integer)) or not (
                0 <= k < len(self.symbols) and self.symbols[k]
            ):
                raise ValueError(
                    f"`{name}`: {k!r} is not the index of a non-blank class."
                )
            out.extend(self.symbols[int(k)])
        return tuple(out)

    def known_prefix(self, word: str) -> tuple[int, ...]:
        """The symbols of the longest prefix of ``word`` whose characters
        are all in some label (all of ``word`` when every one is)."""
        out = []
        for char in word:
            symbol = self.alphabet.get(char)
            if symbol is None:
                break
            out.append(symbol)
        return tuple(out)

    @functools.cached_property
    def _pieces(self):
        pieces = {s for s in self.symbols if s}
        return pieces, max(map(len, pieces), default=0)

    def spellable(self, symbols) -> bool:
        """Whether some token sequence spells ``symbols`` exactly."""
        pieces, longest = self._pieces
        if longest == 1:  # every symbol is a label of its own
            return all((s,) in pieces for s in symbols)
        reach = [True] + [False] * len(symbols)
        for i in range(len(symbols)):
            if reach[i]:
                for n in range(1, min(longest, len(symbols) - i) + 1):
                    if tuple(symbols[i : i + n]) in pieces:
                        reach[i + n] = True
        return reach[-1]

    def spells_word(self, symbols) -> bool:
        """Whether some token sequence spells the word ``symbols``, with a
        word-initial token (a leading boundary) or without one."""
        return self.spellable(symbols) or (
            self.delimiter is not None and self.spellable((BOUNDARY, *symbols))
        )


def spell_labels(labels, word_delimiter: str | None) -> Spelling:
    """Reads ``labels`` (the text of each class, ``""`` for the blank).

    Raises:
      ValueError: labels that are not distinct, or a ``word_delimiter`` that
        no label starts with.
    """
    labels = [str(x) for x in labels]
    if len(set(labels)) != len(labels):
        raise ValueError("`labels` must be distinct.")
    if word_delimiter is not None:
        word_delimiter = str(word_delimiter)
        if not word_delimiter or not any(x.startswith(word_delimiter) for x in labels):
            raise ValueError(
                f"`word_delimiter` {word_delimiter!r} is not among the labels "
                "(pass word_delimiter=None for text without word boundaries)."
            )
    alphabet: dict[str, int] = {}
    symbols = []
    for label in labels:
        out = []
        if word_delimiter is not None and label.startswith(word_delimiter):
            out.append(BOUNDARY)
            label = label[len(word_delimiter) :]
        for char in label:
            out.append(alphabet.setdefault(char, len(alphabet) + 1))
        symbols.append(tuple(out))
    return Spelling(tuple(symbols), alphabet, word_delimiter)


class Trie:
    """A trie over symbol sequences (host): node 0 is the root."""

    def __init__(self):
        self.children: dict[tuple[int, int], int] = {}
        self.depth = [0]

    def insert(self, symbols) -> int:
        """Adds ``symbols``; returns the node where they end."""
        node = 0
        for s in symbols:
            child = self.children.get((node, s))
            if child is None:
                child = self.children[(node, s)] = len(self.depth)
                self.depth.append(self.depth[node] + 1)
            node = child
        return node

    def __len__(self) -> int:
        return len(self.depth)


def class_walks(trie: Trie, spelling: Spelling):
    """Each class's walk over its symbols in ``trie``, folded into one
    transition per ``(node, class)``.

    A class that continues the partial word walks from every node where its
    first symbol has an edge; a word-initial class (its first symbol the
    boundary) walks from the root, whatever the partial word was.

    Returns:
      ``(nodes, classes, after, begins)``, NumPy int64: the continuing
      transitions ``(nodes[i], classes[i]) -> after[i]`` (those that stay in
      the trie, from the nodes that token sequences reach), and ``begins [K]``: for a word-initial class the node of
      the word it begins (``-1``: it leaves the trie), ``-2`` for the others.
    """
    edges = np.array(
        [(node, s, child) for (node, s), child in trie.children.items()], np.int64
    ).reshape(-1, 3)
    num_symbols = spelling.num_symbols
    keys = edges[:, 0] * num_symbols + edges[:, 1]
    order = np.argsort(keys)
    # A last key above every other keeps searchsorted's positions in range.
    keys = np.append(keys[order], np.iinfo(np.int64).max)
    targets = np.append(edges[order, 2], -1)

    def walk(nodes, symbols):
        for s in symbols:
            key = nodes * num_symbols + s
            pos = np.searchsorted(keys, key)
            nodes = np.where((nodes >= 0) & (keys[pos] == key), targets[pos], -1)
        return nodes

    begins = np.full(len(spelling.symbols), -2, np.int64)
    empty = np.zeros(0, np.int64)
    parts: tuple[list[np.ndarray], ...] = ([empty], [empty], [empty])
    for k, symbols in enumerate(spelling.symbols):
        if not symbols:  # the blank is never scored
            continue
        if symbols[0] == BOUNDARY:
            begins[k] = walk(np.zeros(1, np.int64), symbols[1:])[0]
            continue
        # Only the nodes with an edge for the first symbol can continue.
        first = edges[:, 1] == symbols[0]
        ends = walk(edges[first, 2], symbols[1:])
        ok = ends >= 0
        parts[0].append(edges[first, 0][ok])
        parts[1].append(np.full(int(ok.sum()), k, np.int64))
        parts[2].append(ends[ok])
    nodes, classes, after = (np.concatenate(p) for p in parts)
    # Keep the transitions from the nodes that some token sequence reaches
    # (the others, e.g. inside a multi-character label, are never a state).
    reach = np.zeros(len(trie), bool)
    reach[0] = True
    reach[begins[begins >= 0]] = True
    while True:
        more = reach.copy()
        more[after[reach[nodes]]] = True
        if np.array_equal(more, reach):
            break
        reach = more
    keep = reach[nodes]
    return nodes[keep], classes[keep], after[keep], begins


def register(cls):
    """Registers the frozen dataclass ``cls`` as a pytree whose fields with
    ``metadata=dict(static=True)`` are static.

    As :func:`jax.tree_util.register_dataclass`, except that rebuilding a
    value bypasses ``__init__``, which here builds a scorer from user input.
    """
    fields = dataclasses.fields(cls)
    data = [f.name for f in fields if not f.metadata.get("static")]
    meta = [f.name for f in fields if f.metadata.get("static")]

    def flatten_with_keys(obj):
        children = [(jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in data]
        return children, tuple(getattr(obj, n) for n in meta)

    def flatten(obj):
        return [getattr(obj, n) for n in data], tuple(getattr(obj, n) for n in meta)

    def unflatten(aux, children):
        obj = object.__new__(cls)
        for name, value in (
            *zip(data, children, strict=True),
            *zip(meta, aux, strict=True),
        ):
            object.__setattr__(obj, name, value)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls


def nbytes(tree) -> int:
    """Bytes of the arrays of ``tree``."""
    return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(tree))
