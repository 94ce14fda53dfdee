"""Every built-in component refuses a wrongly typed or non-finite parameter when it is built.

The values are derived from each constructor's own defaults: an integer parameter given a
string, a float parameter given NaN or a string, a boolean given a string, a string given an
int. Each must raise a :class:`~sisakit.SisakitError` naming the parameter, at construction
(sklearn's rule: bad parameters are caught before any fit allocates or trains).
"""

from __future__ import annotations

import inspect
import math

import pytest

import sisakit
from sisakit import plugins

KINDS = ("model", "sharder", "aggregator", "executor", "unlearner", "attacker", "influence")
BUILTIN_DIST = "sisakit"


def _builtins() -> list[tuple[str, str]]:
    out = []
    for kind in KINDS:
        for name in plugins.names(kind):
            if plugins.registration(kind, name).plugin.startswith(BUILTIN_DIST):
                out.append((kind, name))
    return out


def _bad_values(default: object) -> list[object]:
    if isinstance(default, bool):
        return ["yes"]
    if isinstance(default, int):
        return ["3", 2.5]
    if isinstance(default, float):
        return [math.nan, math.inf, "x"]
    if isinstance(default, str):
        return [3]
    return []


def _cases() -> list[tuple[str, str, str, object]]:
    cases = []
    for kind, name in _builtins():
        signature = inspect.signature(plugins.get(kind, name))
        for p in signature.parameters.values():
            if p.default is inspect.Parameter.empty or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            for bad in _bad_values(p.default):
                cases.append((kind, name, p.name, bad))
    return cases


CASES = _cases()


def test_the_corpus_covers_every_builtin_kind():
    kinds = {kind for kind, *_ in CASES}
    assert {"model", "sharder", "aggregator", "unlearner", "attacker"} <= kinds
    assert len(CASES) > 150


@pytest.mark.parametrize(("kind", "name", "param", "bad"), CASES,
                         ids=[f"{k}:{n}.{p}={b!r}" for k, n, p, b in CASES])
def test_bad_parameter_is_refused_at_construction(kind, name, param, bad):
    with pytest.raises(sisakit.SisakitError) as err:
        plugins.build(kind, name, **{param: bad})
    assert param in str(err.value), f"the error must name {param!r}: {err.value}"


# ---------------------------------------------------------------------- declared constraints
def _classes() -> list[tuple[str, str, type]]:
    return [(kind, name, plugins.get(kind, name)) for kind, name in _builtins()]


DECLARED = [(k, n, c) for k, n, c in _classes() if c.parameter_constraints]


def _declared_cases(values: str) -> list[tuple[str, str, str, object]]:
    return [(k, n, p, bad) for k, n, c in DECLARED
            for p, constraint in c.parameter_constraints.items()
            for bad in getattr(constraint, values)()]


INVALID, VALID = _declared_cases("invalid_values"), _declared_cases("valid_values")


@pytest.mark.parametrize(("kind", "name", "cls"), DECLARED, ids=[f"{k}:{n}" for k, n, _ in DECLARED])
def test_every_parameter_has_a_declared_constraint(kind, name, cls):
    assert set(cls.parameter_constraints) == set(cls.param_names()), (
        f"{kind} {name!r}: declare a constraint for every constructor parameter "
        f"(missing {sorted(set(cls.param_names()) - set(cls.parameter_constraints))}, unknown "
        f"{sorted(set(cls.parameter_constraints) - set(cls.param_names()))})")


@pytest.mark.parametrize(("kind", "name", "param", "bad"), INVALID,
                         ids=[f"{k}:{n}.{p}={b!r}" for k, n, p, b in INVALID])
def test_declared_invalid_value_is_refused_at_construction(kind, name, param, bad):
    with pytest.raises(sisakit.ValidationError) as err:
        plugins.build(kind, name, **{param: bad})
    assert param in str(err.value), f"the error must name {param!r}: {err.value}"


@pytest.mark.parametrize(("kind", "name", "param", "good"), VALID,
                         ids=[f"{k}:{n}.{p}={g!r}" for k, n, p, g in VALID])
def test_declared_valid_value_passes_its_constraint(kind, name, param, good):
    plugins.get(kind, name).parameter_constraints[param].check(param, good)
