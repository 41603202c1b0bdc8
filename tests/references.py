"""Slow, obvious NumPy references: sums over every alignment of tiny inputs.

These are the specification the fast code is tested against. They enumerate
all ``K**T`` class sequences of one utterance, so keep ``T`` and ``K`` small.
"""

from __future__ import annotations

import itertools

import numpy as np


def log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    m = logits.max(-1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))


def collapse(path, blank):
    """Merge repeats, then drop blanks: the CTC many-to-one map B."""
    out, prev = [], None
    for k in path:
        if k != prev and k != blank:
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
