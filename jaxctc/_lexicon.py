"""A lexicon constraint as a fusion scorer: a trie of the allowed words over
the symbols of the labels' text (see ``jaxctc._trie``), walked a token at a
time through one hashed ``(node, token)`` table.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxctc import _buckets, _trie
from jaxctc._trie import BOUNDARY


@_trie.register
@dataclasses.dataclass(frozen=True, init=False)
class Lexicon:
    r"""Only words of a list can be emitted: a hard constraint.

    The text of a hypothesis is cut into words at the ``word_delimiter``
    (character labels: the delimiter label; BPE labels: before each
    word-initial label, e.g. ``"▁bun"`` with ``word_delimiter="▁"``). A
    complete hypothesis gets 0 when every word is in ``words`` and ``-inf``
    otherwise, and a prefix gets ``-inf`` at the token where it stops being the
    beginning of such a hypothesis: a partial word that no word of the list
    starts with, or a delimiter (a word-initial token) after a partial word
    that is not a word; the end (``final``) requires the last word to be
    complete. Empty words (a leading, trailing or repeated delimiter) are
    allowed, and so is the empty hypothesis. Without a delimiter
    (``word_delimiter=None``) the whole text must be one word of the list
    (e.g. a list of codes to recognize).

    A prefix scored ``-inf`` ranks below every allowed one, so it
    stays in the beam only while fewer than ``beam_width`` allowed prefixes
    exist (tied with empty slots, it may be dropped), and its extensions are
    all ``-inf`` too (its state is dead). When fewer than
    ``top_paths`` allowed hypotheses were found, ``prefix_beam_search``
    returns the rest as missing hypotheses: empty labels, ``log_probs`` and
    ``scores`` ``-inf``. No NaN arises: the other scorers' contributions are finite, and
    the search only adds scores.

    Args:
      words: the allowed words (strings without whitespace; empty strings are
        ignored). An empty list allows only hypotheses without words.
      labels: the text of each of the ``K`` classes, ``""`` for the blank.
      word_delimiter: the text that begins a word: a label of its own for
        character labels (``" "``, ``"|"``), or the prefix of word-initial
        labels for BPE (``"▁"``); ``None``: the text is one word.

    Raises:
      ValueError: labels that are not distinct; a ``word_delimiter`` that no
        label starts with; a word with a character that no label has, with
        whitespace, or that no sequence of labels spells.

    Attributes:
      children: ``(node, class) -> node``: the partial word's node after a
        class that continues it.
      begins: ``[K]`` int32, for a word-initial class the node of the word it
        begins (``-1``: no word begins so), ``-2`` for the other classes.
      complete: ``[S]`` bool, whether a node ends a word (the root does).

    Examples:
      Labels blank, ``a``, ``b``, space and the words "ab", "b": "ab b" is
      allowed, "ba" is not (at its second token), and "a" not at its end:

      >>> import jax.numpy as jnp, jaxctc
      >>> lex = jaxctc.Lexicon(["ab", "b"], ["", "a", "b", " "])
      >>> def deltas(tokens):
      ...     state, out = lex.init(), []
      ...     for k in tokens:
      ...         delta, state = lex.score(state, jnp.array([k]))
      ...         state = state[0]
      ...         out.append(float(delta[0]))
      ...     return out, float(lex.final(state))
      >>> deltas([1, 2, 3, 2])  # "ab b"
      ([0.0, 0.0, 0.0, 0.0], 0.0)
      >>> deltas([2, 1])  # "ba"
      ([0.0, -inf], -inf)
      >>> deltas([1])  # "a"
      ([0.0], -inf)
    """

    children: _buckets.BucketTable
    begins: jax.Array
    complete: jax.Array

    def __init__(self, words, labels, *, word_delimiter=" "):
        spelling = _trie.spell_labels(labels, word_delimiter)
        trie = _trie.Trie()
        ends = []
        if isinstance(words, str):
            words = [words]
        for i, word in enumerate(words):
            name = f"words[{i}]"
            symbols = spelling.text(word, name)
            if BOUNDARY in symbols:
                raise ValueError(f"`{name}` {word!r} has whitespace.")
            if symbols and not spelling.spells_word(symbols):
                raise ValueError(
                    f"`{name}` {word!r} cannot be spelled with the labels."
                )
            ends.append(trie.insert(symbols))
        complete = np.zeros(len(trie), bool)
        complete[ends] = True
        complete[0] = True
        for name, value in _tables(trie, spelling).items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "complete", jnp.asarray(complete))

    @property
    def nbytes(self) -> int:
        """Bytes of the device tables."""
        return _trie.nbytes(self)

    def init(self, shape=()) -> jax.Array:
        """The state of the empty hypothesis: the partial word's node, int32
        (0: none; -1: dead, the prefix is not allowed)."""
        return jnp.zeros(shape, jnp.int32)

    def score(self, state, tokens):
        """The contribution of appending each of ``tokens`` ``S + [C]`` to
        the hypotheses in ``state`` ``S`` (0, or ``-inf`` where the prefix
        stops being allowed), and the states after them."""
        tokens = jnp.asarray(tokens, jnp.int32)
        node = jnp.broadcast_to(state[..., None], tokens.shape)
        alive = node >= 0
        node = jnp.maximum(node, 0)
        found, child = _buckets.lookup(self.children, node, tokens)
        begins = _buckets.take(self.begins, tokens)
        after = jnp.where(
            begins == -2,
            jnp.where(found, child, -1),
            jnp.where(_buckets.take(self.complete, node), begins, -1),
        )
        after = jnp.where(alive, after, -1)
        # -inf once, where the prefix dies; a dead prefix is -inf already.
        delta = jnp.where(alive & (after < 0), -jnp.inf, 0.0).astype(jnp.float32)
        return delta, after

    def bound(self):
        """An upper bound on every contribution :meth:`score` returns: 0."""
        return jnp.float32(0.0)

    def final(self, state):
        """The contribution of ending: ``-inf`` unless the last word is
        complete."""
        ok = (state >= 0) & _buckets.take(self.complete, jnp.maximum(state, 0))
        return jnp.where(ok, 0.0, -jnp.inf).astype(jnp.float32)


def _tables(trie, spelling):
    """``children`` and ``begins``: each class's walk over its symbols, from
    every node (a class that continues the word) or from the root (a
    word-initial class)."""
    nodes, classes, after, begins = _trie.class_walks(trie, spelling)
    children = _buckets.build(nodes, classes, (after.astype(np.int32),), empty=(-1,))
    return dict(children=children, begins=jnp.asarray(begins, jnp.int32))
