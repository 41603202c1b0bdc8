"""The public API: pinned, documented, every function with a doctest."""

import doctest
import inspect

import jaxctc

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


def test_readme_python_blocks_run():
    """Every ```python block of the README runs as written."""
    import pathlib
    import re

    import jax

    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        # README code runs with default promotion, as users' code does.
        with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
            exec(compile(block, "README.md", "exec"), {})
