"""Sphinx configuration of the stagewise documentation (``make docs``; ``make docs DOCS_MODE=ci``)."""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent / "lib"))

project = "stagewise"
author = "the stagewise authors"
copyright = "2026, the stagewise authors"

docs_mode = os.environ.get("STAGEWISE_DOCS_MODE", "full")  # "ci": the notebook pages are stubs

extensions = [
    "myst_nb",  # MyST markdown and notebooks (never executed here: nb_execution_mode = "off")
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "headline",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_generated_readme_block.md", "**/.ipynb_checkpoints"]
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "deflist", "html_image"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # the notebooks' markdown starts at '#', then skips levels in places

autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = True

html_theme = "sphinx_book_theme"
html_title = "stagewise"
html_static_path = ["_static"]
html_css_files = ["stagewise.css"]
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
}
html_show_sourcelink = False

# -n (nitpicky) checks every reference into stagewise; the build is offline (no intersphinx), so
# types of other packages cannot resolve and are not checked, nor napoleon's free-text "types"
nitpick_ignore_regex = [
    ("py:.*", r"(torch|numpy|np|pandas|pd|pathlib|collections|typing|concurrent|dask|matplotlib|scipy|sklearn|transformer_lens|nbformat|datasets|tokenizers)(\..*)?"),
    ("py:.*", r"(Tensor|Module|Path|Generator|CUDAGraph|DataFrame|Series|Figure|Axes|HookedTransformer)"),
    ("py:.*", r".*[^\w.].*"),  # not an identifier: a phrase napoleon took for a type
]
autodoc_default_options["ignore-module-all"] = True  # as autosummary: every public name
autodoc_default_options["undoc-members"] = True
