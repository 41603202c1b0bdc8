"""The ARPA reader and the n-gram device tables, against a float64 reference
of the backoff definition and against KenLM (bundled in flashlight-text)."""

from __future__ import annotations

import gzip
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxctc import _arpa, _ngram
from tests import arpa_references as ref


@jax.jit
def _run(tables, ids):
    def step(state, word):
        log_prob, state = _ngram.advance(tables, state, word)
        return state, log_prob

    return jax.lax.scan(step, jnp.int32(tables.start), ids)[1]


def _score(tables, arpa, sentence, size=16):
    """Per word (and ``</s>``) ln P from the device tables, in one scan (the
    ids padded to ``size``, so that one compile serves every sentence)."""
    index = {w: i for i, w in enumerate(arpa.words)}
    unk = index["<unk>"]
    ids = [index.get(w, unk) for w in sentence] + [tables.end]
    padded = np.zeros(size, np.int32)
    padded[: len(ids)] = ids
    return np.asarray(_run(tables, jnp.asarray(padded)), np.float64)[: len(ids)]


@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("drop_prefixes", [False, True])
def test_tables_equal_the_backoff_definition(tmp_path, order, drop_prefixes):
    rng = np.random.default_rng(order)
    for seed in range(3):
        path = tmp_path / f"lm{seed}.arpa"
        words = ref.write_random_arpa(
            path,
            seed,
            order=order,
            drop=0.4,
            drop_prefixes=drop_prefixes,
            preamble="text before the header is a comment\n\n",
        )
        arpa = _arpa.read_arpa(path)
        tables = _ngram.build_tables(arpa)
        model, model_order = ref.read_model(path)
        assert model_order == order == tables.order
        for _ in range(10):
            sentence = [str(w) for w in rng.choice(words + ["oov"], rng.integers(0, 9))]
            want = ref.sentence_log_probs(model, order, sentence)
            np.testing.assert_allclose(_score(tables, arpa, sentence), want, atol=2e-5)


def test_tables_equal_kenlm(tmp_path):
    """KenLM through flashlight-text's bundled copy (log10 scores), on files
    with missing suffixes (KenLM refuses missing contexts)."""
    kenlm_module = pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    dictionary = pytest.importorskip("flashlight.lib.text.dictionary")
    rng = np.random.default_rng(0)
    for seed, order in enumerate([2, 3, 4, 5]):
        path = tmp_path / f"lm{seed}.arpa"
        words = ref.write_random_arpa(path, seed, order=order, drop=0.4)
        vocab = words + ["</s>", "oov"]
        d = dictionary.Dictionary()
        for w in vocab:
            d.add_entry(w)
        kenlm = kenlm_module.KenLM(str(path), d)
        arpa = _arpa.read_arpa(path)
        tables = _ngram.build_tables(arpa)
        for _ in range(20):
            sentence = [
                str(w) for w in rng.choice(vocab[:-2] + ["oov"], rng.integers(1, 12))
            ]
            state, want = kenlm.start(False), []
            for w in sentence:
                state, score = kenlm.score(state, d.get_index(w))
                want.append(score)
            want.append(kenlm.finish(state)[1])
            got = _score(tables, arpa, sentence) / math.log(10)
            np.testing.assert_allclose(got, want, atol=1e-4)


