"""Design metrics of the source tree (issue #18): how big the SISA class is, the longest
function, and how often code reaches into another object's or module's private names.

Counting rules (static, with :mod:`ast`, over ``src/sisakit``):

* a *private attribute read* is ``x._name`` (one leading underscore, not a dunder) where ``x`` is
  not ``self`` or ``cls``: another object's private state;
* a *private import* is ``from .mod import _name`` (or ``from sisakit.mod import _name``) of a
  module outside the importing module's own package, or ``mod._name`` on an imported module;
  importing a private *module* (``from . import _validation``, ``from ._device import x``) is
  not counted: underscore modules are the package's internal library.

Usage::

    python benchmarks/design_metrics.py [--out benchmarks/results/design_metrics.json]
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "sisakit"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _package_of(path: Path) -> str:
    rel = path.relative_to(ROOT).parent
    return "sisakit" + ("." + ".".join(rel.parts) if rel.parts else "")


def _resolve(module: str | None, level: int, path: Path) -> str:
    if level == 0:
        return module or ""
    base = _package_of(path).split(".")
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def scan(path: Path) -> dict:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    reads, imports = [], []
    own = _package_of(path)
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(node.module, node.level, path)
            for alias in node.names:
                if _private(alias.name) and target.startswith("sisakit"):
                    module_file = ROOT.joinpath(*target.split(".")[1:], alias.name + ".py")
                    is_module = module_file.exists() or (ROOT.joinpath(
                        *target.split(".")[1:], alias.name) / "__init__.py").exists()
                    if not is_module and not target.startswith(own + ".") and target != own:
                        imports.append(f"{target}.{alias.name}:{node.lineno}")
                    elif not is_module and target == own:
                        pass  # same package: the package's own business
                if not _private(alias.name):
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue
            if isinstance(base, ast.Call) and getattr(base.func, "id", None) == "super":
                continue  # the class's own (inherited) method
            reads.append(f"{ast.unparse(base)}.{node.attr}:{node.lineno}")
    return {"reads": reads, "imports": imports}


def longest_functions(path: Path, n: int = 3) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append((node.end_lineno - node.lineno + 1, f"{path.name}:{node.name}"))
    return sorted(out, reverse=True)[:n]


def sisa_class(paths: list[Path]) -> dict:
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == "SISA":
                methods = [b for b in node.body if isinstance(b, (ast.FunctionDef,
                                                                  ast.AsyncFunctionDef))]
                return {"file": str(path.relative_to(ROOT.parent)),
                        "lines": node.end_lineno - node.lineno + 1, "methods": len(methods)}
    return {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="write the metrics as JSON here")
    ap.add_argument("--list", action="store_true", help="print every counted access")
    args = ap.parse_args(argv)
    paths = sorted(ROOT.rglob("*.py"))
    per_module, reads, inside, imports, longest, engine_longest = {}, 0, 0, 0, [], []
    for path in paths:
        found = scan(path)
        if found["reads"] or found["imports"]:
            per_module[str(path.relative_to(ROOT))] = found
        # Inside the engine package (sisakit/sisa), modules use the facade's internals: the
        # package's own business, counted apart from reads that cross a package boundary.
        if path.parent.name == "sisa":
            inside += len(found["reads"])
            engine_longest += longest_functions(path)
        else:
            reads += len(found["reads"])
        imports += len(found["imports"])
        longest += longest_functions(path)
    engine_paths = [p for p in paths if p.name == "engine.py" or "sisa" in p.parent.name]
    result = {
        "sisa_class": sisa_class(engine_paths),
        "longest_functions": sorted(longest, reverse=True)[:5],
        "longest_engine_functions": sorted(engine_longest, reverse=True)[:3],
        "private_attribute_reads": reads,
        "private_reads_inside_engine_package": inside,
        "private_name_imports": imports,
        "modules_with_private_access": len(per_module),
    }
    if args.list:
        for module, found in per_module.items():
            for item in found["reads"] + found["imports"]:
                print(f"{module}: {item}")
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**result, "detail": per_module}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
