"""N-gram language models over a CTC vocabulary, as fusion scorers.

A **scorer** is a pytree with three methods, elementwise over any batch
shape ``S`` (e.g. ``[B, W]`` beams):

- ``init(shape) -> state``: the state of the empty hypothesis, a pytree of
  arrays with leading shape ``S``;
- ``score(state, tokens) -> (delta, new_state)``: ``tokens`` ``S + [C]``
  int32 classes appended to each hypothesis; ``delta`` ``S + [C]`` float32,
  the scorer's contribution of appending each, and the states after them
  (leading shape ``S + [C]``);
- ``final(state) -> delta``: ``S`` float32, the contribution of ending there;
- optionally ``bound() -> float``: an upper bound on every ``delta`` that
  ``score`` returns (with one for every scorer, the search tries a frame's
  few best classes first at large ``K``; see ``jaxctc._beam``).

A search calls ``score`` for every new token of a hypothesis (a non-blank
class that is not a merged repeat) and ``final`` once at the end, so a
complete hypothesis's contribution is the sum of its ``delta``\\ s plus its
``final``; it depends on the labels only, never on the alignment.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxctc import _arpa, _buckets, _children, _ngram


class LMState(NamedTuple):
    """An :class:`NGramLM` hypothesis's state (int32 arrays of one shape).

    ``lm``: the n-gram state of the words so far; ``node``: the partial
    word's node in the lexicon trie (0: no partial word, -1: a partial word
    that no LM word starts with). Token-level models keep ``node = 0``.
    """

    lm: jax.Array
    node: jax.Array


def _check_weight(name, value):
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}.")
    return value


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NGramLM:
    r"""An n-gram language model (an ARPA file) fused into CTC decoding.

    Two levels, chosen from the file's vocabulary (or by ``level``):

    - **word-level** (the LM's words are spelled by the labels, separated by
      ``word_delimiter``): a word is scored when it completes (at a
      delimiter, or at the end). A complete hypothesis with words
      ``v_1 .. v_n`` gets ``weight * ln P_LM(v_1 .. v_n, </s> | <s>) +
      word_bonus * n + unk_score * n_oov``, with out-of-vocabulary words scored as ``<unk>``. A partial word that
      no LM word starts with gets ``unk_score`` at the token that breaks it
      (pyctcdecode's rule, so such prefixes leave the beam early); a word
      that completes outside the vocabulary otherwise gets it then: once per
      OOV word either way.
    - **token-level** (every LM word is a label: a BPE or character LM): each
      new token ``y_i`` gets ``weight * ln P(y_i | y_<i) + token_bonus``, the
      end ``weight * ln P(</s> | y)``.

    Natural-log units throughout: pyctcdecode's ``alpha``/``beta`` are
    ``weight``/``word_bonus`` (it converts KenLM's log10 to ln, as here);
    flashlight's ``lm_weight`` multiplies log10 scores, so its ``lm_weight``
    is ``weight * ln(10)`` here (``weight = lm_weight / 2.3026``), and its
    ``word_score`` is ``word_bonus``.

    Attributes:
      tables: the n-gram model (:class:`jaxctc._ngram.NGramTables`).
      trie: word-level: the lexicon trie over the classes
        (:class:`jaxctc._children.Children`); ``node_word [num_nodes]`` the LM word that ends at each
        node (``<unk>`` where none does). Token-level: ``class_word [K]``,
        each class's LM word (``<unk>`` for the blank and unknown labels).
      weight, bonus, unk_score: float32 scalars (pytree leaves: changing them
        does not recompile).
      delimiter: the delimiter's class (word-level), -1 for token-level.
      unk: the LM word id of ``<unk>``.

    Examples:
      A word-level 1-gram over the labels blank, ``a``, ``b``, space; the
      hypothesis "ab" gets ``ln P(ab) + ln P(</s>)``, i.e.
      ``(-0.3 - 1) * ln 10``, once it ends:

      >>> import pathlib, tempfile, jax, jax.numpy as jnp, jaxctc
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "lm.arpa"
      >>> _ = path.write_text("\\data\\\nngram 1=4\n\\1-grams:\n"
      ...     "-1 </s>\n-99 <s>\n-1 <unk>\n-0.3 ab\n\\end\\\n")
      >>> lm = jaxctc.NGramLM.from_arpa(path, ["", "a", "b", " "], weight=1.0,
      ...                               word_bonus=0.0)
      >>> state = lm.init()
      >>> for k in (1, 2):  # "a", then "b": no word completed yet
      ...     delta, state = lm.score(state, jnp.array([k]))
      ...     state = jax.tree.map(lambda x: x[0], state)
      >>> round(float(lm.final(state)), 4)
      -2.9934
    """

    tables: _ngram.NGramTables
    trie: _children.Children | None
    node_word: jax.Array
    class_word: jax.Array
    weight: jax.Array
    bonus: jax.Array
    unk_score: jax.Array
    delimiter: int = dataclasses.field(metadata=dict(static=True))
    unk: int = dataclasses.field(metadata=dict(static=True))

    @classmethod
    def from_arpa(
        cls,
        path,
        labels,
        *,
        word_delimiter: str | None = " ",
        weight: float = 0.5,
        word_bonus: float = 1.0,
        unk_score: float = -10.0,
        token_bonus: float = 0.0,
        level: str | None = None,
    ) -> NGramLM:
        """Loads an ARPA file (plain or ``.gz``) for the classes ``labels``.

        Args:
          path: the ARPA file.
          labels: the text of each of the ``K`` classes, ``""`` for the blank.
          word_delimiter: word-level: the label that ends a word.
          weight: the LM's weight (natural-log units).
          word_bonus: word-level: added per word (pyctcdecode's ``beta``).
          unk_score: word-level: added once per out-of-vocabulary word.
          token_bonus: token-level: added per token.
          level: ``"word"`` or ``"token"``; default: token-level when every
            word of the LM (besides ``<s>``, ``</s>``, ``<unk>``) is a label.

        Raises:
          ValueError: for a malformed file (naming the line), weights that
            are not finite, labels that are not distinct, a delimiter that is
            not among the labels, or an unknown ``level``.
        """
        labels = [str(x) for x in labels]
        if len(set(labels)) != len(labels):
            raise ValueError("`labels` must be distinct.")
        weights = dict(
            weight=_check_weight("weight", weight),
            word_bonus=_check_weight("word_bonus", word_bonus),
            unk_score=_check_weight("unk_score", unk_score),
            token_bonus=_check_weight("token_bonus", token_bonus),
        )
        arpa = _arpa.read_arpa(path)
        tables = _ngram.build_tables(arpa)
        specials = {_arpa.BOS, _arpa.EOS, _arpa.UNK}
        lm_words = [w for w in arpa.words if w not in specials]
        label_index = {x: i for i, x in enumerate(labels) if x}
        if level is None:
            level = "token" if all(w in label_index for w in lm_words) else "word"
        if level not in ("word", "token"):
            raise ValueError(f"`level` must be 'word' or 'token', got {level!r}.")
        word_id = {w: i for i, w in enumerate(arpa.words)}
        unk = word_id[_arpa.UNK]
        values = dict(
            weight=jnp.float32(weights["weight"]),
            unk_score=jnp.float32(weights["unk_score"]),
        )
        if level == "token":
            class_word = np.array([word_id.get(x, unk) if x else unk for x in labels])
            return cls(
                tables=tables,
                trie=None,
                node_word=jnp.zeros((1,), jnp.int32),
                class_word=jnp.asarray(class_word, jnp.int32),
                bonus=jnp.float32(weights["token_bonus"]),
                delimiter=-1,
                unk=unk,
                **values,
            )
        if word_delimiter not in label_index:
            raise ValueError(
                f"`word_delimiter` {word_delimiter!r} is not among the labels."
            )
        delimiter = label_index[word_delimiter]
        spellings, spelled = [], []
        for w in lm_words:
            spelling = [label_index.get(c) for c in w]
            if w and None not in spelling and delimiter not in spelling:
                spellings.append(spelling)
                spelled.append(word_id[w])
        unspellable = len(lm_words) - len(spellings)
        if unspellable:
            warnings.warn(
                f"{os.fspath(path)}: {unspellable} of the LM's {len(lm_words)} "
                "words cannot be spelled with the labels and can never be "
                "emitted.",
                stacklevel=2,
            )
        trie, ends = _children.build(spellings, len(labels))
        node_word = np.full(trie.num_nodes, unk, np.int32)
        node_word[ends] = spelled
        return cls(
            tables=tables,
            trie=trie,
            node_word=jnp.asarray(node_word, jnp.int32),
            class_word=jnp.zeros((1,), jnp.int32),
            bonus=jnp.float32(weights["word_bonus"]),
            delimiter=delimiter,
            unk=unk,
            **values,
        )

    @property
    def nbytes(self) -> int:
        """Bytes of the device tables."""
        leaves = jax.tree.leaves(self)
        return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in leaves)

    def init(self, shape=()) -> LMState:
        """The state of the empty hypothesis, for hypotheses of ``shape``."""
        return LMState(
            lm=jnp.full(shape, self.tables.start, jnp.int32),
            node=jnp.zeros(shape, jnp.int32),
        )

    def _word_end(self, state):
        """Completing the partial word (where there is one): its contribution
        and the LM state after it."""
        node = state.node
        has_word = node != 0
        word = jnp.where(
            node > 0, _buckets.take(self.node_word, jnp.maximum(node, 0)), self.unk
        )
        log_prob, after = _ngram.advance(self.tables, state.lm, word)
        # A valid prefix that is no word gets its unk_score now (a broken one
        # got it when it broke).
        oov = (node > 0) & (word == self.unk)
        delta = self.weight * log_prob + self.bonus
        delta = delta + jnp.where(oov, self.unk_score, 0.0)
        return jnp.where(has_word, delta, 0.0), jnp.where(has_word, after, state.lm)

    def score(self, state: LMState, tokens):
        """The contribution of appending each of ``tokens`` (see the module
        docstring), and the states after them."""
        tokens = jnp.asarray(tokens, jnp.int32)
        expand = jax.tree.map(
            lambda x: jnp.broadcast_to(x[..., None], tokens.shape), state
        )
        if self.delimiter < 0:
            word = _buckets.take(self.class_word, tokens)
            log_prob, after = _ngram.advance(self.tables, state.lm[..., None], word)
            delta = self.weight * log_prob + self.bonus
            return delta, LMState(after, expand.node)
        # Ending the word does not depend on the token: once per hypothesis.
        end_delta, end_lm = self._word_end(state)
        end_delta = jnp.broadcast_to(end_delta[..., None], tokens.shape)
        end_lm = jnp.broadcast_to(end_lm[..., None], tokens.shape)
        assert self.trie is not None  # a word-level model has its lexicon trie
        found, child = self.trie.child(jnp.maximum(expand.node, 0), tokens)
        alive = expand.node >= 0
        char_node = jnp.where(alive & found, child, -1)
        char_delta = jnp.where(alive & ~found, self.unk_score, 0.0)
        is_end = tokens == self.delimiter
        delta = jnp.where(is_end, end_delta, char_delta)
        new = LMState(
            lm=jnp.where(is_end, end_lm, expand.lm),
            node=jnp.where(is_end, 0, char_node),
        )
        return delta, new

    def bound(self):
        """An upper bound on every contribution :meth:`score` returns (the
        search uses it to try each frame's best classes first)."""
        # ln P <= 0, so a nonnegative weight adds at most the bonus.
        lm = jnp.where(self.weight >= 0, 0.0, jnp.inf) + self.bonus
        if self.delimiter < 0:
            return lm
        unk = jnp.maximum(self.unk_score, 0.0)
        return jnp.maximum(unk, lm + unk)

    def final(self, state: LMState):
        """The contribution of ending: the partial word, then ``</s>``."""
        delta, lm = (
            self._word_end(state)
            if self.delimiter >= 0
            else (jnp.zeros(state.lm.shape, jnp.float32), state.lm)
        )
        end = jnp.full(lm.shape, self.tables.end, jnp.int32)
        log_prob, _ = _ngram.advance(self.tables, lm, end)
        return delta + self.weight * log_prob
