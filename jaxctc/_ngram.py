"""An n-gram model as fixed-shape device tables: states, arcs, backoff.

A **state** is a context the model knows: the empty context (the root,
state 0) and every n-gram of order below the model's. An n-gram whose
prefixes the file does not list (KenLM's own ``test.arpa`` has such) gets its
missing prefixes as states, each with the probability the backoff gives it and
backoff weight 0, as KenLM does; the model's probabilities are unchanged.

An **arc** ``(state h, word w)`` is a listed (or added) n-gram ``h w`` with
:math:`\\ln P(w \\mid h)` and the state that follows: the longest suffix of
``h w`` that is a state. Scoring ``w`` from state ``h`` takes the arc if there
is one, otherwise adds ``h``'s backoff weight and tries ``h``'s backoff state
(its longest proper suffix that is a state); the root has an arc for every
word, so at most ``order`` tries are needed (:func:`advance`). Trimming the
context to the longest suffix that is a state loses nothing: a longer
context that is no state has no n-gram and backoff weight 0.

The arcs are found by their key ``(state, word)`` in a static hash map
(:mod:`jaxctc._buckets`); the ``order`` tries of one word are one lookup.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxctc import _arpa, _buckets


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NGramTables:
    """The device tables of an n-gram model (see the module docstring).

    Attributes:
      arcs: the arcs, keyed ``(state, word)``, with values
        :math:`\\ln P(w \\mid h)` (float32) and the next state (int32).
      backoff: ``[num_states]`` float32, each state's ln backoff weight.
      backoff_state: ``[num_states]`` int32, the state to back off to (the
        root backs off to itself).
      order: the model's order.
      start, end: the state of ``<s>`` and the word id of ``</s>``.
    """

    arcs: _buckets.BucketTable
    backoff: jax.Array
    backoff_state: jax.Array
    order: int = dataclasses.field(metadata=dict(static=True))
    start: int = dataclasses.field(metadata=dict(static=True))
    end: int = dataclasses.field(metadata=dict(static=True))

    @property
    def nbytes(self) -> int:
        """Bytes of the device tables."""
        leaves = jax.tree.leaves(self)
        return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in leaves)


def _find(keys, ids, query):
    """``(found, id)`` of each ``query`` among the sorted ``keys`` (id 0 where
    not found)."""
    if not len(keys):
        return np.zeros(len(query), bool), np.zeros(len(query), np.int64)
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    found = keys[at] == query
    return found, np.where(found, ids[at], 0)


class _States:
    """The states so far, added a length at a time: numbered in that order,
    and keyed ``context state * num_words + word``, so that each length's
    keys exceed the last's (their contexts are the last's states) and the
    keys stay sorted as lengths are added."""

    def __init__(self, num_words):
        self.num_words = num_words
        self.keys = np.zeros(0, np.int64)  # sorted
        self.ids = np.zeros(0, np.int64)  # the state of each key
        self.log_prob = np.zeros(1)  # per state, the root first
        self.backoff = np.zeros(1)
        self.backoff_state = np.zeros(1, np.int64)

    def __len__(self):
        return len(self.log_prob)

    def add(self, keys, log_prob, backoff, backoff_state):
        """The n-grams of one length (``keys``) as the next states."""
        order = np.argsort(keys)
        self.keys = np.concatenate([self.keys, keys[order]])
        self.ids = np.concatenate([self.ids, len(self) + order])
        self.log_prob = np.concatenate([self.log_prob, log_prob])
        self.backoff = np.concatenate([self.backoff, backoff])
        self.backoff_state = np.concatenate([self.backoff_state, backoff_state])

    def back_off(self, context, word):
        """``(suffix, log_prob)``: the longest suffix that is a state of each
        n-gram ``context`` + ``word`` less its first word (``context`` not the
        root), and :math:`\\ln P(word \\mid context)` by backing off, as for
        an n-gram that the file does not list.

        The suffixes are walked along the contexts' backoff states: a suffix
        that is no state has no n-gram ending in ``word`` either (every
        prefix of a state is a state) and backoff weight 0. The weights are
        summed longest context first, as the backoff rule reads.
        """
        total = self.backoff[context]
        state = self.backoff_state[context]
        suffix = np.zeros(len(context), np.int64)
        todo = np.arange(len(context))
        while todo.size:
            found, hit = _find(self.keys, self.ids, state * self.num_words + word[todo])
            suffix[todo[found]] = hit[found]
            todo, state = todo[~found], state[~found]
            if np.any(state == 0):  # the root has every word (a 1-gram)
                raise AssertionError("a word without a 1-gram state")
            total[todo] += self.backoff[state]
            state = self.backoff_state[state]
        return suffix, total + self.log_prob[suffix]


def build_tables(arpa: _arpa.Arpa) -> NGramTables:
    """The device tables of a model read by :func:`jaxctc._arpa.read_arpa`.

    Raises:
      ValueError: for an n-gram whose last word has no unigram (no
        probability could be given to it).
    """
    order, words = arpa.order, arpa.words
    num_words = len(words)
    grams = [np.asarray(g, np.int64) for g in arpa.ngrams]
    log_probs = [np.asarray(p, np.float64) for p in arpa.log_probs]
    # A weight of -0.0 is none either (and sums as 0.0 does).
    backoffs = [np.where(b != 0.0, b, 0.0) for b in arpa.backoffs]
    has_unigram = np.zeros(num_words, bool)
    has_unigram[grams[0][:, 0]] = True
    unk = words.index(_arpa.UNK)
    listed = [len(g) for g in grams]  # the rest of each order's arcs are added
    if not has_unigram[unk]:  # KenLM's rule: a missing <unk> gets log10 p = -100
        grams[0] = np.concatenate([grams[0], [[unk]]])
        log_probs[0] = np.append(log_probs[0], -100.0 * np.log(10.0))
        backoffs[0] = np.append(backoffs[0], 0.0)
        has_unigram[unk] = True
    if not has_unigram[words.index(_arpa.EOS)]:
        raise ValueError("the model has no 1-gram '</s>' (end of sentence).")
    for n, g in enumerate(grams):
        bad = ~has_unigram[g]
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size:
            gram = g[rows[0]]
            raise ValueError(
                f"the {n + 1}-gram {' '.join(words[w] for w in gram)!r} uses "
                f"{words[gram[bad[rows[0]]][0]]!r}, which has no 1-gram."
            )

    # A length n + 1 at a time: ``prefix[m]`` holds each (m + 1)-gram's state
    # of its first n words (its context once n = m), a word longer each
    # time; the (n + 1)-grams below the order become the next states.
    states = _States(num_words)
    prefix = [np.zeros(len(g), np.int64) for g in grams]
    arcs = []  # per length: (context, word, ln p, next state)
    for n in range(order):
        context, word = prefix[n], grams[n][:, n]
        if n + 1 == order:  # the highest order has no states
            after = states.back_off(context, word)[0] if n else np.zeros_like(word)
            arcs.append((context, word, log_probs[n], after))
            break
        first, keys = len(states), context * num_words + word
        sort = np.argsort(keys)
        # The longer n-grams' first n + 1 words that the file does not list
        # (``missing``) become states after the listed ones, each with the
        # probability the backoff gives it and backoff weight 0.
        queries, found = [], []
        for m in range(n + 1, order):
            queries.append(prefix[m] * num_words + grams[m][:, n])
            hit, prefix[m] = _find(keys[sort], first + sort, queries[-1])
            found.append(hit)
        missing = np.unique(
            np.concatenate([q[~f] for q, f in zip(queries, found, strict=True)])
        )
        for m, q, f in zip(range(n + 1, order), queries, found, strict=True):
            prefix[m][~f] = first + len(keys) + np.searchsorted(missing, q[~f])
        context = np.concatenate([context, missing // num_words])
        word = np.concatenate([word, missing % num_words])
        back, walked = (
            states.back_off(context, word) if n else (np.zeros_like(word),) * 2
        )
        log_prob = np.concatenate([log_probs[n], walked[len(keys) :]])
        states.add(
            np.concatenate([keys, missing]),
            log_prob,
            np.concatenate([backoffs[n], np.zeros(len(missing))]),
            back,
        )
        arcs.append((context, word, log_prob, first + np.arange(len(context))))
    # The arcs that the file lists (in its order), then the others.
    columns = [
        np.concatenate(
            [a[i][:k] for a, k in zip(arcs, listed, strict=True)]
            + [a[i][k:] for a, k in zip(arcs, listed, strict=True)]
        )
        for i in range(4)
    ]
    arc_table = _buckets.build(
        columns[0],
        columns[1],
        (columns[2].astype(np.float32), columns[3].astype(np.int32)),
        empty=(-np.inf, 0),
    )
    bos = words.index(_arpa.BOS)
    start = _find(states.keys, states.ids, np.array([bos]))[1][0]
    return NGramTables(
        arcs=arc_table,
        backoff=jnp.asarray(states.backoff.astype(np.float32)),
        backoff_state=jnp.asarray(states.backoff_state.astype(np.int32)),
        order=order,
        start=int(start),
        end=words.index(_arpa.EOS),
    )


def advance(tables: NGramTables, state, word):
    """:math:`\\ln P(w \\mid h)` and the next state, elementwise.

    Args:
      tables: the model.
      state: int32 array, the context's state.
      word: int32 array of word ids, broadcastable with ``state`` (a state
        of shape ``S + [1]`` with words ``S + [C]`` follows each state's
        backoff chain once, not once per word).

    Returns:
      ``(log_prob, next_state)``: float32 and int32 arrays of the broadcast
      shape.
    """
    state = jnp.asarray(state, jnp.int32)
    word = jnp.asarray(word, jnp.int32)
    # The context and its backoff states, with the backoff weights paid to
    # reach each (the root backs off to itself at no cost): all ``order``
    # tries are independent, so they are one lookup, not a chain of them.
    chain, costs = [state], [jnp.zeros(state.shape, jnp.float32)]
    for _ in range(tables.order - 1):
        costs.append(costs[-1] + _buckets.take(tables.backoff, chain[-1]))
        chain.append(_buckets.take(tables.backoff_state, chain[-1]))
    shape = jnp.broadcast_shapes(state.shape, word.shape) + (tables.order,)
    contexts = jnp.broadcast_to(jnp.stack(chain, axis=-1), shape)
    paid = jnp.broadcast_to(jnp.stack(costs, axis=-1), shape)
    words = jnp.broadcast_to(word[..., None], shape)
    found, log_prob, after = _buckets.lookup(tables.arcs, contexts, words)
    # The longest context with an arc decides: selects from the root up
    # (cheaper than an argmax and a gather over the ``order`` tries).
    known = found[..., -1]
    total = paid[..., -1] + log_prob[..., -1]
    state_after = after[..., -1]
    for n in range(tables.order - 2, -1, -1):
        hit = found[..., n]
        known = known | hit
        total = jnp.where(hit, paid[..., n] + log_prob[..., n], total)
        state_after = jnp.where(hit, after[..., n], state_after)
    # A word with no unigram is none of the model's: -inf, back to the root.
    return jnp.where(known, total, -jnp.inf), jnp.where(known, state_after, 0)
