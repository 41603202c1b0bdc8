"""The public API: pinned, documented, every function with a doctest."""

import doctest
import inspect
import pathlib
import re

import jax
import pytest

import jaxctc
from tests.devices import run_on_8_devices

PUBLIC = [
    "Alignment",
    "GreedyDecodeState",
    "Hotwords",
    "Hypotheses",
    "Lexicon",
    "NGramLM",
    "PrefixBeamSearchState",
    "char_error_rate",
    "ctc_loss",
    "ctc_loss_with_forward_probs",
    "edit_distance",
    "feasible",
    "forced_align",
    "greedy_decode",
    "greedy_decode_init",
    "greedy_decode_result",
    "greedy_decode_update",
    "posteriors",
    "prefix_beam_search",
    "prefix_beam_search_init",
    "prefix_beam_search_result",
    "prefix_beam_search_update",
    "prefix_search",
    "sequence_log_probs",
    "word_error_rate",
]


def test_all_is_pinned():
    # Growing the API is a visible one-line change here.
    assert sorted(jaxctc.__all__) == sorted(PUBLIC)


def test_every_public_function_has_a_doctest_and_sections():
    finder = doctest.DocTestFinder()
    for name in jaxctc.__all__:
        obj = getattr(jaxctc, name)
        doc = inspect.getdoc(obj) or ""
        if inspect.isfunction(obj):
            tests = [t for t in finder.find(obj, name) if t.examples]
            assert tests, f"{name} has no doctest"
            for section in ("Args:", "Returns:", "Examples:"):
                assert section in doc, f"{name} lacks {section}"
        else:
            assert doc, f"{name} has no docstring"


ROOT = pathlib.Path(__file__).resolve().parents[1]
# The README and every page of the docs: their Python blocks run as written.
PAGES = ["README.md"] + sorted(
    str(p.relative_to(ROOT))
    for p in (ROOT / "docs").rglob("*.md")
    if "_build" not in p.parts
)


def python_blocks(page: str) -> list[str]:
    text = (ROOT / page).read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_run(page):
    blocks = python_blocks(page)
    if page == "README.md":
        assert len(blocks) >= 2  # the quickstart, decoding
    for block in blocks:
        # Documentation code runs with default promotion, as users' code does.
        with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
            exec(compile(block, page, "exec"), {})


def test_sharding_guide_prints_what_it_says_on_8_devices():
    # On one device there is nothing to split (the specs print P()); the
    # guide's comments say what 8 devices print.
    (block,) = [
        b for b in python_blocks("docs/guides/sharding.md") if "P('batch',)" in b
    ]
    script = (
        "import contextlib, io, json\n"
        "printed = io.StringIO()\n"
        "with contextlib.redirect_stdout(printed):\n"
        f"    exec({block!r})\n"
        "print(json.dumps(printed.getvalue().splitlines()))\n"
    )
    printed = run_on_8_devices(script)
    # jax 0.10 writes P('batch',), jax 0.7 PartitionSpec('batch',).
    assert printed == [str(jax.sharding.PartitionSpec("batch"))] * 2, printed


def test_api_reference_lists_every_public_name():
    text = (ROOT / "docs" / "api.rst").read_text()
    listed = re.findall(r"^   (\w+)$", text, flags=re.M)
    assert sorted(listed) == sorted(jaxctc.__all__)
