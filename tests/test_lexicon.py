"""Lexicon (only listed words): the running and final contributions equal a
set-of-words check on the text (tests/references.py), the beam search with it
equals the float64 textbook search with the same fusion, alone and with an
NGramLM and Hotwords, batch-sharded too, and pyctcdecode's BPE case."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxctc
from jaxctc import Hotwords, Lexicon, NGramLM
from tests import arpa_references as aref
from tests import references as ref
from tests.devices import run_on_8_devices
from tests.test_hotwords import (
    LABELS,
    WORDS,
    check_running,
    check_search,
    random_logits,
    random_text,
)
from tests.versions import jax_at_least

BPE_LABELS = ["", "▁bugs", "▁bun", "ny", "▁b", "un", "n", "y", "s", "▁"]


@pytest.mark.parametrize("delimiter", [" ", None])
def test_running_contribution_is_the_set_of_words_check(delimiter):
    rng = np.random.default_rng(0)
    lex = Lexicon(WORDS, LABELS, word_delimiter=delimiter)
    fusion = ref.lexicon_fusion(WORDS, LABELS, delimiter)
    for _ in range(40):
        text = random_text(rng, WORDS + [" "], 12)
        check_running(lex, fusion, [LABELS.index(c) for c in text])


def test_bpe_words_are_cut_before_word_initial_labels():
    words = ["bugs", "bunny", "bun", "by", "s"]
    lex = Lexicon(words, BPE_LABELS, word_delimiter="▁")
    fusion = ref.lexicon_fusion(words, BPE_LABELS, "▁")
    rng = np.random.default_rng(1)
    for _ in range(40):
        check_running(lex, fusion, list(rng.integers(1, len(BPE_LABELS), 6)))
    # "▁bun" + "ny" and "▁b" + "un" + "n" + "y" both spell "bunny".
    for tokens in ([1, 2, 3], [4, 5, 6, 7], [9, 8, 1]):
        check_running(lex, fusion, tokens)
        assert fusion[0](tuple(tokens)) + fusion[1](tuple(tokens)) == 0.0


def test_no_words_allow_only_delimiters():
    lex = Lexicon([], LABELS)
    fusion = ref.lexicon_fusion([], LABELS)
    for text in ["", "  ", " a", "b"]:
        check_running(lex, fusion, [LABELS.index(c) for c in text])


@pytest.mark.parametrize("width", [2, 5])
def test_search_equals_textbook_search(width):
    lex = Lexicon(WORDS[:4], LABELS)
    fusion = ref.lexicon_fusion(WORDS[:4], LABELS)
    check_search((lex,), fusion, *random_logits(20 + width), width, min(width, 3))


@pytest.mark.parametrize("bpe", [False, True])
def test_search_with_ngram_lm_and_hotwords_equals_textbook_search(tmp_path, bpe):
    path = tmp_path / "words.arpa"
    aref.write_random_arpa(path, 2, order=2, words=WORDS)
    model, order = aref.read_model(path)
    # BPE: the three scorers read the same random vocabulary of pieces.
    rng = np.random.default_rng(3)
    labels = ref.random_bpe_labels(rng, WORDS + ["zab"], 5) if bpe else LABELS
    options = dict(word_delimiter="▁" if bpe else " ")
    lm = NGramLM.from_arpa(
        path, labels, weight=0.8, word_bonus=0.5, unk_score=-3.0, **options
    )
    hot = Hotwords(["ab", "ba c"], labels, weight=1.5, **options)
    lex = Lexicon(WORDS[:5], labels, **options)
    delimiter = options["word_delimiter"]
    fusion = ref.sum_fusion(
        aref.word_fusion(model, order, labels, delimiter, 0.8, 0.5, -3.0),
        ref.hotword_fusion(["ab", "ba c"], labels, 1.5, delimiter),
        ref.lexicon_fusion(WORDS[:5], labels, delimiter),
    )
    logits = random_logits(13, classes=len(labels))
    check_search((lm, hot, lex), fusion, *logits, 4, 2)


def test_nothing_allowed_gives_minus_inf_scores_not_nan():
    # Only "a" can be read (the other classes and the blank are masked) and
    # the lexicon rules it out: every hypothesis ranks -inf, and no NaN
    # arises.
    logits = np.full((1, 6, len(LABELS)), -np.inf, np.float32)
    logits[0, :, 1] = 0.0
    hyp = jaxctc.prefix_beam_search(
        logits,
        np.zeros((1, 6)),
        beam_width=2,
        top_paths=2,
        scorers=(Lexicon(["c"], LABELS),),
    )
    assert np.all(np.asarray(hyp.scores) == -np.inf)
    # Ruled out, so returned as missing: no labels, log-probability -inf.
    assert np.all(np.asarray(hyp.log_probs) == -np.inf)
    assert np.all(np.asarray(hyp.label_paddings) == 1)


def test_pyctcdecode_bpe_case():
    # pyctcdecode's BPE vector: the path "", ▁bugs, ▁bun, ny, ny, "" reads
    # "bugs bunny". With "bunny" left out of the lexicon, the search finds
    # the most probable allowed labelling, by brute force over the 4**6
    # alignments.
    labels = ["▁bugs", "▁bun", "ny", ""]
    path = ["", "▁bugs", "▁bun", "ny", "ny", ""]
    probs = np.zeros((len(path), 4))
    probs[np.arange(len(path)), [labels.index(x) for x in path]] = 1.0
    logits = np.log(np.clip(probs, 1e-15, 1))[None].astype(np.float32)

    def decode(words):
        lex = Lexicon(words, labels, word_delimiter="▁")
        hyp = jaxctc.prefix_beam_search(
            logits, jnp.zeros((1, 6)), beam_width=8, blank_id=3, scorers=(lex,)
        )
        got = ref.unpad(hyp.labels[0, 0], hyp.label_paddings[0, 0])
        return got, float(hyp.log_probs[0, 0])

    got, log_prob = decode(["bugs", "bunny"])
    assert got == (0, 1, 2) and abs(log_prob) < 1e-5
    partial, final = ref.lexicon_fusion(["bugs", "bun"], labels, "▁")
    table = ref.alignments(ref.log_softmax(logits[0]), 3)
    allowed = {y: v[0] for y, v in table.items() if partial(y) + final(y) == 0.0}
    best = max(allowed, key=allowed.get)
    got, log_prob = decode(["bugs", "bun"])
    assert got == best == (0, 1, 0)  # "bugs bun bugs"
    np.testing.assert_allclose(log_prob, allowed[best], rtol=1e-5)


def test_a_pytree_through_jit_and_vmap():
    lex = Lexicon(WORDS, LABELS)
    leaves, tree = jax.tree.flatten(lex)
    again = jax.tree.unflatten(tree, leaves)
    assert isinstance(again, Lexicon) and again.nbytes == lex.nbytes > 0
    state = jnp.asarray([0, 1, 2, -1], jnp.int32)  # nodes, one dead
    candidates = jnp.asarray(np.tile(np.arange(1, 5), (4, 1)), jnp.int32)
    score = jax.jit(lambda lex, s, c: lex.score(s, c))
    delta, after = score(lex, state, candidates)
    mapped = jax.vmap(lambda s, c: lex.score(s, c))(state, candidates)
    np.testing.assert_array_equal(mapped[0], delta)
    np.testing.assert_array_equal(mapped[1], after)
    assert np.all(np.asarray(after[3]) == -1) and np.all(np.asarray(delta[3]) == 0)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"`words\[1\]`.*'x'"):
        Lexicon(["ab", "xa"], LABELS)
    with pytest.raises(ValueError, match=r"`words\[0\]`.*whitespace"):
        Lexicon(["a b"], LABELS)
    with pytest.raises(ValueError, match="`word_delimiter`"):
        Lexicon(["ab"], LABELS, word_delimiter="|")
    with pytest.raises(ValueError, match="`word_delimiter`"):
        Lexicon(["bugs"], BPE_LABELS)  # BPE needs word_delimiter="▁"
    with pytest.raises(ValueError, match=r"`words\[0\]`.*cannot be spelled"):
        Lexicon(["ugs"], ["", "▁bugs", "▁"], word_delimiter="▁")
    with pytest.raises(ValueError, match="`labels`"):
        Lexicon(["ab"], LABELS + ["b"])


@pytest.mark.parametrize("mode", ["Auto", "Explicit"])
def test_batch_sharded_over_8_devices(tmp_path, mode):
    if mode == "Explicit" and not jax_at_least("0.10.1"):
        # Measured: jax 0.7.2-0.10.0 cannot place the tables' gathers on a
        # mesh with explicit axes ("Resource axis: batch ... not found").
        pytest.skip("a Lexicon on a mesh with explicit axes needs jax >= 0.10.1")
    # As tests/test_sharding.py: 8 CPU devices in a subprocess; the scorers'
    # tables are replicated, every sequence's search stays on its device; the
    # devices share one boolean per frame (does any sequence need its frame
    # run again on every extension, see jaxctc._beam).
    script = f"""
