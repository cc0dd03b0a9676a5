"""Sphinx configuration: the guides in MyST Markdown, the API reference from the docstrings.

Sphinx with MyST and autodoc, as flax, optax and orbax build theirs, with their theme
(sphinx-book-theme). Nothing is fetched at build time: no intersphinx inventories, the theme
and extensions come from the locked dev environment. ``python -m sphinx -W -b html docs
build/docs`` builds it (CI does, warnings as errors: tests/test_docs.py).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

project = "aejax"
author = "the aejax authors"
copyright = "2026, the aejax authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_generated/*"]  # generated blocks are included by the pages
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
suppress_warnings = ["myst.header"]

html_theme = "sphinx_book_theme"
html_title = "aejax"
html_theme_options = {
    "repository_url": "",
    "use_repository_button": False,
    "show_toc_level": 2,
}
html_static_path = ["_static"]
html_css_files = ["wrap.css"]  # long commands wrap instead of scrolling sideways
