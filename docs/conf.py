"""Sphinx configuration for the sisakit documentation."""

import logging
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
    "sphinx_gallery.gen_gallery",
    "sisakit_cli",
]
napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_typehints = "description"
autodoc_member_order = "bysource"
exclude_patterns = ["_build"]

# A theme dependency (a11y_pygments) configures the root logger at INFO on import; keep the
# examples' progress messages out of the build log.
logging.getLogger("sisakit").setLevel(logging.WARNING)

# The example gallery: every ``examples/plot_*.py`` runs during the build (on the built-in
# synthetic data, each in well under 30 s on two CPU cores) and is rendered with its output and
# figures into ``docs/auto_examples/`` (generated, not committed). Other files of ``examples/``
# (``movielens_study.py``, ``plugin-example/``) are neither run nor shown. Nothing is fetched:
# no intersphinx inventories, no links from code to other projects' docs.
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"[\\/]plot_",
    # Matched against bare file names and full paths: every .py file not named plot_*.
    "ignore_pattern": r"(^|[\\/])(?!plot_)[^\\/]+\.py$",
    "reference_url": {},
    "doc_module": (),
    "backreferences_dir": None,
    "download_all_examples": False,
    # A string, not the class: the config must stay picklable (Sphinx caches it).
    "within_subsection_order": "FileNameSortKey",
}

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
    "joblib", "ray", "transformers",
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
