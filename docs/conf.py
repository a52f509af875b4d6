"""Sphinx configuration of nbnorm's documentation site.

Build: ``pip install ".[docs]" && python -m sphinx -W -b html docs docs/_build/html``.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nbnorm  # noqa: E402

project = "nbnorm"
author = "nbnorm developers"
copyright = "2026, nbnorm developers"
release = version = nbnorm.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

autosummary_generate = True
autodoc_default_options = {"members": False}
numpydoc_show_class_members = True
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = f"nbnorm {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_static_path = []     # (docs/_static holds figures the pages include)
# the site is read offline too: no fonts or scripts from elsewhere
html_theme_options["icon_links"] = []
