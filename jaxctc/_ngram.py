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

The arcs are found through a hash of ``(state, word)``: the arcs are sorted by
their hash bucket (about one arc per bucket), each bucket's first arc is
stored, and a lookup reads the ``probes`` arcs from there (``probes``: the
fullest bucket, about 8-10 for a million arcs), one gather of fixed shape, no
loops, no int64. Keys of other buckets never match, so no bucket ends are
stored.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxctc import _arpa

_M1, _M2 = np.uint32(0x9E3779B1), np.uint32(0x85EBCA77)


def _hash(state, word, xp):
    """A 32-bit hash of ``(state, word)`` (int32 arrays), in NumPy or JAX."""
    h = state.astype(xp.uint32) * _M1 + word.astype(xp.uint32) * _M2
    h = h ^ (h >> 15)
    h = h * np.uint32(0x2C1B3C6D)
    return h ^ (h >> 13)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NGramTables:
    """The device tables of an n-gram model (see the module docstring).

    Attributes:
      bucket_start: ``[num_buckets]`` int32, the first arc of each hash bucket
        (``num_buckets`` a power of two).
      arc_state, arc_word: ``[num_arcs + probes]`` int32, each arc's key, in
        bucket order (``-1`` past the end).
      arc_log_prob: float32, :math:`\\ln P(w \\mid h)` of each arc.
      arc_next: int32, the state after each arc.
      backoff: ``[num_states]`` float32, each state's ln backoff weight.
      backoff_state: ``[num_states]`` int32, the state to back off to (the
        root backs off to itself).
      order, probes: the model's order, and the arcs a lookup reads.
      start, end: the state of ``<s>`` and the word id of ``</s>``.
    """

    bucket_start: jax.Array
    arc_state: jax.Array
    arc_word: jax.Array
    arc_log_prob: jax.Array
    arc_next: jax.Array
    backoff: jax.Array
    backoff_state: jax.Array
    order: int = dataclasses.field(metadata=dict(static=True))
    probes: int = dataclasses.field(metadata=dict(static=True))
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

    keys_state = np.asarray(keys_state, np.int32)
    keys_word = np.asarray(keys_word, np.int32)
    num_buckets = 1 << max(4, int(np.ceil(np.log2(max(len(keys_state), 1)))))
    bucket = _hash(keys_state, keys_word, np) & np.uint32(num_buckets - 1)
    arcs_order = np.argsort(bucket, kind="stable")
    counts = np.bincount(bucket, minlength=num_buckets)
    probes = max(int(counts.max(initial=0)), 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)

    def column(values, dtype, empty):
        out = np.asarray(values, dtype)[arcs_order]
        return jnp.asarray(np.concatenate([out, np.full(probes, empty, dtype)]))

    bos = words.index(_arpa.BOS)
    return NGramTables(
        bucket_start=jnp.asarray(starts),
        arc_state=column(keys_state, np.int32, -1),
        arc_word=column(keys_word, np.int32, -1),
        arc_log_prob=column(log_probs, np.float32, -np.inf),
        arc_next=column(nexts, np.int32, 0),
        backoff=jnp.asarray(back),
        backoff_state=jnp.asarray(back_state),
        order=order,
        probes=probes,
        start=states.get((bos,), 0),
        end=words.index(_arpa.EOS),
    )


def _lookup(tables, state, word):
    """The arc ``(state, word)``: ``(found, ln p, next state)``, elementwise."""
    num_buckets = tables.bucket_start.shape[0]
    bucket = _hash(state, word, jnp) & np.uint32(num_buckets - 1)
    first = tables.bucket_start[bucket.astype(jnp.int32)]
    offsets = jnp.arange(tables.probes, dtype=jnp.int32)
    pos = first[..., None] + offsets.reshape((1,) * first.ndim + (tables.probes,))
    hit = (tables.arc_state[pos] == state[..., None]) & (
        tables.arc_word[pos] == word[..., None]
    )
    arc = jnp.take_along_axis(pos, jnp.argmax(hit, axis=-1)[..., None], -1)[..., 0]
    return jnp.any(hit, axis=-1), tables.arc_log_prob[arc], tables.arc_next[arc]


def advance(tables: NGramTables, state, word):
    """:math:`\\ln P(w \\mid h)` and the next state, elementwise.

    Args:
      tables: the model.
      state: int32 array, the context's state.
      word: int32 array of the same shape, word ids.

    Returns:
      ``(log_prob, next_state)``: float32 and int32 arrays of that shape.
    """
    state = jnp.asarray(state, jnp.int32)
    word = jnp.asarray(word, jnp.int32)
    total = jnp.zeros(state.shape, jnp.float32)
    done = jnp.zeros(state.shape, bool)
    next_state = jnp.zeros(state.shape, jnp.int32)
    current = state
    for _ in range(tables.order):
        found, log_prob, after = _lookup(tables, current, word)
        hit = found & ~done
        total = total + jnp.where(
            done, 0.0, jnp.where(found, log_prob, tables.backoff[current])
        )
        next_state = jnp.where(hit, after, next_state)
        done = done | found
        current = jnp.where(done, current, tables.backoff_state[current])
    # A word with no unigram is none of the model's: -inf, back to the root.
    return jnp.where(done, total, -jnp.inf), next_state
