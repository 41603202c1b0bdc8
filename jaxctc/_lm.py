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
- optionally ``bound()``: an upper bound on every ``delta`` that ``score``
  returns, a scalar or ``[K]`` one per appended class (with one for every
  scorer, the search scores the few extensions that the acoustic scores put
  first and checks the others against it; see ``jaxctc._beam``).

A search calls ``score`` for every new token of a hypothesis (a non-blank
class that is not a merged repeat) and ``final`` once at the end, so a
complete hypothesis's contribution is the sum of its ``delta``\\ s plus its
``final``; it depends on the labels only, never on the alignment.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxctc import _arpa, _buckets, _children, _ngram, _trie
from jaxctc._checks import check_weight


class LMState(NamedTuple):
    """An :class:`NGramLM` hypothesis's state (int32 arrays of one shape).

    ``lm``: the n-gram state of the words so far; ``node``: the partial
    word's node in the trie of the LM's words (0: no partial word, -1: a
    partial word that no LM word starts with). Token-level models keep
    ``node = 0``.
    """

    lm: jax.Array
    node: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NGramLM:
    r"""An n-gram language model (an ARPA file) fused into CTC decoding.

    Two levels, chosen from the file's vocabulary (or by ``level``):

    - **word-level** (the LM's words are spelled by the labels' text): the
      text is cut into words at ``word_delimiter``, a word is scored when it
      completes, and the last one at the end. Character labels have the
      delimiter as a label of its own (``" "``, wav2vec2's ``"|"``), which
      ends the word. BPE labels (``word_delimiter="▁"``, sentencepiece's
      word-initial marker) have it as the prefix of word-initial labels: a
      label such as ``"▁bun"`` ends the previous word and begins a new one
      (``bun``), the others (``"ny"``) continue the partial word, so
      ``"▁bun" "ny"`` spells the word ``bunny`` however the text is cut into
      tokens (pyctcdecode's reading of BPE). The labels are read as text
      exactly as :class:`Hotwords` and :class:`Lexicon` read them.
    - **token-level** (every LM word is a label: a BPE or character LM): each
      new token is scored.

    Natural-log units throughout: pyctcdecode's ``alpha``/``beta`` are
    ``weight``/``word_bonus`` (it converts KenLM's log10 to ln, as here);
    flashlight's ``lm_weight`` multiplies log10 scores, so its ``lm_weight``
    is ``weight * ln(10)`` here (``weight = lm_weight / 2.3026``), and its
    ``word_score`` is ``word_bonus``.

    Attributes:
      tables: the n-gram model (:class:`jaxctc._ngram.NGramTables`).
      trie: word-level: the trie of the LM's words, as a map from the
        partial word's node and a class that continues it to the node after
        (:class:`jaxctc._children.Children`); ``node_word [num_nodes]``
        the LM word that ends at each node (``<unk>`` where none does);
        ``begins [K]`` for a word-initial class (the delimiter, for
        character labels) the node of the word it begins (0: none, -1: one
        that no LM word starts with), -2 for the other classes. Token-level:
        ``class_word [K]``, each class's LM word (``<unk>`` for the blank and
        unknown labels).
      weight, bonus, unk_score: float32 scalars (pytree leaves: changing them
        does not recompile).
      level: ``"word"`` or ``"token"``.
      unk: the LM word id of ``<unk>``.

    Notes:
      A complete word-level hypothesis with words :math:`v_1 \dots v_n`, of
      which :math:`n_{oov}` are not in the LM, gets

      .. math::

        w \ln P_{LM}(v_1 \dots v_n, \langle/s\rangle \mid \langle s\rangle)
        + b\, n + u\, n_{oov}

      (``weight`` :math:`w`, ``word_bonus`` :math:`b`, ``unk_score``
      :math:`u`), with out-of-vocabulary words scored as ``<unk>``; empty
      words (a leading, trailing or repeated delimiter, a lone ``"▁"``) are
      no words. A partial word that no LM word starts with gets :math:`u` at
      the token that breaks it (pyctcdecode's rule, so such prefixes leave
      the beam early); a word that completes outside the vocabulary
      otherwise gets it then: once per OOV word either way. A token-level
      hypothesis :math:`y` gets :math:`w \ln P(y_i \mid y_{<i}) +
      \text{token\_bonus}` per token and :math:`w \ln P(\langle/s\rangle
      \mid y)` at the end.

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
      >>> def total(lm, tokens):
      ...     state, out = lm.init(), 0.0
      ...     for k in tokens:
      ...         delta, state = lm.score(state, jnp.array([k]))
      ...         state = jax.tree.map(lambda x: x[0], state)
      ...         out += float(delta[0])
      ...     return round(out + float(lm.final(state)), 4)
      >>> total(lm, [1, 2])  # "a", then "b": the word completes at the end
      -2.9934

      The same model over BPE labels: ``"▁a" "b"`` spells the word "ab" as
      well, and so does ``"▁ab"``:

      >>> bpe = jaxctc.NGramLM.from_arpa(path, ["", "▁a", "b", "▁ab"],
      ...                                word_delimiter="▁", weight=1.0,
      ...                                word_bonus=0.0)
      >>> total(bpe, [1, 2]), total(bpe, [3])
      (-2.9934, -2.9934)
    """

    tables: _ngram.NGramTables
    trie: _children.Children | None
    node_word: jax.Array
    begins: jax.Array
    class_word: jax.Array
    weight: jax.Array
    bonus: jax.Array
    unk_score: jax.Array
    level: str = dataclasses.field(metadata=dict(static=True))
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
          word_delimiter: word-level: the text that begins a word: a label of
            its own for character labels (``" "``, ``"|"``), or the prefix of
            word-initial labels for BPE (``"▁"``).
          weight: the LM's weight (natural-log units).
          word_bonus: word-level: added per word (pyctcdecode's ``beta``).
          unk_score: word-level: added once per out-of-vocabulary word.
          token_bonus: token-level: added per token.
          level: ``"word"`` or ``"token"``; default: token-level when every
            word of the LM (besides ``<s>``, ``</s>``, ``<unk>``) is a label.

        Returns:
          The scorer, for ``prefix_beam_search(..., scorers=...)``.

        Raises:
          ValueError: for a malformed file (naming the line), weights that
            are not finite, labels that are not distinct, a word-level
            ``word_delimiter`` that no label is or starts with, or an unknown
            ``level``.

        Warns:
          UserWarning: counting the LM's words that no sequence of labels
            spells (they can never be emitted).
        """
        labels = [str(x) for x in labels]
        if len(set(labels)) != len(labels):
            raise ValueError("`labels` must be distinct.")
        weights = dict(
            weight=check_weight("weight", weight),
            word_bonus=check_weight("word_bonus", word_bonus),
            unk_score=check_weight("unk_score", unk_score),
            token_bonus=check_weight("token_bonus", token_bonus),
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
            level=level,
            unk=unk,
        )
        unused = jnp.zeros((1,), jnp.int32)
        if level == "token":
            class_word = np.array([word_id.get(x, unk) if x else unk for x in labels])
            return cls(
                tables=tables,
                trie=None,
                node_word=unused,
                begins=unused,
                class_word=jnp.asarray(class_word, jnp.int32),
                bonus=jnp.float32(weights["token_bonus"]),
                **values,
            )
        if word_delimiter is None:
            raise ValueError("`word_delimiter` must be given for a word-level LM.")
        spelling = _trie.spell_labels(labels, word_delimiter)
        # The trie holds every LM word's longest prefix of known characters,
        # so that "a partial word that no LM word starts with" means just
        # that, even for words that the labels cannot finish.
        trie, ends, spelled = _trie.Trie(), [], []
        for w in lm_words:
            symbols = spelling.known_prefix(w)
            node = trie.insert(symbols)
            if len(symbols) == len(w) and spelling.spells_word(symbols):
                ends.append(node)
                spelled.append(word_id[w])
        unspellable = len(lm_words) - len(spelled)
        if unspellable:
            warnings.warn(
                f"{os.fspath(path)}: {unspellable} of the LM's {len(lm_words)} "
                "words cannot be spelled with the labels and can never be "
                "emitted.",
                stacklevel=2,
            )
        nodes, classes, after, begins = _trie.class_walks(trie, spelling)
        children, new = _children.from_edges(
            nodes, classes, after, len(trie), len(labels)
        )
        node_word = np.full(len(trie), unk, np.int64)
        node_word[new[np.asarray(ends, np.int64)]] = spelled
        begins = np.where(begins >= 0, new[np.maximum(begins, 0)], begins)
        return cls(
            tables=tables,
            trie=children,
            node_word=jnp.asarray(node_word, jnp.int32),
            begins=jnp.asarray(begins, jnp.int32),
            class_word=unused,
            bonus=jnp.float32(weights["word_bonus"]),
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
        if self.level == "token":
            word = _buckets.take(self.class_word, tokens)
            log_prob, after = _ngram.advance(self.tables, state.lm[..., None], word)
            delta = self.weight * log_prob + self.bonus
            return delta, LMState(after, expand.node)
        # Ending the word does not depend on the token: once per hypothesis.
        end_delta, end_lm = self._word_end(state)
        end_delta = jnp.broadcast_to(end_delta[..., None], tokens.shape)
        end_lm = jnp.broadcast_to(end_lm[..., None], tokens.shape)
        assert self.trie is not None  # a word-level model has its trie
        # A class that continues the partial word walks the trie from its node.
        found, child = self.trie.child(jnp.maximum(expand.node, 0), tokens)
        alive = expand.node >= 0
        char_node = jnp.where(alive & found, child, -1)
        char_delta = jnp.where(alive & ~found, self.unk_score, 0.0)
        # A word-initial class ends the word and begins the next one there.
        begins = _buckets.take(self.begins, tokens)
        is_start = begins != -2
        start_delta = end_delta + jnp.where(begins == -1, self.unk_score, 0.0)
        delta = jnp.where(is_start, start_delta, char_delta)
        new = LMState(
            lm=jnp.where(is_start, end_lm, expand.lm),
            node=jnp.where(is_start, begins, char_node),
        )
        return delta, new

    def bound(self):
        """An upper bound on every contribution :meth:`score` returns (the
        search uses it to score only the extensions that can matter): a
        scalar for a token-level model, ``[K]`` one per class for a
        word-level one."""
        # ln P <= 0, so a nonnegative weight adds at most the bonus.
        lm = jnp.where(self.weight >= 0, 0.0, jnp.inf) + self.bonus
        if self.level == "token":
            return lm
        unk = jnp.maximum(self.unk_score, 0.0)
        # A class inside a word adds 0, or unk_score where it breaks it. A
        # word-initial class ends the word, if there is one (LM score and
        # bonus, unk_score if OOV), and may add unk_score again for the one
        # it begins (no LM word starts so; BPE only).
        begin_unk = jnp.where(self.begins == -1, unk, 0.0)
        word_end = jnp.maximum(lm + unk, 0.0)
        return jnp.where(self.begins != -2, word_end + begin_unk, unk)

    def final(self, state: LMState):
        """The contribution of ending: the partial word, then ``</s>``."""
        delta, lm = (
            self._word_end(state)
            if self.level == "word"
            else (jnp.zeros(state.lm.shape, jnp.float32), state.lm)
        )
        end = jnp.full(lm.shape, self.tables.end, jnp.int32)
        log_prob, _ = _ngram.advance(self.tables, lm, end)
        return delta + self.weight * log_prob
