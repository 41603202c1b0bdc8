"""Slow, obvious NumPy references: the specification the fast code is tested
against.

The brute-force ones enumerate all ``K**T`` class sequences of one utterance,
so keep ``T`` and ``K`` small; the textbook prefix beam search is a dict of
prefixes over every class, in float64.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np


def log_softmax(logits):
    """float64 log-softmax; a row of only ``-inf`` stays ``-inf``."""
    x = np.asarray(logits, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.max(x, axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        s = np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))
        return x - m - s


def collapse(path, blank, merge=True):
    """Merge repeats (when ``merge``), then drop blanks: the CTC map B."""
    out, prev = [], None
    for k in path:
        if k != blank and (not merge or k != prev):
            out.append(int(k))
        prev = k
    return tuple(out)


def paths(num_frames, num_classes):
    return itertools.product(range(num_classes), repeat=num_frames)


def path_log_prob(log_probs, path):
    return float(sum(log_probs[t, k] for t, k in enumerate(path)))


def log_prob(log_probs, labels, blank):
    """``log P(labels | x)`` by summing over every alignment; -inf if none.

    Args:
      log_probs: ``[T, K]`` normalized log-probabilities of the valid frames.
      labels: the label sequence (a list of ints).
      blank: the blank id.
    """
    log_probs = np.asarray(log_probs, np.float64)
    target = tuple(int(v) for v in labels)
    total = [
        path_log_prob(log_probs, p)
        for p in paths(*log_probs.shape)
        if collapse(p, blank) == target
    ]
    return np.logaddexp.reduce(total) if total else -np.inf


def forward_variables(log_probs, labels, blank):
    """Brute-force ``alpha`` in optax's layout (before its last-row closure).

    ``blank[t, n]``: log-sum over prefixes ``pi_1..t`` with ``pi_t = blank``
    that collapse to ``labels[:n]``; ``label[t, n]``: prefixes ending in the
    class ``labels[n]`` (still inside its run) that collapse to
    ``labels[:n + 1]``. ``-inf`` where no prefix qualifies.
    """
    log_probs = np.asarray(log_probs, np.float64)
    num_frames, num_classes = log_probs.shape
    n_labels = len(labels)
    blank_alpha = np.full((num_frames, n_labels + 1), -np.inf)
    label_alpha = np.full((num_frames, n_labels), -np.inf)
    target = tuple(int(v) for v in labels)
    for t in range(num_frames):
        for prefix in paths(t + 1, num_classes):
            c = collapse(prefix, blank)
            if target[: len(c)] != c:
                continue
            lp = path_log_prob(log_probs, prefix)
            if prefix[-1] == blank:
                blank_alpha[t, len(c)] = np.logaddexp(blank_alpha[t, len(c)], lp)
            elif len(c) >= 1:
                label_alpha[t, len(c) - 1] = np.logaddexp(
                    label_alpha[t, len(c) - 1], lp
                )
    return blank_alpha, label_alpha


def alignments(log_probs, blank):
    """Every alignment of one ``[T', K]`` sequence (valid frames only).

    Returns ``{labelling: (log P(labelling), best alignment, its log-prob)}``.
    """
    frames, classes = log_probs.shape
    table = {}
    for path in paths(frames, classes):
        score = sum(log_probs[t, c] for t, c in enumerate(path))
        key = collapse(path, blank)
        total, best, best_score = table.get(key, (-np.inf, None, -np.inf))
        total = np.logaddexp(total, score)
        if score > best_score:
            best, best_score = path, score
        table[key] = (total, best, best_score)
    return table


def alignment_spans(path, blank):
    """First and last frame of each token of a (valid-frames) alignment."""
    starts, ends, prev = [], [], None
    for t, c in enumerate(path):
        if c != blank and c != prev:
            starts.append(t)
            ends.append(t)
        elif c != blank:
            ends[-1] = t
        prev = c
    return starts, ends


def beam_search(
    log_probs,
    width,
    blank,
    max_length=None,
    allowed=None,
    skip=None,
    fusion=None,
    merge_any=False,
):
    """Textbook prefix beam search with a dict of prefixes (Hannun et al.),
    trying every class on every frame.

    ``allowed[t]``: the classes that may extend a prefix at frame ``t``
    (with ``merge_any``, the others may still extend it into a prefix that
    is a beam already: the search's rule with scorers and no
    ``token_top_k``);
    ``skip[t]``: the frame extends nothing. Returns ``[(labelling, log_prob)]``
    best first, only prefixes with nonzero probability. With ``fusion =
    (partial, final)``, functions of a labelling, prefixes rank by
    ``log_prob + partial(prefix)`` and the result by ``log_prob +
    partial + final``: ``[(labelling, log_prob, score)]``.
    """
    partial, final = fusion or (lambda p: 0.0, lambda p: 0.0)
    frames, classes = log_probs.shape
    beams = {(): (0.0, -np.inf)}
    for t in range(frames):
        lp = log_probs[t]
        new = defaultdict(lambda: [-np.inf, -np.inf])
        tokens = [k for k in range(classes) if k != blank]
        if allowed is not None:
            tokens = [k for k in tokens if k in allowed[t]]
        if skip is not None and skip[t]:
            tokens = []
        for prefix, (pb, pnb) in beams.items():
            total = np.logaddexp(pb, pnb)
            new[prefix][0] = np.logaddexp(new[prefix][0], total + lp[blank])
            if prefix:
                new[prefix][1] = np.logaddexp(new[prefix][1], pnb + lp[prefix[-1]])
            if max_length is not None and len(prefix) >= max_length:
                continue
            if merge_any and not (skip is not None and skip[t]):
                tokens_here = [
                    k
                    for k in range(classes)
                    if k != blank and (k in tokens or prefix + (k,) in beams)
                ]
            else:
                tokens_here = tokens
            for k in tokens_here:
                base = pb if prefix and prefix[-1] == k else total
                child = prefix + (k,)
                new[child][1] = np.logaddexp(new[child][1], base + lp[k])
        ranked = sorted(
            new.items(), key=lambda kv: -np.logaddexp(*kv[1]) - partial(kv[0])
        )
        beams = {k: tuple(v) for k, v in ranked[:width] if np.logaddexp(*v) > -np.inf}
    if fusion is None:
        ranked = sorted(beams.items(), key=lambda kv: -np.logaddexp(*kv[1]))
        return [(k, float(np.logaddexp(*v))) for k, v in ranked]
    scored = [
        (k, float(np.logaddexp(*v)), float(np.logaddexp(*v) + partial(k) + final(k)))
        for k, v in beams.items()
    ]
    return sorted(scored, key=lambda x: -x[2])


def model_like_logits(rng, batch, frames, classes, blank=0, pad=True):
    """Log-probabilities like a trained CTC model's (float32), and paddings.

    The blank with p in [0.99, 0.9999] on 70% of frames, otherwise one class
    with p in [0.9, 0.99] and a runner-up; every other class far below
    (log-probabilities in [-25, -12]).
    """
    x = rng.uniform(-25, -12, size=(batch, frames, classes))
    is_blank = rng.random((batch, frames)) < 0.7
    token = rng.integers(0, classes - 1, size=(batch, frames))
    token = token + (token >= blank)  # any class but the blank
    top = np.where(is_blank, blank, token)
    p_top = np.where(
        is_blank,
        rng.uniform(0.99, 0.9999, (batch, frames)),
        rng.uniform(0.9, 0.99, (batch, frames)),
    )
    b, t = np.arange(batch)[:, None], np.arange(frames)[None, :]
    runner = np.where(is_blank, token, blank)
    x[b, t, runner] = np.log(0.7 * (1 - p_top))
    x[b, t, top] = np.log(p_top)
    paddings = np.zeros((batch, frames))
    if pad:
        lengths = rng.integers(frames // 2, frames + 1, size=batch)
        paddings = (np.arange(frames)[None] >= lengths[:, None]).astype(np.float64)
    return x.astype(np.float32), paddings


def random_batch(rng, batch, frames, classes, scale=2.0, pad=True):
    logits = scale * rng.standard_normal((batch, frames, classes))
    paddings = np.zeros((batch, frames))
    if pad:  # paddings anywhere in time, and one sequence without frames
        paddings = (rng.random((batch, frames)) < 0.25).astype(np.float64)
        paddings[-1] = 1.0
    return logits, paddings


def unpad(labels, paddings):
    return tuple(int(x) for x, p in zip(labels, paddings, strict=True) if p == 0)


# ----------------------------------------------------------------------------
# Text scorers (hotwords, lexicon), from the text of a labelling
# ----------------------------------------------------------------------------

WORD_BOUNDARY = "\0"  # a word boundary in the references' text


def label_text(labels, delimiter):
    """A function from a labelling to its text, a leading ``delimiter`` of a
    label read as ``WORD_BOUNDARY`` (character and BPE labels alike)."""

    def read(label):
        if delimiter is not None and label.startswith(delimiter):
            return WORD_BOUNDARY + label[len(delimiter) :]
        return label

    texts = [read(x) for x in labels]
    return lambda labelling: "".join(texts[k] for k in labelling)


def hotword_fusion(phrases, labels, weight, delimiter=" "):
    """``(partial, final)`` of phrase boosting, counted on the text.

    A text phrase (whole words, with a ``delimiter``) is its words between
    boundaries, the text read with a boundary before it (and after it, at
    the end); a phrase of class indices is the text they spell, anywhere.
    ``partial``: ``weight`` times the occurrences so far plus the credit
    ``m / n`` of the longest suffix that begins a phrase (``m`` of its ``n``
    characters, the boundaries around it not counted; the best phrase it
    begins); ``final``: ``weight`` times every occurrence, minus ``partial``.
    """
    text = label_text(labels, delimiter)
    patterns = []  # (string, characters not credited before, after)
    for p in phrases:
        if not isinstance(p, str):
            patterns.append((text(p), 0, 0))
        elif delimiter is None:
            patterns.append((p, 0, 0))
        else:
            b = WORD_BOUNDARY
            patterns.append((b + b.join(p.split()) + b, 1, 1))
    begins = {s[:i] for s, _, _ in patterns for i in range(len(s) + 1)}
    lead = WORD_BOUNDARY if delimiter is not None else ""

    def count(s):
        return sum(s[i:].startswith(p) for p, _, _ in patterns for i in range(len(s)))

    def credit(s):
        suffix = next(s[i:] for i in range(len(s) + 1) if s[i:] in begins)
        shares = [
            min(max(len(suffix) - a, 0), len(p) - a - b) / (len(p) - a - b)
            for p, a, b in patterns
            if p.startswith(suffix) and len(p) > len(suffix)
        ]
        return max(shares, default=0.0)

    def partial(labelling):
        s = lead + text(labelling)
        return weight * (count(s) + credit(s))

    def final(labelling):
        return weight * count(lead + text(labelling) + lead) - partial(labelling)

    return partial, final


def lexicon_fusion(words, labels, delimiter=" "):
    """``(partial, final)`` of a lexicon constraint, by set membership: 0
    while every completed word is in ``words`` (or empty) and the partial
    word begins one, else ``-inf``; ``final``: ``-inf`` unless the last word
    is complete too."""
    text = label_text(labels, delimiter)
    words = {w for w in words if w} | {""}
    begins = {w[:i] for w in words for i in range(len(w) + 1)}

    def parts(labelling):
        s = text(labelling)
        return s.split(WORD_BOUNDARY) if delimiter is not None else [s]

    def partial(labelling):
        *done, last = parts(labelling)
        ok = all(w in words for w in done) and last in begins
        return 0.0 if ok else -np.inf

    def final(labelling):
        return 0.0 if parts(labelling)[-1] in words else -np.inf

    return partial, final


def random_bpe_labels(rng, words, size):
    """A random BPE vocabulary: the blank first, then in random order the
    lone ``"▁"``, every character of ``words`` plain and word-initial (so
    that every word is spelled), and ``size`` more pieces of ``words``
    (word-initial ones mostly where they begin a word)."""
    chars = sorted(set("".join(words)))
    labels = {"▁", *chars, *("▁" + c for c in chars)}
    target = len(labels) + size
    while len(labels) < target:
        word = str(rng.choice(words))
        i = int(rng.integers(0, len(word)))
        piece = word[i : rng.integers(i + 1, len(word) + 1)]
        labels.add("▁" + piece if i == 0 and rng.random() < 0.7 else piece)
    return [""] + [str(x) for x in rng.permutation(sorted(labels))]


def random_bpe_tokens(rng, labels, words, size):
    """Up to ``size`` tokens: the text of random ``words`` (each after a
    ``"▁"``) cut at random into labels, or (a third of the time) random
    classes."""
    if rng.random() < 1 / 3:
        return [int(k) for k in rng.integers(1, len(labels), rng.integers(0, size))]
    text = "".join("▁" + str(rng.choice(words)) for _ in range(rng.integers(0, 6)))
    if rng.random() < 0.5:
        text = text[1:]  # a first word without its marker
    tokens: list[int] = []
    while text and len(tokens) < size:
        fits = [k for k, x in enumerate(labels) if x and text.startswith(x)]
        k = int(rng.choice(fits))
        tokens.append(k)
        text = text[len(labels[k]) :]
    return tokens


def sum_fusion(*fusions):
    """The ``(partial, final)`` of several scorers summed."""
    return (
        lambda p: sum(f[0](p) for f in fusions),
        lambda p: sum(f[1](p) for f in fusions),
    )
