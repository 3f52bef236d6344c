"""Sphinx configuration for the rcc documentation.

Build with ``python -m sphinx -W -b html docs docs/_build/html`` from the
repository root.  The API reference is generated from the docstrings
(numpydoc style).  When PyTorch is not installed, ``torch`` is mocked so that
the pages of :mod:`rcc.torch` still build from its docstrings.
"""

import importlib.util
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import rcc  # noqa: E402  (imported after the path is set, for the version)

project = "rcc"
author = "The rcc developers"
copyright = "2026, The rcc developers"
version = release = rcc.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
]

exclude_patterns = ["_build"]
root_doc = "index"

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "inherited-members": "Module", "show-inheritance": False}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False
numpydoc_xref_param_type = False

# rcc.torch needs PyTorch and rcc.dask needs dask; without them, build their pages from mocks.
autodoc_mock_imports = [name for name in ("torch", "dask") if importlib.util.find_spec(name) is None]

html_theme = "alabaster"
html_title = f"rcc {release}"
