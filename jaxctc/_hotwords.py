"""Phrase boosting (hotwords) as a fusion scorer: an Aho-Corasick automaton
over the symbols of the labels' text (see ``jaxctc._trie``), built on the
host and folded into one hashed ``(state, token)`` transition table.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxctc import _buckets, _trie
from jaxctc._checks import check_weight
from jaxctc._trie import BOUNDARY


@_trie.register
@dataclasses.dataclass(frozen=True, init=False)
class Hotwords:
    r"""Boosts hypotheses that contain given phrases (hotwords).

    A phrase is text (words separated by spaces) or a sequence of class
    indices. With a ``word_delimiter`` among the labels, text phrases match
    whole words only: ``"jax"`` matches in "a jax b" and at the ends of the
    hypothesis, not in "ajax" or "jaxb" (the hypothesis is read as if a
    delimiter came before and after it); class-index phrases match anywhere,
    as the text their classes spell. Without one (``word_delimiter=None``)
    every phrase matches anywhere.

    Every occurrence of every phrase counts, overlapping ones and phrases
    inside others included (a phrase listed twice counts twice). A complete
    hypothesis gets ``weight`` times the number of occurrences of the phrases
    in its text, so a phrase's bonus does not depend on its length or on the
    tokenization. While a phrase is being matched, each character of the
    match (each token, for character labels) gets its share: a partial match
    of ``m`` of the ``n`` characters of a phrase (counting its inner
    delimiters, not the ones around it) is credited ``weight * m / n`` for as
    long as it lasts, and the credit is taken back when
    the match breaks (when the automaton falls back to a shorter partial
    match) or the hypothesis ends unfinished. The credit of a partial match
    is that of the longest suffix of the text that begins a phrase (the
    automaton's state), with the largest ``m / n`` among the phrases it
    begins. Scores are in natural-log units, summed with the other scorers'
    (e.g. :class:`NGramLM`). A negative ``weight`` suppresses the phrases.

    pyctcdecode's ``hotword_weight`` ``w`` adds ``w`` per matched word of a
    phrase: a phrase of ``k`` words needs ``weight = k * w`` here for the
    same total. NeMo and icefall credit a fixed score per token: ``weight =
    n *`` their score per token, for a phrase of ``n`` character tokens.

    Args:
      phrases: the hotwords: strings (or a single string), or sequences of
        class indices. An empty list gives a scorer that adds 0.
      labels: the text of each of the ``K`` classes, ``""`` for the blank.
      weight: the bonus of one complete occurrence (natural-log units).
      word_delimiter: the text that begins a word: a label of its own for
        character labels (``" "``, ``"|"``), or the prefix of word-initial
        labels for BPE (``"▁"``); ``None``: no word boundaries.

    Raises:
      ValueError: a ``weight`` that is not finite; labels that are not
        distinct; a ``word_delimiter`` that no label starts with; a phrase
        with a character that no label has, without any character, or that
        no sequence of labels spells; a class index out of range or the
        blank's.

    Attributes:
      transitions: ``(state, class) -> (next state, unit score)``, the pairs
        that do not fall back to the root (others: the root, and minus the
        state's credit).
      credit: ``[S]`` float32, each state's credit for its partial match in
        units of ``weight``; ``closing``: ``[S]`` the unit score of ending
        there (completing a match at the final delimiter, minus the credit).
      weight: float32 scalar (a pytree leaf: changing it does not recompile).
      start: the state of the empty hypothesis (after the virtual delimiter).

    Examples:
      With labels blank, ``a``, ``b``, space and the hotword "ab" (weight 2),
      the hypothesis "ab" gets 1 per token and 0 at the end; "a" alone gets
      its 1 taken back when it ends:

      >>> import jax, jax.numpy as jnp, jaxctc
      >>> hot = jaxctc.Hotwords(["ab"], ["", "a", "b", " "], weight=2.0)
      >>> state, total = hot.init(), 0.0
      >>> for k in (1, 2):
      ...     delta, state = hot.score(state, jnp.array([k]))
      ...     state, total = state[0], total + float(delta[0])
      >>> total, float(hot.final(state))
      (2.0, 0.0)
      >>> delta, state = hot.score(hot.init(), jnp.array([1]))
      >>> float(delta[0]), float(hot.final(state[0]))
      (1.0, -1.0)

    References:
      Aho and Corasick, `Efficient string matching: an aid to bibliographic
      search <https://doi.org/10.1145/360825.360855>`_, 1975. NeMo's GPU
      phrase boosting and icefall's ``ContextGraph`` cancel partial matches
      the same way.
    """

    transitions: _buckets.BucketTable
    credit: jax.Array
    closing: jax.Array
    weight: jax.Array
    start: int = dataclasses.field(metadata=dict(static=True))

    def __init__(self, phrases, labels, *, weight=10.0, word_delimiter=" "):
        weight = check_weight("weight", weight)
        spelling = _trie.spell_labels(labels, word_delimiter)
        tables = _automaton(_patterns(phrases, spelling), spelling)
        for name, value in tables.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "weight", jnp.float32(weight))

    @property
    def nbytes(self) -> int:
        """Bytes of the device tables."""
        return _trie.nbytes(self)

    def init(self, shape=()) -> jax.Array:
        """The state (automaton node, int32) of the empty hypothesis."""
        return jnp.full(shape, self.start, jnp.int32)

    def score(self, state, tokens):
        """The contribution of appending each of ``tokens`` ``S + [C]`` to
        the hypotheses in ``state`` ``S``, and the states after them (see
        ``jaxctc._lm`` for the protocol)."""
        tokens = jnp.asarray(tokens, jnp.int32)
        node = jnp.broadcast_to(state[..., None], tokens.shape)
        found, after, unit = _buckets.lookup(self.transitions, node, tokens)
        unit = jnp.where(found, unit, -_buckets.take(self.credit, node))
        return self.weight * unit, jnp.where(found, after, 0)

    def bound(self):
        """An upper bound on every contribution :meth:`score` returns (the
        search uses it to try each frame's best classes first)."""
        units = jnp.concatenate([self.transitions.values[1], -self.credit])
        return jnp.max(self.weight * units)

    def final(self, state):
        """The contribution of ending: a match completed by the virtual final
        delimiter, minus the credit of the unfinished one."""
        return self.weight * _buckets.take(self.closing, state)


def _patterns(phrases, spelling):
    """Each phrase as ``(symbols, lead, trail)``: its symbols with the
    delimiters around it (whole words), and how many of those there are
    (``lead``, ``trail``: 0 or 1, not credited)."""
    if isinstance(phrases, str):
        phrases = [phrases]
    out = []
    for i, phrase in enumerate(phrases):
        name = f"phrases[{i}]"
        if isinstance(phrase, str):
            symbols = spelling.text(phrase, name)
            whole = spelling.delimiter is not None
        else:
            symbols = spelling.tokens(phrase, name)
            whole = False
        if all(s == BOUNDARY for s in symbols):
            raise ValueError(f"`{name}` has no characters: {phrase!r}.")
        if whole and not spelling.spells_word(symbols):
            raise ValueError(f"`{name}` {phrase!r} cannot be spelled with the labels.")
        if whole:
            out.append(((BOUNDARY, *symbols, BOUNDARY), 1, 1))
        else:
            out.append((symbols, 0, 0))
    return out


def _automaton(patterns, spelling):
    """The device tables of the Aho-Corasick automaton of ``patterns``.

    In units of ``weight``: a state's ``credit`` (its partial match), and
    ``out`` (the phrases that end there, through failure links too). Feeding
    a symbol from ``u`` to ``v`` scores ``out[v] + credit[v] - credit[u]``, so
    the running total is the complete matches plus the current credit.
    """
    trie = _trie.Trie()
    ends = [trie.insert(symbols) for symbols, _, _ in patterns]
    size, num_symbols = len(trie), spelling.num_symbols
    goto = np.full((size, num_symbols), -1, np.int64)
    for (node, s), child in trie.children.items():
        goto[node, s] = child
    out = np.bincount(np.asarray(ends, np.int64), minlength=size).astype(np.float64)
    credit = np.zeros(size)
    for symbols, lead, trail in patterns:
        n = len(symbols) - lead - trail
        node = 0
        for depth, s in enumerate(symbols[:-1], start=1):
            node = goto[node, s]
            credit[node] = max(credit[node], min(max(depth - lead, 0), n) / n)

    # Failure links in breadth-first order fold into a complete transition
    # function `delta` (goto where defined, else the failure state's).
    delta = np.zeros((size, num_symbols), np.int64)
    fail = np.zeros(size, np.int64)
    for u in np.argsort(np.asarray(trie.depth), kind="stable"):
        if u:
            out[u] += out[fail[u]]
        base = delta[fail[u]] if u else np.zeros(num_symbols, np.int64)
        delta[u] = np.where(goto[u] >= 0, goto[u], base)
        for symbol in np.flatnonzero(goto[u] >= 0):
            fail[goto[u, symbol]] = base[symbol] if u else 0

    # One transition per (state, class): walk the class's symbols.
    states = np.arange(size)
    empty = np.zeros(0, np.int64)
    keys_a, keys_b, nexts, units = [empty], [empty], [empty], [np.zeros(0)]
    for k, symbols in enumerate(spelling.symbols):
        if not symbols:  # the blank is never scored
            continue
        after, gain = states, np.zeros(size)
        for s in symbols:
            after = delta[after, s]
            gain = gain + out[after]
        keep = (after != 0) | (gain != 0)
        keys_a.append(states[keep])
        keys_b.append(np.full(int(keep.sum()), k))
        nexts.append(after[keep])
        units.append((gain + credit[after] - credit)[keep])
    cat = np.concatenate
    transitions = _buckets.build(
        cat(keys_a),
        cat(keys_b),
        (cat(nexts).astype(np.int32), cat(units).astype(np.float32)),
        empty=(0, 0.0),
    )
    if spelling.delimiter is not None:
        closing = out[delta[:, BOUNDARY]] - credit
        start = int(delta[0, BOUNDARY])
    else:
        closing, start = -credit, 0
    return dict(
        transitions=transitions,
        credit=jnp.asarray(credit, jnp.float32),
        closing=jnp.asarray(closing, jnp.float32),
        start=start,
    )
