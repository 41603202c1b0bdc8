"""ARPA files for the tests, and a float64 reference of the model they define.

The reference reads the file with plain string splitting and scores a word
from its *whole* history by the backoff definition, with no states: the
device tables, which trim histories to states, must give the same numbers.
"""

from __future__ import annotations

import math

import numpy as np

LN10 = math.log(10.0)


def write_random_arpa(
    path,
    seed,
    order=3,
    vocab=8,
    count=25,
    drop=0.3,
    drop_prefixes=False,
    preamble="",
    words=None,
):
    """A random ARPA file over ``words`` (default ``w0 .. w{vocab-1}``).

    Every n-gram's context and suffix are listed, except that a fraction
    ``drop`` of the (n-1)-grams is left out: suffixes only (which KenLM
    accepts), or with ``drop_prefixes`` contexts too (which KenLM refuses and
    the tables fill in). ``preamble``: text before ``\\data\\`` (a comment
    in ARPA; KenLM refuses it). Returns the words.
    """
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(vocab)] if words is None else list(words)
    grams = {1: {(w,) for w in words} | {("<s>",), ("</s>",), ("<unk>",)}}
    ends = words + ["</s>"]
    for n in range(2, order + 1):
        chosen = set()
        while len(chosen) < count:
            first = str(rng.choice(["<s>"] + words))
            chosen.add((first,) + tuple(str(w) for w in rng.choice(ends, n - 1)))
        grams[n] = {g for g in chosen if "</s>" not in g[:-1]}
    for n in range(order, 1, -1):
        grams[n - 1] |= {g[:-1] for g in grams[n]} | {g[1:] for g in grams[n]}
    for n in range(order, 2, -1):
        contexts = {g[:-1] for g in grams[n]}
        # Sorted: a set's order follows the strings' hashes, which change
        # from one process to the next (PYTHONHASHSEED), and so would the file.
        grams[n - 1] = {
            g
            for g in sorted(grams[n - 1])
            if rng.random() >= drop or (g in contexts and not drop_prefixes)
        }
    with open(path, "w") as f:
        f.write(preamble + "\\data\\\n")
        for n in grams:
            f.write(f"ngram {n}={len(grams[n])}\n")
        for n in grams:
            f.write(f"\n\\{n}-grams:\n")
            for g in sorted(grams[n]):
                p = -99.0 if g == ("<s>",) else -rng.uniform(0.05, 3.0)
                line = f"{p:.6f}\t{' '.join(g)}"
                if n < order and g[-1] != "</s>" and rng.random() < 0.8:
                    line += f"\t{rng.uniform(-1.5, 0.3):.6f}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")
    return words


def read_model(path):
    """``{ngram tuple: (ln p, ln backoff)}`` and the order."""
    model, order = {}, 0
    n = 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\") and line.endswith("-grams:"):
                n = int(line[1:-7])
                order = max(order, n)
            elif n and line and not line.startswith("\\"):
                fields = line.split()
                bow = float(fields[n + 1]) if len(fields) > n + 1 else 0.0
                model[tuple(fields[1 : n + 1])] = (float(fields[0]) * LN10, bow * LN10)
    return model, order


def word_log_prob(model, history, word):
    """:math:`\\ln P(w \\mid history)` by the backoff definition, in float64."""
    if (word,) not in model:
        word = "<unk>"
    history = tuple(history)
    total = 0.0
    while True:
        entry = model.get(history + (word,))
        if entry is not None:
            return total + entry[0]
        total += model.get(history, (0.0, 0.0))[1] if history else 0.0
        history = history[1:]


def sentence_log_probs(model, order, words, eos=True):
    """Per word (and ``</s>``) :math:`\\ln P`, from ``<s>``, in float64."""
    history = ["<s>"]
    out = []
    for w in list(words) + (["</s>"] if eos else []):
        out.append(
            word_log_prob(model, history[-(order - 1) :] if order > 1 else [], w)
        )
        history.append(w if (w,) in model else "<unk>")
    return out


