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


def _log_prob(arcs, backoff, context, word):
    """Host-side :math:`\\ln P(w \\mid context)` by the backoff rule, over the
    arcs found so far (``{ngram tuple: ln p}``; backoffs ``{context: ln b}``)."""
    total = 0.0
    while True:
        p = arcs.get(context + (word,))
        if p is not None:
            return total + p
        if not context:
            raise KeyError(word)
        total += backoff.get(context, 0.0)
        context = context[1:]


def build_tables(arpa: _arpa.Arpa) -> NGramTables:
    """The device tables of a model read by :func:`jaxctc._arpa.read_arpa`.

    Raises:
      ValueError: for an n-gram whose last word has no unigram (no
        probability could be given to it).
    """
    order = arpa.order
    words = arpa.words
    unigrams = set(arpa.ngrams[0][:, 0].tolist())
    arcs: dict[tuple[int, ...], float] = {}
    backoff: dict[tuple[int, ...], float] = {}
    for n in range(order):
        for gram, p, b in zip(
            map(tuple, arpa.ngrams[n].tolist()),
            arpa.log_probs[n].tolist(),
            arpa.backoffs[n].tolist(),
            strict=True,
        ):
            arcs[gram] = p
            if n + 1 < order and b != 0.0:
                backoff[gram] = b
    unk = words.index(_arpa.UNK)
    if unk not in unigrams:  # KenLM's rule: a missing <unk> gets log10 p = -100
        arcs[(unk,)] = -100.0 * np.log(10.0)
        unigrams.add(unk)
    if words.index(_arpa.EOS) not in unigrams:
        raise ValueError("the model has no 1-gram '</s>' (end of sentence).")
    for gram in arcs:
        missing = [w for w in gram if w not in unigrams]
        if missing:
            raise ValueError(
                f"the {len(gram)}-gram {' '.join(words[w] for w in gram)!r} uses "
                f"{words[missing[0]]!r}, which has no 1-gram."
            )
    # Missing prefixes become n-grams with the probability the backoff gives
    # them (shortest first, so their own prefixes are there already).
    prefixes = sorted({g[:k] for g in arcs for k in range(2, len(g))}, key=len)
    for gram in prefixes:
        if gram not in arcs:
            arcs[gram] = _log_prob(arcs, backoff, gram[:-1], gram[-1])

    states: dict[tuple[int, ...], int] = {(): 0}
    for gram in sorted((g for g in arcs if len(g) < order), key=len):
        states[gram] = len(states)

    def longest_state(gram):
        while gram not in states:
            gram = gram[1:]
        return states[gram]

    keys_state, keys_word, log_probs, nexts = [], [], [], []
    for gram, p in arcs.items():
        keys_state.append(states[gram[:-1]])
        keys_word.append(gram[-1])
        log_probs.append(p)
        nexts.append(longest_state(gram))
    num_states = len(states)
    back = np.zeros(num_states, np.float32)
    back_state = np.zeros(num_states, np.int32)
    for gram, s in states.items():
        if gram:
            back[s] = backoff.get(gram, 0.0)
            back_state[s] = longest_state(gram[1:])

    arc_table = _buckets.build(
        keys_state,
        keys_word,
        (np.asarray(log_probs, np.float32), np.asarray(nexts, np.int32)),
        empty=(-np.inf, 0),
    )
    bos = words.index(_arpa.BOS)
    return NGramTables(
        arcs=arc_table,
        backoff=jnp.asarray(back),
        backoff_state=jnp.asarray(back_state),
        order=order,
        start=states.get((bos,), 0),
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
