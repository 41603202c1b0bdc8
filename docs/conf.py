"""Sphinx configuration: the API reference from the docstrings, the guides
in Markdown (MyST). Built strictly in CI: ``python -m sphinx -W -b html docs
docs/_build/html``."""

import pathlib
import sys

# The checkout's package, whatever else is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jaxctc  # noqa: E402

project = "jaxctc"
author = "The jaxctc authors"
copyright = "the jaxctc authors"
release = version = jaxctc.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

# Google-style docstrings; the signatures' types come from the annotations.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_member_order = "bysource"
autosummary_generate = True
templates_path = ["_templates"]
# jax.typing.ArrayLike, not the union it expands to.
autodoc_type_aliases = {
    "jax.typing.ArrayLike": "jax.typing.ArrayLike",
    "ArrayLike": "jax.typing.ArrayLike",
}
python_use_unqualified_type_names = True

html_theme = "alabaster"
html_title = f"jaxctc {release}"
html_theme_options = {"description": "CTC for JAX", "fixed_sidebar": True}