def word_fusion(model, order, labels, delimiter, weight, bonus, unk_score):
    """``(partial, final)`` of a word-level LM for the textbook search, from
    the text of a labelling: ``partial`` the contribution of the words
    completed so far (and ``unk_score`` for a partial word that no LM word
    starts with), ``final`` the rest of the documented total."""
    vocab = [g[0] for g in model if len(g) == 1]
    prefixes = {w[:i] for w in vocab for i in range(1, len(w) + 1)}

    def words_score(words, eos):
        log_probs = sentence_log_probs(model, order, words, eos=eos)
        oov = sum((w,) not in model for w in words)
        return weight * sum(log_probs) + bonus * len(words) + unk_score * oov

    def text(labelling):
        return "".join(labels[k] for k in labelling)

    def partial(labelling):
        *done, part = text(labelling).split(delimiter)
        score = words_score([w for w in done if w], eos=False)
        return score + (unk_score if part and part not in prefixes else 0.0)

    def final(labelling):
        words = [w for w in text(labelling).split(delimiter) if w]
        return words_score(words, eos=True) - partial(labelling)

    return partial, final


def dict_tables(arpa):
    """The n-gram tables by Python dicts over every n-gram, the obvious way
    (the model :func:`jaxctc._ngram.build_tables` vectorises), in the form
    of :func:`table_grams`: ``(arcs, states, start)``."""
    order, words = arpa.order, arpa.words
    unigrams = set(arpa.ngrams[0][:, 0].tolist())
    arcs, backoff = {}, {}
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
    unk = words.index("<unk>")
    if unk not in unigrams:  # KenLM's rule: a missing <unk> gets log10 p = -100
        arcs[(unk,)] = -100.0 * np.log(10.0)
        unigrams.add(unk)

    def log_prob(context, word):  # the backoff rule over the arcs so far
        total = 0.0
        while (p := arcs.get(context + (word,))) is None:
            total += backoff.get(context, 0.0)
            context = context[1:]
        return total + p

    # Missing prefixes, shortest first, get what the backoff gives them.
    for gram in sorted({g[:k] for g in arcs for k in range(2, len(g))}, key=len):
        if gram not in arcs:
            arcs[gram] = log_prob(gram[:-1], gram[-1])
    states = {g for g in arcs if len(g) < order} | {()}

    def longest_state(gram):
        while gram not in states:
            gram = gram[1:]
        return gram

    arc_out = {g: (np.float32(p), longest_state(g)) for g, p in arcs.items()}
    state_out = {
        g: (np.float32(backoff.get(g, 0.0)), longest_state(g[1:]) if g else ())
        for g in states
    }
    bos = (words.index("<s>"),)
    return arc_out, state_out, bos if bos in states else ()


def table_grams(tables):
    """The n-gram tables with their state numbers replaced by the n-grams
    they stand for: ``arcs`` ``{ngram: (float32 ln p, next state's
    n-gram)}``, ``states`` ``{n-gram: (float32 ln backoff, backoff state's
    n-gram)}`` and the start state's n-gram, so that two tables compare
    whatever their states' numbering and bucket order."""
    table = tables.arcs
    size = table.keys.shape[0] - table.probes
    keys = np.asarray(table.keys)[:size]
    if keys.ndim == 1:  # packed: key_a * stride + key_b
        keys = np.stack([keys // table.stride, keys % table.stride], axis=1)
    keys = keys.tolist()
    log_probs = np.asarray(table.values[0])[:size]
    nexts = np.asarray(table.values[1])[:size].tolist()
    # A state's n-gram is its context's plus the word of the arc that leads
    # to it from there (an arc of a context shorter than order - 1).
    gram = {0: ()}
    for _ in range(tables.order - 1):
        for (s, w), t in zip(keys, nexts, strict=True):
            if s in gram and len(gram[s]) < tables.order - 1:
                gram.setdefault(t, gram[s] + (w,))
    arcs = {
        gram[s] + (w,): (p, gram[t])
        for (s, w), p, t in zip(keys, log_probs, nexts, strict=True)
    }
    backoff = np.asarray(tables.backoff)
    back_state = np.asarray(tables.backoff_state).tolist()
    assert len(gram) == len(back_state)
    states = {gram[s]: (backoff[s], gram[back_state[s]]) for s in gram}
    return arcs, states, gram[tables.start]
