"""Sphinx configuration for the sisakit documentation."""

import sys
from pathlib import Path

import sisakit

# Local extensions (docs/_ext): ``sisakit_cli`` renders the command-line reference from the
# argparse parser.
sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "sisakit"
author = "sisakit developers"
release = sisakit.__version__
version = release
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "sisakit_cli",
]
napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_typehints = "description"
autodoc_member_order = "bysource"
exclude_patterns = ["_build"]

html_theme = "furo"
html_title = f"sisakit {release}"

# CI has no internet: never fetch intersphinx inventories (the mapping stays empty). References
# to other projects' objects are listed below instead, so that ``nitpicky`` still reports every
# broken reference to a sisakit object.
intersphinx_mapping: dict = {}
nitpicky = True
_EXTERNAL = (
    "numpy", "np", "torch", "scipy", "sklearn", "xgboost", "pluggy", "matplotlib", "pyarrow",
    "pandas", "PIL", "pytest", "collections", "typing", "pathlib", "os", "argparse", "json",
    "concurrent", "multiprocessing", "datetime", "tomllib", "tomli", "enum", "dataclasses",
    "joblib", "ray",
)
nitpick_ignore_regex = [
    # Objects of other projects and of the standard library.
    (r"py:.*", rf"({'|'.join(_EXTERNAL)})(\..+)?"),
    # numpydoc type fields are free text ("ndarray, shape (n_users,), optional", "default 10",
    # '{"auto", "cpu"}'): Sphinx turns each word into a class reference. Ignore the words that
    # cannot name a Python class (no dot, not capitalised); capitalised names are listed below.
    (r"py:class", r"[^A-Z.][^.]*"),
    (r"py:class", r"default .*"),
    # Factory methods a contract-suite subclass implements (sisakit.testing).
    (r"py:meth", r"make_\w+"),
]
# Type fields also try every word as an attribute name ("shape (n_users,)" finds two
# ``n_users`` attributes): that ambiguity is harmless, so its warning is off.
suppress_warnings = ["ref.python"]
nitpick_ignore = [
    ("py:class", name)
    for name in (
        "Path", "Tensor", "S", "G", "BPR settings", "Opt-in",
        "sisakit.hookspecs.Register",
    )
]