import json, re
import jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import jaxctc
from tests import arpa_references as aref

labels, words = {LABELS!r}, {WORDS!r}
arpa = {str(tmp_path / "lm.arpa")!r}
aref.write_random_arpa(arpa, 0, order=2, words=words)
scorers = (
    jaxctc.NGramLM.from_arpa(arpa, labels),
    jaxctc.Hotwords(["ab", "c a"], labels, weight=2.0),
    jaxctc.Lexicon(words, labels),
)
rng = np.random.default_rng(0)
logits = (2.5 * rng.normal(size=(16, 10, 5))).astype(np.float32)
paddings = np.zeros((16, 10), np.float32)
f = jax.jit(lambda x, p, s: jaxctc.prefix_beam_search(x, p, beam_width=4, scorers=s))
want = f(logits, paddings, scorers)
# Explicit axes need the tables' gathers to say their output's sharding.
mesh = jax.make_mesh((8,), ("batch",), axis_types=(jax.sharding.AxisType.{mode},))
shard = lambda a: jax.device_put(a, NamedSharding(mesh, P("batch")))
got = f(shard(logits), shard(paddings), scorers)
hlo = f.lower(shard(logits), shard(paddings), scorers).compile().as_text()
ops = r"(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)"
print(json.dumps(dict(
    devices=len(jax.devices()),
    equal=all(np.array_equal(g, w) for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want))),
    collectives=sorted(set(re.findall(r"\\b" + ops + r"(?:-start)?\\(", hlo))),
    reduced=sorted(set(re.findall(r"= (\\w+\\[[\\d,]*\\]) all-reduce", hlo))),
    spec=str(got.labels.sharding.spec),
)))
"""
    report = run_on_8_devices(script)
    assert report["devices"] == 8 and report["equal"]
    assert report["collectives"] == ["all-reduce"] and "batch" in report["spec"]
    assert report["reduced"] == ["pred[]"]
