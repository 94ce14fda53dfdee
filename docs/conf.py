"""Sphinx configuration for the sisakit documentation."""

import sisakit

project = "sisakit"
author = "sisakit developers"
release = sisakit.__version__
version = release
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_typehints = "description"
autodoc_member_order = "bysource"
# CI has no internet: never fetch intersphinx inventories.
intersphinx_mapping: dict = {}
exclude_patterns = ["_build"]
html_theme = "alabaster"
