"""Documentation meta-tests (as in datasette): what exists must be documented.

These read the reStructuredText sources under ``docs/`` and never run Sphinx, so they are fast.
They check that

* every autodoc directive names an importable object (a typo would only show in a docs build);
* every hookspec of :mod:`sisakit.hookspecs` is documented and named by a test;
* every built-in component (``sisakit plugins``, plugin ``sisakit:...``) has its class
  documented and its registered name mentioned as a literal (````name````) in the docs;
* every public class and function of the public modules is documented;
* every ``sisakit`` subcommand has a ``.. sisakit-cli::`` entry in ``docs/cli.rst``;
* the example gallery (sphinx-gallery) is wired in, runs exactly the ``examples/plot_*.py``
  files, and every gallery example has a title, a paragraph, cells and an off-screen figure.

An object counts as documented when an ``auto*`` / ``py:*`` directive names it (under any of its
import paths) or an ``.. automodule::`` directive's ``:members:`` covers it (an explicit list,
or for a bare ``:members:`` the module's ``__all__``, else its public classes and functions).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import re
import types
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from sisakit import hookspecs, plugins
from sisakit.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TESTS = ROOT / "tests"
EXAMPLES = ROOT / "examples"
GALLERY_EXAMPLES = sorted(EXAMPLES.glob("plot_*.py"))

PUBLIC_MODULES = [
    "sisakit", "sisakit.engine", "sisakit.sisa", "sisakit.requests", "sisakit.constraints",
    "sisakit.data",
    "sisakit.datasets", "sisakit.split",
    "sisakit.metrics", "sisakit.plugins", "sisakit.hookspecs", "sisakit.testing", "sisakit.store",
    "sisakit.influence", "sisakit.fairness", "sisakit.membership", "sisakit.poisoning",
    "sisakit.experiment", "sisakit.plots", "sisakit.classification", "sisakit.sharders",
    "sisakit.models", "sisakit.aggregators", "sisakit.unlearners", "sisakit.attackers",
    "sisakit.baselines", "sisakit.errors", "sisakit.executors", "sisakit.cli",
    "sisakit.coordinator", "sisakit.unlearners.dual_memory", "sisakit.models.t5rec",
]

_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. (?P<kind>auto\w+|py:\w+)::[ \t]*(?P<target>\S*)")
_OPTION = re.compile(r"^[ \t]+:(?P<name>[\w-]+):[ \t]*(?P<value>.*)$")
_NO_TARGET = {"py:currentmodule", "py:module"}


def _rst_files() -> list[Path]:
    """The hand-written sources: not the build, nor what sphinx-gallery generates into docs/."""
    return sorted(p for p in DOCS.rglob("*.rst")
                  if not {"_build", "auto_examples"} & set(p.relative_to(DOCS).parts)
                  and p.name != "sg_execution_times.rst")


@cache
def _docs_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in _rst_files())


def _directives() -> list[tuple[str, str, str, dict[str, str]]]:
    """``(where, kind, target, options)`` of every autodoc / py directive, with qualified names.

    Relative ``py:*`` targets are qualified with the current module (set by ``automodule``,
    ``py:module`` and ``py:currentmodule``). Option values continued on indented lines are
    joined.
    """
    found = []
    for path in _rst_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        module = ""
        for i, line in enumerate(lines):
            m = _DIRECTIVE.match(line)
            if not m:
                continue
            kind, target = m["kind"], m["target"]
            if kind in ("automodule", "py:module", "py:currentmodule"):
                module = target if target != "None" else ""
            options: dict[str, str] = {}
            last = None
            for follow in lines[i + 1:]:
                opt = _OPTION.match(follow)
                if opt:
                    last = opt["name"]
                    options[last] = opt["value"].strip()
                elif last and follow.strip() and follow.startswith((" ", "\t")) and \
                        not follow.strip().startswith(":"):
                    if len(follow) - len(follow.lstrip()) > len(m["indent"]) + 3:
                        options[last] += " " + follow.strip()  # continued option value
                    else:
                        break
                else:
                    break
            if kind.startswith("py:") and kind not in _NO_TARGET and module and \
                    not target.startswith(module + ".") and not _importable(target):
                target = f"{module}.{target}"
            found.append((f"docs/{path.relative_to(DOCS)}:{i + 1}", kind, target, options))
    return found


def _resolve(dotted: str) -> Any:
    """The object at ``dotted``: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module in {dotted!r}")