# KenLM's own model and the log10 scores its tests expect (lm/test.arpa and
# lm/model_test.cc in the kenlm sdist). The file is not ours to ship: CI
# takes it from the sdist on PyPI (.ci/run), and a local run can too:
#   pip download kenlm --no-deps --no-binary :all: -d DIR, then untar it and
#   export JAXCTC_KENLM_TEST_ARPA=DIR/kenlm-*/lm/test.arpa
# Each case: where it starts ("<s>" or the empty context) and the words in
# turn, each with its expected log10 probability given the words before it.
KENLM_CASES = {
    "starters": [
        ("<s>", [("looking", -0.4846522)]),
        ("<s>", [(",", -1.383514 + -0.4149733)]),  # + the backoff of <s>
        ("<s>", [("this_is_not_found", -1.995635 + -0.4149733)]),  # <unk>
    ],
    "continuation": [
        (
            "<s>",
            [
                ("looking", -0.484652),
                ("on", -0.348837),
                ("a", -0.0155266),
                ("little", -0.00306122),
                ("the", -4.04005),
                ("biarritz", -1.9889),
                ("not_found", -2.29666),
                ("more", -1.20632 - 20.0),
                (".", -0.51363),
                ("</s>", -0.0191651),
            ],
        ),
        (
            "<s>",
            [
                ("looking", -0.484652),
                ("on", -0.348837),
                ("a", -0.0155266),
                ("little", -0.00306122),
                ("more", -0.00181395),
                ("loin", -0.0432557),
            ],
        ),
    ],
    # n-grams whose prefixes the file does not list ("would consider", ...)
    "blanks": [
        (
            "",
            [
                ("also", -1.687872),
                ("would", -2),
                ("consider", -3),
                ("higher", -4),
                ("looking", -5),
            ],
        ),
        (
            "",
            [
                ("also", -1.687872),
                ("would", -2),
                ("consider", -3),
                ("not_found", -1.995635 - 7.0 - 0.30103),
            ],
        ),
        (
            "",
            [
                ("higher", -1.509559),
                ("looking", -1.285941 - 0.30103),
                ("not_found", -1.995635 - 0.4771212),
            ],
        ),
        ("", [("higher", -1.509559), ("looking", -1.285941 - 0.30103)]),
        (
            "",
            [
                ("higher", -1.509559),
                ("looking", -1.285941 - 0.30103),
                ("consider", -1.687872 - 0.4771212),
            ],
        ),
        (
            "",
            [
                ("would", -1.687872),
                ("consider", -1.687872 - 0.30103),
                ("higher", -1.509559 - 0.30103),
                ("looking", -1.285941 - 0.30103),
            ],
        ),
    ],
    "unknowns": [
        ("", [("not_found", -1.995635), ("not_found2", -15.0), ("not_found3", -17.0)]),
        ("", [("not_found", -1.995635), ("however", -4), ("not_found3", -6)]),
    ],
    "minimal_state": [
        ("", [("baz", -6.535897)]),
        ("", [("foo", -3.141592), ("bar", -6.0), ("bar", -2.718281 + 3.0)]),
        ("", [("to", -1.687872), ("look", -0.2922095), ("a", -7)]),
    ],
}


@pytest.mark.parametrize("case", sorted(KENLM_CASES))
def test_kenlm_test_arpa_vectors(case):
    """KenLM's own expected scores on its ``test.arpa`` (a 5-gram with
    n-grams whose prefixes are missing, ``<unk>`` n-grams, backoff weights
    of 0 and of -20), read by ``read_arpa`` and scored on the device tables."""
    path = os.environ.get("JAXCTC_KENLM_TEST_ARPA")
    if not path or not os.path.exists(path):
        pytest.skip("set JAXCTC_KENLM_TEST_ARPA to kenlm's lm/test.arpa (see above)")
    arpa = _arpa.read_arpa(path)
    tables = _ngram.build_tables(arpa)
    assert tables.order == 5
    index = {w: i for i, w in enumerate(arpa.words)}
    unk = index["<unk>"]
    advance = jax.jit(_ngram.advance)
    for start, steps in KENLM_CASES[case]:
        state = jnp.int32(tables.start if start == "<s>" else 0)
        got = []
        for word, _ in steps:
            log_prob, state = advance(tables, state, jnp.int32(index.get(word, unk)))
            got.append(float(log_prob) / math.log(10))
        want = [score for _, score in steps]
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"{start} {steps}")


BUGS_BUNNY = """\\data\\
ngram 1=5
ngram 2=5

\\1-grams:
-10\t<unk>\t0
0\t<s>\t0
0\t</s>\t0
0\tbugs\t0
0\tbunny\t0

\\2-grams:
0\tbunny </s>
-10\tbugs </s>
0\t<s> bugs
-10\t<s> bunny
0\tbugs bunny

\\end\\
"""


