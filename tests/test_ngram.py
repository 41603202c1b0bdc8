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


def _assert_same_parse(got, want):
    assert got[0] == want[0]  # the words, in order of first appearance
    for got_arrays, want_arrays in zip(got[1:], want[1:], strict=True):
        assert len(got_arrays) == len(want_arrays)
        for g, w in zip(got_arrays, want_arrays, strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)


# Layouts the bulk reader must read as the line reader does: each rewrites
# a random file's text.
LAYOUTS = {
    "plain": lambda text: text,
    "crlf": lambda text: text.replace("\n", "\r\n"),
    "cr": lambda text: text.replace("\n", "\r"),
    "spaces and blank lines": lambda text: text.replace("\t", "  \x0b ").replace(
        "\n", " \n\n \x0c\n"
    ),
    "separators beyond space and tab": lambda text: text.replace("\t", "\x1c"),
    "no final newline": lambda text: text.rstrip("\n"),
    "scores in other notations": lambda text: (
        text.replace("-0.", "-.").replace("-1.", "-1_0.").replace("5\t", "5e0\t")
    ),
}
# Words of many byte lengths (a 9th, 13th, 17th byte that tells apart two
# words with the same beginning), and beyond ASCII.
LONG_WORDS = [
    "a", "ab", "abcdefgh", "abcdefghi", "abcdefghij", "abcdefghijkl",
    "abcdefghijklm", "abcdefghijklmnop", "abcdefghijklmnopq", "é", "éé",
    "日本語の単語", "日本語の単語です",
]  # fmt: skip


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_bulk_reader_equals_line_reader(tmp_path, layout):
    """The bulk reader (NumPy over all lines) against the line reader, which
    defines what a file says, on random files in various layouts."""
    for seed, order in enumerate([1, 2, 3, 4, 5]):
        path = tmp_path / f"lm{seed}.arpa"
        ref.write_random_arpa(
            path,
            seed,
            order=order,
            drop=0.4,
            drop_prefixes=seed % 2 == 1,
            preamble="\\comment before the header\n" if seed % 2 else "",
            words=LONG_WORDS if seed > 1 else None,
        )
        text = LAYOUTS[layout](path.read_text())
        path.write_bytes(text.encode())
        got = _arpa._read_bulk(_arpa._read_bytes(path))
        assert got is not None
        _assert_same_parse(got, _arpa._read_lines(path))
        packed = tmp_path / f"lm{seed}.arpa.gz"
        packed.write_bytes(gzip.compress(text.encode()))
        _assert_same_parse(_arpa._read_bulk(_arpa._read_bytes(packed)), got)


def test_bulk_reader_leaves_the_unusual_to_the_line_reader(tmp_path):
    """Files the bulk reader does not vouch for are read line by line: a
    space beyond ASCII (which str.split() takes), a digit beyond ASCII
    (which float() takes), a NUL byte."""
    path = tmp_path / "lm.arpa"
    header = "\\data\\\nngram 1=3\n\\1-grams:\n-1 </s>\n"
    for line, words in [
        ("-2 a\u3000-0.5\n-1 b", ["</s>", "a", "b"]),  # a backoff
        ("-\u0662 a\n-1 b", ["</s>", "a", "b"]),
        ("-2 a\0\n-1 b", ["</s>", "a\0", "b"]),
    ]:
        path.write_text(header + line + "\n\\end\\\n")
        assert _arpa._read_bulk(_arpa._read_bytes(path)) is None
        assert _arpa.read_arpa(path).words[:3] == words


def _without_unk(path):
    """The file at ``path`` less its 1-gram ``<unk>``."""
    lines = path.read_text().split("\n")
    count = next(i for i, x in enumerate(lines) if x.startswith("ngram 1="))
    lines[count] = f"ngram 1={int(lines[count][8:]) - 1}"
    path.write_text("\n".join(x for x in lines if x.split("\t")[1:2] != ["<unk>"]))


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_tables_equal_the_dict_tables(tmp_path, order):
    """The vectorised tables against the obvious dict construction, state by
    state and arc by arc, with missing prefixes and a missing <unk>."""
    for seed in range(4):
        path = tmp_path / f"lm{seed}.arpa"
        ref.write_random_arpa(
            path, seed, order=order, vocab=6, count=40, drop=0.5, drop_prefixes=seed % 2
        )
        if seed >= 2:
            _without_unk(path)
        arpa = _arpa.read_arpa(path)
        tables = _ngram.build_tables(arpa)
        assert ref.table_grams(tables) == ref.dict_tables(arpa)
    kenlm_arpa = os.environ.get("JAXCTC_KENLM_TEST_ARPA")
    if order == 5 and kenlm_arpa:  # KenLM's own file: missing prefixes
        arpa = _arpa.read_arpa(kenlm_arpa)
        assert ref.table_grams(_ngram.build_tables(arpa)) == ref.dict_tables(arpa)