def _importable(dotted: str) -> bool:
    try:
        _resolve(dotted)
    except (ImportError, AttributeError):
        return False
    return True


def _module_members(module: types.ModuleType) -> list[str]:
    """What a bare ``:members:`` of ``automodule`` documents (autodoc's rule, roughly)."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [name for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
            and getattr(obj, "__module__", None) == module.__name__]


def _public_api(module: types.ModuleType) -> list[str]:
    """The public classes and functions a module offers (constants and submodules excluded)."""
    return [name for name in _module_members(module)
            if inspect.isclass(getattr(module, name, None))
            or inspect.isfunction(getattr(module, name, None))]


@cache
def _documented() -> tuple[list[Any], frozenset[str]]:
    """The documented objects (compared by identity) and the names the directives used."""
    objects: list[Any] = []
    names: set[str] = set()
    for _, kind, target, options in _directives():
        if kind in _NO_TARGET or not target:
            continue
        obj = _resolve(target)
        objects.append(obj)
        names.add(target)
        if kind == "automodule" and "members" in options:
            listed = [n.strip() for n in options["members"].split(",") if n.strip()]
            for name in listed or _module_members(obj):
                objects.append(getattr(obj, name))
                names.add(f"{target}.{name}")
    return objects, frozenset(names)


def _is_documented(obj: Any) -> bool:
    return any(o is obj for o in _documented()[0])


def _qualname(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


# ---------------------------------------------------------------------------------------- tests
def test_docs_sources_exist():
    assert (DOCS / "conf.py").is_file()
    assert (DOCS / "index.rst").is_file()
    assert len(_directives()) > 50, "the directive parser found suspiciously few directives"


def test_every_autodoc_target_imports():
    broken = []
    for where, kind, target, options in _directives():
        if kind in _NO_TARGET or not target:
            continue
        try:
            obj = _resolve(target)
            if kind == "automodule" and options.get("members"):
                for name in options["members"].split(","):
                    if name.strip():
                        getattr(obj, name.strip())
        except (ImportError, AttributeError) as exc:
            broken.append(f"{where}: .. {kind}:: {target} ({exc})")
    assert not broken, "docs name objects that do not exist:\n  " + "\n  ".join(broken)


def _hookspecs() -> list[str]:
    return sorted(name for name, f in vars(hookspecs).items() if hasattr(f, "sisakit_spec"))


def test_there_are_hookspecs():
    assert "register_sharders" in _hookspecs()


@pytest.mark.parametrize("hook", _hookspecs())
def test_hookspec_is_documented(hook):
    assert _is_documented(getattr(hookspecs, hook)), (
        f"hookspec {hook} is not documented: add it to docs (e.g. '.. automodule:: "
        "sisakit.hookspecs' with ':members:' in docs/api.rst)")


@pytest.mark.parametrize("hook", _hookspecs())
def test_hookspec_is_exercised_by_a_test(hook):
    pattern = re.compile(rf"\b{re.escape(hook)}\b")
    users = [p.name for p in sorted(TESTS.glob("test_*.py"))
             if p.name != Path(__file__).name and pattern.search(p.read_text(encoding="utf-8"))]
    assert users, (f"hookspec {hook} is not exercised by any test: implement it in a test plugin "
                   "(see tests/test_hookspecs.py)")


def _builtin_components() -> list[plugins.Registration]:
    return [r for r in plugins.list_components() if r.plugin.startswith("sisakit:")]


def test_there_are_builtin_components():
    assert len(_builtin_components()) > 10


def test_every_builtin_component_is_documented():
    text = _docs_text()
    missing = []
    for reg in _builtin_components():
        if not _is_documented(reg.cls):
            missing.append(f"{reg.kind} {reg.name!r}: class {_qualname(reg.cls)} has no autodoc "
                           "entry (autoclass, or a module's :members:)")
        if f"``{reg.name}``" not in text:
            missing.append(f"{reg.kind} {reg.name!r}: the name never appears as ``{reg.name}`` in "
                           "docs/*.rst")
    assert not missing, "undocumented built-in components:\n  " + "\n  ".join(missing)


def test_every_public_class_and_function_is_documented():
    missing = []
    for modname in PUBLIC_MODULES:
        module = importlib.import_module(modname)
        for name in _public_api(module):
            obj = getattr(module, name)
            if not _is_documented(obj):
                missing.append(f"{modname}.{name} ({_qualname(obj)})")
    assert not missing, "public API without documentation:\n  " + "\n  ".join(sorted(missing))


def _subcommands() -> list[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def test_every_cli_subcommand_is_documented():
    cli = (DOCS / "cli.rst").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. sisakit-cli::[ \t]*(\S+)", cli, flags=re.M))
    commands = _subcommands()
    assert commands
    missing = [c for c in commands if c not in documented]
    assert not missing, ("subcommands without a '.. sisakit-cli:: NAME' entry in docs/cli.rst: "
                         + ", ".join(missing))
    unknown = documented - set(commands)
    assert not unknown, f"docs/cli.rst documents subcommands that do not exist: {sorted(unknown)}"


# ---------------------------------------------------------------------------------- gallery
@cache
def _gallery_conf() -> dict[str, Any]:
    """``sphinx_gallery_conf`` of docs/conf.py, read without running conf.py."""
    tree = ast.parse((DOCS / "conf.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "sphinx_gallery_conf" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("docs/conf.py defines no sphinx_gallery_conf")


def test_gallery_is_wired_in():
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    assert '"sphinx_gallery.gen_gallery"' in conf
    gallery = _gallery_conf()
    assert gallery["examples_dirs"] == "../examples"
    assert gallery["gallery_dirs"] == "auto_examples"
    assert re.search(r"^\s+auto_examples/index$", (DOCS / "index.rst").read_text(encoding="utf-8"),
                     flags=re.M), "docs/index.rst must list auto_examples/index in its toctree"
    assert (EXAMPLES / "README.txt").is_file(), "sphinx-gallery needs examples/README.txt"
    assert len(GALLERY_EXAMPLES) >= 5


def test_gallery_runs_exactly_the_plot_examples():
    gallery = _gallery_conf()
    run, ignore = gallery["filename_pattern"], gallery["ignore_pattern"]
    for path in sorted(EXAMPLES.glob("*.py")):
        # sphinx-gallery matches the bare file name in some places, the full path in others.
        for name in (path.name, str(path)):
            if path.name.startswith("plot_"):
                assert re.search(run, str(path)) and not re.search(ignore, name), path.name
            else:  # e.g. movielens_study.py: a long study, never run by the docs build
                assert re.search(ignore, name), f"{path.name} would be collected by the gallery"


@pytest.mark.parametrize("path", GALLERY_EXAMPLES, ids=lambda p: p.name)
def test_gallery_example_is_well_formed(path):
    source = path.read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source), clean=False)
    assert doc, f"{path.name}: a gallery example starts with a docstring (title and paragraph)"
    lines = doc.strip("\n").splitlines()
    assert len(lines) >= 4 and lines[0].strip(), f"{path.name}: the docstring starts with a title"
    assert set(lines[1]) == {"="} and len(lines[1]) >= len(lines[0]), (
        f"{path.name}: underline the title with '=' (at least as long as the title)")
    assert not lines[2].strip() and lines[3].strip(), f"{path.name}: a paragraph follows the title"
    assert source.count("\n# %%\n") >= 2, f"{path.name}: split the example into '# %%' cells"
    assert 'matplotlib.use("Agg")' in source, (
        f"{path.name}: select the Agg backend, so that running the script opens no window")
    assert "plt.show(" not in source and "savefig(" not in source, (
        f"{path.name}: leave the figure open for the gallery's scraper; do not show or save it")
    assert "plt.subplots(" in source or "plt.figure(" in source, (
        f"{path.name}: end with a matplotlib figure (the gallery's thumbnail)")
    assert "workdir=" not in source, (
        f"{path.name}: use the default temporary run directory (no workdir)")