def test_small_model_scores_and_gzip(tmp_path):
    """pyctcdecode's 2-gram test model: listed bigrams score as listed, the
    rest back off (all backoffs 0); a gzip copy reads the same."""
    plain = tmp_path / "bugs_bunny.arpa"
    plain.write_text(BUGS_BUNNY)
    packed = tmp_path / "bugs_bunny.arpa.gz"
    with gzip.open(packed, "wt") as f:
        f.write(BUGS_BUNNY)
    for path in (plain, packed):
        arpa = _arpa.read_arpa(path)
        tables = _ngram.build_tables(arpa)
        ln10 = math.log(10)
        got = _score(tables, arpa, ["bugs", "bunny"])
        np.testing.assert_allclose(got, [0.0, 0.0, 0.0], atol=1e-6)
        got = _score(tables, arpa, ["bunny", "bugs"])
        np.testing.assert_allclose(got, [-10 * ln10, 0.0, -10 * ln10], atol=1e-4)
        got = _score(tables, arpa, ["carrot"])  # out of vocabulary: <unk>
        np.testing.assert_allclose(got, [-10 * ln10, 0.0], atol=1e-4)


def test_advance_is_elementwise_under_jit_and_vmap(tmp_path):
    path = tmp_path / "lm.arpa"
    ref.write_random_arpa(path, 1, order=3)
    tables = _ngram.build_tables(_arpa.read_arpa(path))
    rng = np.random.default_rng(0)
    num_states = tables.backoff.shape[0]
    states = jnp.asarray(rng.integers(0, num_states, (4, 6)), jnp.int32)
    words = jnp.asarray(rng.integers(0, 8, (4, 6)), jnp.int32)
    whole = jax.jit(_ngram.advance)(tables, states, words)
    rows = jax.vmap(lambda s, w: _ngram.advance(tables, s, w))(states, words)
    one = [
        [_ngram.advance(tables, states[i, j], words[i, j]) for j in range(6)]
        for i in range(4)
    ]
    for k in range(2):
        np.testing.assert_array_equal(whole[k], rows[k])
        np.testing.assert_array_equal(
            whole[k], np.array([[o[k] for o in row] for row in one])
        )
    assert bool(jnp.all(whole[0] <= 0))
    assert int(jnp.max(whole[1])) < num_states


MALFORMED = {
    "no end of sentence": (
        "\\data\\\nngram 1=1\n\\1-grams:\n-1 a\n\\end\\\n",
        "no 1-gram '</s>'",
    ),
    "no header": ("ngram 1=1\n\\1-grams:\n-1 a\n\\end\\\n", "line 4: no \\\\data"),
    "count": ("\\data\\\nngram 1=2\n\\1-grams:\n-1 a\n\\end\\\n", "says ngram 1=2"),
    "number": ("\\data\\\nngram 1=1\n\\1-grams:\n-x a\n\\end\\\n", "line 4: log10"),
    "positive": ("\\data\\\nngram 1=1\n\\1-grams:\n0.5 a\n\\end\\\n", "line 4: log10"),
    "fields": (
        "\\data\\\nngram 1=1\n\\1-grams:\n-1 a b c\n\\end\\\n",
        "line 4: a 1-gram",
    ),
    "backoff": (
        "\\data\\\nngram 1=1\n\\1-grams:\n-1 a nan\n\\end\\\n",
        "line 4: backoff",
    ),
    "order": ("\\data\\\nngram 1=1\n\\2-grams:\n-1 a b\n\\end\\\n", "line 3: section"),
    "no end": ("\\data\\\nngram 1=1\n\\1-grams:\n-1 a\n", "ends before"),
    "header": (
        "\\data\\\nngram one=1\n\\1-grams:\n-1 a\n\\end\\\n",
        "line 2: expected .ngram N=count.",
    ),
    "unigram": (
        "\\data\\\nngram 1=2\nngram 2=1\n\\1-grams:\n-1 a\n-1 </s>\n"
        "\\2-grams:\n-1 a b\n\\end\\\n",
        "'b', which has no 1-gram",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_names_the_line(tmp_path, case):
    text, message = MALFORMED[case]
    path = tmp_path / "bad.arpa"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        _ngram.build_tables(_arpa.read_arpa(path))
