"""Experiment sweeps: fit a grid of SISA configurations, forget, measure, write results files.

A sweep is described by a TOML file (or the equivalent dict; the schema is in the docs page
*Experiments and plots*). Every combination of the ``[grid]`` values is one *cell*: the cell fits
a SISA ensemble on the training split, evaluates it, and then runs every forget *scenario* on an
independent copy of the fitted run, so scenarios never contaminate each other. The sweep writes

* ``results.csv`` — one row per cell × scenario, flat columns (see :data:`RESULT_COLUMNS`);
* ``run.json`` — the normalised config, seeds, library versions, machine, per-cell timings and
  errors;
* ``cells/<key>.json`` — one file per finished cell, used to resume an interrupted sweep.

A cell is identified by a stable hash of its own configuration, the data fingerprint, the split,
the scenarios and the evaluation settings (:func:`cell_key`), so a resumed sweep skips exactly the
cells whose inputs did not change. A cell that raises records the error type and message and the
sweep goes on; failed cells are retried on the next resumed run.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import itertools
import json
import logging
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import datasets, fairness, metrics, plugins, split
from ._clock import utc_now
from ._rng import derive_seed
from ._validation import MAX_COUNT, MAX_SEED, MAX_STEPS, MAX_THREADS, make_out_dir
from ._version import __version__
from .data import Interactions, labelled
from .errors import ValidationError
from .influence import compare
from .sisa import SISA, parameters_equal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "RESULT_COLUMNS",
    "SCENARIO_KINDS",
    "ExperimentResult",
    "cell_key",
    "load_config",
    "run",
]

logger = logging.getLogger(__name__)

#: Forget scenarios a config may list under ``[[scenarios]]``.
SCENARIO_KINDS: tuple[str, ...] = ("user", "random", "shard", "activity", "attribute")

_REQUIRED = object()  # marks a key without a default


# ---------------------------------------------------------------------------------- schema
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_TYPE_CHECKS: dict[str, tuple[Any, str]] = {
    "int": (_is_int, "an integer"),
    "float": (_is_num, "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "scalar": (lambda v: isinstance(v, (str, int, float, bool)), "a string, number or boolean"),
    "strlist": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                "a list of strings"),
}

@dataclass(frozen=True)
class _Range:
    """An inclusive range of allowed numbers (a plain int limit is a minimum only)."""

    low: float
    high: float


# section -> key -> (type, default, minimum, range or choices)
_EXPERIMENT: dict[str, tuple[str, Any, Any]] = {
    "name": ("str", "experiment", None),
    "device": ("str", "auto", ("auto", "cpu", "cuda")),
    "threads_per_shard": ("int", 1, _Range(1, MAX_THREADS)),
    "full_retrain": ("bool", False, None),
    "keep_runs": ("bool", False, None),
}
_DATA_COMMON: dict[str, tuple[str, Any, Any]] = {
    "source": ("str", "synthetic", ("synthetic", "movielens", "file")),
}
_DATA: dict[str, dict[str, tuple[str, Any, Any]]] = {
    "synthetic": {
        "n_users": ("int", 1000, _Range(2, 10**8)),
        "n_items": ("int", 300, _Range(2, 10**7)),
        "mean_interactions": ("float", 20.0, _Range(0, 10**6)),
        "n_factors": ("int", 8, _Range(1, 1024)),
        "seed": ("int", 0, _Range(0, MAX_SEED)),
    },
    "movielens": {
        "name": ("str", _REQUIRED, ("ml-100k", "ml-1m")),
        "path": ("str", _REQUIRED, None),
        "min_rating": ("float", None, None),
    },
    "file": {
        "path": ("str", _REQUIRED, None),
        "user_col": ("str", "user", None),
        "item_col": ("str", "item", None),
        "rating_col": ("str", None, None),
        "timestamp_col": ("str", None, None),
        "min_rating": ("float", None, None),
    },
    "given": {},
}
_SPLIT: dict[str, tuple[str, Any, Any]] = {
    "method": ("str", "holdout", ("holdout", "leave_last_out")),
    "test_fraction": ("float", 0.2, None),
    "n": ("int", 1, _Range(1, MAX_COUNT)),
    "seed": ("int", 0, _Range(0, MAX_SEED)),
}
# grid axis -> (element type, default list, minimum)
_GRID: dict[str, tuple[str, list[Any], Any]] = {
    "model": ("str", ["bpr-mf"], None),
    "sharder": ("str", ["random-user"], None),
    "aggregator": ("str", ["mean"], None),
    "n_shards": ("int", [5], _Range(1, MAX_COUNT)),
    "n_slices": ("int", [1], _Range(1, MAX_COUNT)),
    "epochs": ("int", [10], _Range(1, MAX_STEPS)),
    "seed": ("int", [0], _Range(0, MAX_SEED)),
}
_GRID_KIND = {"model": "model", "sharder": "sharder", "aggregator": "aggregator"}
_EVALUATION: dict[str, tuple[str, Any, Any]] = {
    "ndcg_k": ("int", 10, _Range(1, MAX_COUNT)),
    "recall_k": ("int", 20, _Range(1, MAX_COUNT)),
    "jaccard_k": ("int", 10, _Range(1, MAX_COUNT)),
    "groups": ("strlist", [], None),
}
# scenario kind -> its own keys (besides name and kind)
_SCENARIO: dict[str, dict[str, tuple[str, Any, Any]]] = {
    "user": {},
    "random": {"size": ("int", 10, _Range(1, 10**9))},
    "shard": {"shard": ("int", 0, _Range(0, MAX_COUNT))},
    "activity": {"quantile": ("float", 0.2, None), "side": ("str", "bottom", ("bottom", "top"))},
    "attribute": {"attribute": ("str", _REQUIRED, None), "value": ("scalar", _REQUIRED, None)},
}
_SECTIONS = ("experiment", "data", "split", "grid", "params", "evaluation", "scenarios")


def _bad(path: str, problem: str, fix: str) -> ValidationError:
    return ValidationError(f"experiment config: {path}: {problem}; {fix}")


def _unknown_keys(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
            raise _bad(f"{where}.{key}" if where else str(key), "unknown key",
                       f"remove it or fix the spelling ({hint})")


def _check_value(path: str, value: Any, typ: str, limit: Any) -> Any:
    check, what = _TYPE_CHECKS[typ]
    if not check(value):
        raise _bad(path, f"expected {what}, got {value!r} ({type(value).__name__})",
                   f"write {what}")
    if isinstance(limit, tuple) and value not in limit:
        raise _bad(path, f"{value!r} is not allowed", f"use one of {', '.join(map(repr, limit))}")
    if isinstance(limit, int) and not isinstance(limit, bool) and value < limit:
        raise _bad(path, f"must be >= {limit}, got {value!r}", f"use a value >= {limit}")
    if isinstance(limit, _Range) and not limit.low <= value <= limit.high:
        span = f"[{limit.low:,}, {limit.high:,}]"
        raise _bad(path, f"must lie in {span}, got {value!r}", f"use a value in {span}")
    return float(value) if typ == "float" else value


def _table(raw: Mapping[str, Any], key: str, where: str = "") -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise _bad(f"{where}{key}", f"expected a table, got {value!r}",
                   f"write it as a [{where}{key}] section")
    return dict(value)


def _fill(table: Mapping[str, Any], spec: Mapping[str, tuple[str, Any, Any]], where: str
          ) -> dict[str, Any]:
    _unknown_keys(table, list(spec), where)
    out: dict[str, Any] = {}
    for key, (typ, default, limit) in spec.items():
        if key in table:
            out[key] = _check_value(f"{where}.{key}", table[key], typ, limit)
        elif default is _REQUIRED:
            raise _bad(f"{where}.{key}", "missing required key", f"add {key} = ... to [{where}]")
        else:
            out[key] = list(default) if isinstance(default, list) else default
    return out


def _fraction(path: str, value: float, *, closed_right: bool) -> None:
    ok = 0 < value <= 1 if closed_right else 0 < value < 1
    if not ok:
        rng = "(0, 1]" if closed_right else "(0, 1)"
        raise _bad(path, f"must lie in {rng}, got {value!r}", f"use a fraction in {rng}")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(
            f"cannot read experiment config {path}: {exc.strerror or exc}; check the path"
        ) from exc
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise ValidationError(
            f"experiment config {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} on "
            f"line {line}); TOML files must be UTF-8 — re-save it with UTF-8 encoding"
        ) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(
            f"{path} is not valid TOML ({exc}); fix the syntax (see the TOML schema in the "
            "'Experiments and plots' docs page)"
        ) from exc


def load_config(config: str | os.PathLike[str] | Mapping[str, Any], *,
                data_given: bool = False) -> dict[str, Any]:
    """Read and validate an experiment config, filling in every default.

    Parameters
    ----------
    config : path or mapping
        A TOML file or the equivalent (already parsed) dict.
    data_given : bool
        True when the data is passed to :func:`run` directly; the config then must not name a
        data source (``[data]`` absent or ``source = "given"``).

    Returns
    -------
    dict
        The normalised config: every section and key present, grid axes as lists, scenarios as
        a list of tables with unique names. Relative data paths are resolved against the config
        file's folder. ``"config_file"`` holds the file's path (None for a dict).

    Raises
    ------
    ValidationError
        On bad TOML, an unknown section or key, a wrong value type or range, an unknown plugin
        name or component parameter, or a duplicate scenario name. The message names the key.
    """
    if isinstance(config, Mapping):
        raw, base, source_file = dict(config), Path.cwd(), None
    elif isinstance(config, (str, os.PathLike)):
        path = Path(config)
        raw, base, source_file = _read_toml(path), path.resolve().parent, str(path)
    else:
        raise ValidationError(
            f"config must be a path to a TOML file or a dict, got {type(config).__name__}")
    _unknown_keys(raw, _SECTIONS, "")
    cfg: dict[str, Any] = {"config_file": source_file}
    cfg["experiment"] = _fill(_table(raw, "experiment"), _EXPERIMENT, "experiment")

    data_raw = _table(raw, "data")
    default_source = "given" if data_given else "synthetic"
    source = data_raw.get("source", default_source)
    if data_given and source != "given":
        raise _bad("data.source", f"the data was passed to run() but the config names source "
                   f"{source!r}", "remove the [data] section or set source = \"given\"")
    if not data_given and source == "given":
        raise _bad("data.source", "'given' needs the data passed to run(data=...)",
                   "pass data= or choose 'synthetic', 'movielens' or 'file'")
    if source != "given":
        _check_value("data.source", source, "str", _DATA_COMMON["source"][2])
    spec = _DATA[source]
    rest = {k: v for k, v in data_raw.items() if k != "source"}
    for key in rest:
        if key not in spec:
            others = [s for s, keys in _DATA.items() if key in keys]
            fix = (f"set source = {others[0]!r} or remove it" if others
                   else f"keys of this source: {', '.join(spec) or '(none)'}")
            raise _bad(f"data.{key}", f"not a key of data source {source!r}", fix)
    cfg["data"] = {"source": source, **_fill(rest, spec, "data")}
    if "path" in cfg["data"]:
        p = Path(cfg["data"]["path"]).expanduser()
        cfg["data"]["path"] = str(p if p.is_absolute() else base / p)

    cfg["split"] = _fill(_table(raw, "split"), _SPLIT, "split")
    _fraction("split.test_fraction", cfg["split"]["test_fraction"], closed_right=False)

    grid_raw = _table(raw, "grid")
    _unknown_keys(grid_raw, list(_GRID), "grid")
    grid: dict[str, list[Any]] = {}
    for axis, (typ, default, limit) in _GRID.items():
        values = grid_raw.get(axis, default)
        values = list(values) if isinstance(values, list) else [values]
        if not values:
            raise _bad(f"grid.{axis}", "empty list", "give at least one value")
        for i, v in enumerate(values):
            _check_value(f"grid.{axis}[{i}]", v, typ, limit)
        if len(set(values)) != len(values):
            raise _bad(f"grid.{axis}", f"duplicate values in {values}", "list each value once")
        if axis in _GRID_KIND:
            known = plugins.names(_GRID_KIND[axis])
            for i, v in enumerate(values):
                if v not in known:
                    raise _bad(f"grid.{axis}[{i}]", f"no {axis} named {v!r}",
                               f"use one of {', '.join(known)} (see `sisakit plugins`)")
        grid[axis] = values
    cfg["grid"] = grid

    params_raw = _table(raw, "params")
    _unknown_keys(params_raw, list(_GRID_KIND), "params")
    params: dict[str, dict[str, dict[str, Any]]] = {}
    for kind in _GRID_KIND:
        by_name = _table(params_raw, kind, "params.")
        params[kind] = {}
        for name, table in by_name.items():
            where = f"params.{kind}.{name}"
            if name not in plugins.names(kind):
                raise _bad(where, f"no {kind} named {name!r}",
                           f"use one of {', '.join(plugins.names(kind))}")
            if not isinstance(table, Mapping):
                raise _bad(where, f"expected a table of constructor arguments, got {table!r}",
                           f"write it as [{where}]")
            _unknown_keys(table, plugins.get(kind, name).param_names(), where)
            params[kind][name] = dict(table)
    cfg["params"] = params

    cfg["evaluation"] = _fill(_table(raw, "evaluation"), _EVALUATION, "evaluation")

    scen_raw = raw.get("scenarios", [{"kind": "user"}])
    if not isinstance(scen_raw, list) or not scen_raw:
        raise _bad("scenarios", f"expected a non-empty array of tables, got {scen_raw!r}",
                   "add one or more [[scenarios]] sections")
    scenarios: list[dict[str, Any]] = []
    for i, sc in enumerate(scen_raw):
        where = f"scenarios[{i}]"
        if not isinstance(sc, Mapping):
            raise _bad(where, f"expected a table, got {sc!r}", "write it as a [[scenarios]] section")
        if "kind" not in sc:
            raise _bad(f"{where}.kind", "missing required key",
                       f"add kind = one of {', '.join(map(repr, SCENARIO_KINDS))}")
        kind = _check_value(f"{where}.kind", sc["kind"], "str", SCENARIO_KINDS)
        name = _check_value(f"{where}.name", sc.get("name", kind), "str", None)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            # The name becomes a directory name and a results value.
            raise _bad(f"{where}.name", f"{name!r} is not a plain name",
                       "use letters, digits, '.', '_' and '-' only, e.g. \"one-user\"")
        rest = {k: v for k, v in sc.items() if k not in ("kind", "name")}
        entry = {"name": name, "kind": kind, **_fill(rest, _SCENARIO[kind], where)}
        if kind == "activity":
            _fraction(f"{where}.quantile", entry["quantile"], closed_right=True)
        scenarios.append(entry)
    names = [s["name"] for s in scenarios]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _bad("scenarios", f"duplicate scenario name(s) {dup}",
                   "give each [[scenarios]] a unique name = ...")
    cfg["scenarios"] = scenarios
    return cfg


# ---------------------------------------------------------------------------------- data
def _load_data(cfg: Mapping[str, Any]) -> Interactions:
    d = cfg["data"]
    if d["source"] == "synthetic":
        return datasets.synthetic(n_users=d["n_users"], n_items=d["n_items"],
                                  n_factors=d["n_factors"],
                                  mean_interactions=d["mean_interactions"], seed=d["seed"])
    if d["source"] == "movielens":
        return datasets.load_movielens(d["name"], d["path"], min_rating=d["min_rating"])
    return datasets.read_interactions(
        d["path"], user_col=d["user_col"], item_col=d["item_col"], rating_col=d["rating_col"],
        timestamp_col=d["timestamp_col"], min_rating=d["min_rating"])


def _split(cfg: Mapping[str, Any], data: Interactions) -> tuple[Interactions, Interactions]:
    s = cfg["split"]
    if s["method"] == "holdout":
        return split.holdout(data, test_fraction=s["test_fraction"], seed=s["seed"])
    return split.leave_last_out(data, n=s["n"])


def _fingerprint(data: Interactions) -> str:
    """Content hash of the records and the id space (what a cell's results depend on)."""
    h = hashlib.sha256()
    for arr in (data.user_ids, data.item_ids, data.user_idx, data.item_idx, data.record_id,
                data.item_active):
        h.update(str(arr.dtype).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    for key in sorted(data.user_attributes):
        h.update(key.encode())
        h.update(np.asarray(data.user_attributes[key]).astype(str).tobytes())
    return h.hexdigest()[:16]


def _check_against_data(cfg: Mapping[str, Any], train: Interactions) -> None:
    """Checks that need the data (run before any cell so a typo fails fast)."""
    for i, sc in enumerate(cfg["scenarios"]):
        if sc["kind"] == "attribute" and sc["attribute"] not in train.user_attributes:
            raise _bad(f"scenarios[{i}].attribute", f"the data has no user attribute "
                       f"{sc['attribute']!r}", f"use one of {sorted(train.user_attributes)}")
    for i, g in enumerate(cfg["evaluation"]["groups"]):
        if g not in ("activity", "active") and g not in train.user_attributes:
            raise _bad(f"evaluation.groups[{i}]", f"the data has no user attribute {g!r}",
                       f"use 'activity', 'active' or one of {sorted(train.user_attributes)}")
    k = max(cfg["evaluation"][key] for key in ("ndcg_k", "recall_k", "jaccard_k"))
    if k > train.n_items:
        raise _bad("evaluation", f"a cut-off k={k} exceeds the {train.n_items} items",
                   f"use k <= {train.n_items}")


# ---------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class _Cell:
    model: str
    sharder: str
    aggregator: str
    n_shards: int
    n_slices: int
    epochs: int
    seed: int

    def params(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        p = cfg["params"]
        return {
            "model": self.model, "model_params": p["model"].get(self.model, {}),
            "sharder": self.sharder, "sharder_params": p["sharder"].get(self.sharder, {}),
            "aggregator": self.aggregator,
            "aggregator_params": p["aggregator"].get(self.aggregator, {}),
            "n_shards": self.n_shards, "n_slices": self.n_slices, "epochs": self.epochs,
            "seed": self.seed,
        }


def _cells(cfg: Mapping[str, Any]) -> list[_Cell]:
    g = cfg["grid"]
    axes = ("model", "sharder", "aggregator", "n_shards", "n_slices", "epochs", "seed")
    return [_Cell(*values) for values in itertools.product(*(g[a] for a in axes))]


def cell_key(cell_params: Mapping[str, Any], cfg: Mapping[str, Any], data_fingerprint: str) -> str:
    """Stable 16-hex-digit key of one cell: a SHA-256 of everything its results depend on.

    Parameters
    ----------
    cell_params : mapping
        The cell's model/sharder/aggregator names and parameters, shard and slice counts,
        epochs and seed.
    cfg : mapping
        The normalised config (:func:`load_config`); its split, scenarios, evaluation, device,
        threads and ``full_retrain`` settings enter the key.
    data_fingerprint : str
        Content hash of the training data.
    """
    e = cfg["experiment"]
    payload = {
        "cell": dict(cell_params), "data": data_fingerprint, "split": cfg["split"],
        "scenarios": cfg["scenarios"], "evaluation": cfg["evaluation"],
        "device": e["device"], "threads_per_shard": e["threads_per_shard"],
        "full_retrain": e["full_retrain"],
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _scenario_seed(seed: int, name: str) -> int:
    # Keyed by the scenario's name, not its position or the shard count, so every cell with
    # the same seed forgets the same users and adding a scenario changes no other one.
    return derive_seed(seed, int(hashlib.sha256(name.encode()).hexdigest()[:12], 16))


def _sorted_by_record(data: Interactions) -> Interactions:
    order = np.argsort(data.record_id, kind="stable")
    return data if np.array_equal(order, np.arange(len(order))) else data.take(order)


def _assignment(sisa: Any, train: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """The (shard, slice) of every record of ``train`` (record-id order) as ``fit`` drew them.

    Read from the fitted run (which stores them in record-id order), not recomputed: a
    data-dependent sharder (e.g. ``receraser-*``, which pre-trains a model) would redo its work.
    """
    if len(sisa.data) != len(train):  # pragma: no cover - the run was fitted on ``train``
        raise ValidationError("the run was not fitted on this training data")
    shard, slice_ = sisa.assignment
    return np.array(shard, dtype=np.int64), np.array(slice_, dtype=np.int64)


def _select_users(sc: Mapping[str, Any], train: Interactions, shard: np.ndarray, seed: int
                  ) -> np.ndarray:
    """User indices the scenario forgets (only users with training records)."""
    counts = train.user_counts()
    active = np.flatnonzero(counts > 0)
    kind = sc["kind"]
    if kind in ("user", "random"):
        size = 1 if kind == "user" else sc["size"]
        if size > len(active):
            raise ValidationError(f"scenario {sc['name']!r} asks for {size} users but only "
                                  f"{len(active)} have training data; lower size")
        rng = np.random.default_rng(_scenario_seed(seed, sc["name"]))
        return np.sort(rng.choice(active, size=size, replace=False))
    if kind == "shard":
        n_shards = int(shard.max()) + 1 if len(shard) else 0
        if sc["shard"] >= n_shards:
            raise ValidationError(f"scenario {sc['name']!r} forgets shard {sc['shard']} but the "
                                  f"cell has {n_shards} shard(s); use shard < {n_shards}")
        data = _sorted_by_record(train)
        return np.unique(data.user_idx[shard == sc["shard"]])
    if kind == "activity":
        # Least (or most) active first; ties broken by user index so the group is well defined.
        order = active[np.lexsort((active, counts[active]))]
        n = max(1, math.ceil(sc["quantile"] * len(order)))
        return np.sort(order[:n] if sc["side"] == "bottom" else order[len(order) - n:])
    col = np.asarray(train.user_attributes[sc["attribute"]])
    match = np.asarray(col.astype(str) == str(sc["value"]))
    picked = np.intersect1d(np.flatnonzero(match), active)
    if len(picked) == 0:
        values = sorted(set(col[labelled(col)].astype(str).tolist()))[:20]
        raise ValidationError(f"scenario {sc['name']!r}: no user with training data has "
                              f"{sc['attribute']} = {sc['value']!r}; values present: {values}")
    return picked


def _jaccard(before_top: np.ndarray, after_top: np.ndarray, k: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Per-user Jaccard@k and overlap size of two sets of top-k lists (item-id arrays)."""
    res = compare(before_top, after_top, k=k, measures=["jaccard"])
    return res.jaccard, res.overlap


def _group_columns(before: Any, after: Any, train: Interactions, test: Interactions,
                   cfg: Mapping[str, Any], users: np.ndarray) -> dict[str, float]:
    """``<metric>_<phase>[<group>=<value>]`` columns from :func:`sisakit.fairness.group_deltas`."""
    ev = cfg["evaluation"]
    metrics = (f"ndcg@{ev['ndcg_k']}", f"recall@{ev['recall_k']}")
    out: dict[str, float] = {}
    for by in ev["groups"]:
        d = fairness.group_deltas(before, after, train, test, by,
                                  sorted({ev["ndcg_k"], ev["recall_k"]}), users=users)
        for metric in metrics:
            for phase in ("before", "after"):
                for label, value in zip(d.groups.tolist(), getattr(d, phase)[metric].tolist(),
                                        strict=True):
                    out[f"{metric}_{phase}[{by}={label}]"] = float(value)
    return out


#: Fixed columns of ``results.csv`` for the default cut-offs (NDCG@10, Recall@20, Jaccard@10).
#: Other cut-offs rename the metric columns; ``evaluation.groups`` adds one column per metric,
#: phase and group value, e.g. ``ndcg@10_after[gender=F]``.
RESULT_COLUMNS: tuple[str, ...] = (
    "cell", "model", "sharder", "aggregator", "n_shards", "n_slices", "epochs", "seed",
    "status", "error_type", "error_message", "fit_seconds", "ndcg@10", "recall@20",
    "scenario", "scenario_kind", "users_forgotten", "records_removed", "forget_seconds",
    "forget_cpu_seconds", "shards_retrained", "slices_retrained", "work_fraction",
    "ndcg@10_before", "ndcg@10_after", "recall@20_before", "recall@20_after",
    "jaccard@10", "jaccard@10_hist", "full_retrain_seconds", "full_retrain_ndcg@10",
    "full_retrain_recall@20", "exact",
)


def _columns(cfg: Mapping[str, Any]) -> list[str]:
    """:data:`RESULT_COLUMNS` with the configured cut-offs."""
    ev = cfg["evaluation"]
    nd, rc, jc = f"ndcg@{ev['ndcg_k']}", f"recall@{ev['recall_k']}", f"jaccard@{ev['jaccard_k']}"
    return [c.replace("ndcg@10", nd).replace("recall@20", rc).replace("jaccard@10", jc)
            for c in RESULT_COLUMNS]


@dataclass
class _Context:
    cfg: dict[str, Any]
    train: Interactions
    test: Interactions
    out: Path
    progress: bool | None
    fingerprint: str


def _quality(model: Any, train: Interactions, test: Interactions, cfg: Mapping[str, Any],
             users: np.ndarray | None = None) -> dict[str, Any]:
    ev = cfg["evaluation"]
    return metrics.evaluate(model, train, test, k=sorted({ev["ndcg_k"], ev["recall_k"]}),
                            users=users)


def _run_cell(cell: _Cell, key: str, ctx: _Context) -> dict[str, Any]:
    """Fit one cell and run every scenario; errors inside a scenario stay in its row."""
    cfg, train, test = ctx.cfg, ctx.train, ctx.test
    exp, ev = cfg["experiment"], cfg["evaluation"]
    nd, rc, jk = f"ndcg@{ev['ndcg_k']}", f"recall@{ev['recall_k']}", ev["jaccard_k"]
    groups = ev["groups"]
    params = cell.params(cfg)
    keep = exp["keep_runs"]
    cell_dir = ctx.out / "runs" / key
    shutil.rmtree(cell_dir, ignore_errors=True)  # leftovers of an interrupted attempt
    scratch = Path(tempfile.mkdtemp(prefix=f"sisakit-cell-{key}-"))
    root = cell_dir if keep else scratch
    common = dict(
        model=cell.model, sharder=cell.sharder, aggregator=cell.aggregator,
        model_params=params["model_params"], sharder_params=params["sharder_params"],
        aggregator_params=params["aggregator_params"], n_shards=cell.n_shards,
        n_slices=cell.n_slices, epochs=cell.epochs, seed=cell.seed, device=exp["device"],
        threads_per_shard=exp["threads_per_shard"], progress=ctx.progress,
    )
    base = {"cell": key, **{a: getattr(cell, a) for a in
                            ("model", "sharder", "aggregator", "n_shards", "n_slices", "epochs",
                             "seed")}}
    timings: dict[str, Any] = {"scenarios": {}}
    rows: list[dict[str, Any]] = []
    t_cell = time.perf_counter()
    try:
        t0 = time.perf_counter()
        fitted = SISA(workdir=root / "fitted", **common).fit(train)
        timings["fit_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        q = _quality(fitted, train, test, cfg)
        timings["eval_seconds"] = time.perf_counter() - t0
        shard, slice_ = _assignment(fitted, train)
        base.update({"status": "ok", "fit_seconds": timings["fit_seconds"], nd: q[nd], rc: q[rc]})
        before_top = fitted.recommend(train.user_ids, k=jk)
    except Exception as exc:  # a failed cell is recorded and the sweep goes on
        logger.warning("cell %s (%s) failed: %s: %s", key, params, type(exc).__name__, exc)
        shutil.rmtree(scratch, ignore_errors=True)
        err = {"type": type(exc).__name__, "message": str(exc)}
        rows = [{**base, "status": "error", "error_type": err["type"],
                 "error_message": err["message"], "scenario": sc["name"],
                 "scenario_kind": sc["kind"]} for sc in cfg["scenarios"]]
        timings["total_seconds"] = time.perf_counter() - t_cell
        return {"status": "error", "error": err, "timings": timings, "rows": rows}

    status, first_error = "ok", None
    has_test = test.user_counts() > 0
    for sc in tqdm(cfg["scenarios"], desc=f"cell {key[:8]} scenarios", leave=False,
                   disable=None if ctx.progress is None else not ctx.progress):
        row = {**base, "scenario": sc["name"], "scenario_kind": sc["kind"]}
        t_sc = time.perf_counter()
        try:
            forget_idx = _select_users(sc, train, shard, cell.seed)
            forget_raw = train.user_ids[forget_idx].tolist()
            # An independent copy per scenario: forgetting mutates a run in place.
            run = fitted.copy(workdir=root / f"scenario-{sc['name']}")
            report = run.forget(users=forget_raw)
            remaining = train.without(users=forget_raw)
            retained = np.ones(train.n_users, bool)
            retained[forget_idx] = False
            row.update({
                "users_forgotten": len(forget_idx), "records_removed": report.records_removed,
                "forget_seconds": report.seconds, "forget_cpu_seconds": report.cpu_seconds,
                "shards_retrained": len(report.shards_retrained),
                "slices_retrained": report.slices_retrained,
                "work_fraction": report.work_fraction,
            })
            # Quality is compared on the users whose data remains; when a scenario forgets
            # everyone with test data (e.g. every user of a one-shard run) there is none.
            evaluable = bool(np.any(retained & has_test))
            if evaluable:
                qb = _quality(fitted, train, test, cfg, users=retained)
                qa = _quality(run, remaining, test, cfg, users=retained)
                row.update({f"{nd}_before": qb[nd], f"{nd}_after": qa[nd],
                            f"{rc}_before": qb[rc], f"{rc}_after": qa[rc]})
                if groups:
                    row.update(_group_columns(fitted, run, train, test, cfg, retained))
            kept_idx = np.flatnonzero(retained)
            if len(kept_idx):
                after_top = run.recommend(train.user_ids[kept_idx], k=jk)
                jac, overlap = _jaccard(before_top[kept_idx], after_top, jk)
                row[f"jaccard@{jk}"] = float(jac.mean())
                row[f"jaccard@{jk}_hist"] = ";".join(
                    map(str, np.bincount(overlap, minlength=jk + 1)))
            if exp["full_retrain"] and len(remaining):  # nothing left: nothing to retrain
                # The whole ensemble from scratch on the remaining data, with the records'
                # stored assignment: the exactness reference and the cost SISA avoids.
                kept = ~np.isin(_sorted_by_record(train).user_idx, forget_idx)
                t0 = time.perf_counter()
                ref = SISA(workdir=root / f"retrain-{sc['name']}", **common).fit(
                    _sorted_by_record(remaining), assignment=(shard[kept], slice_[kept]))
                row["full_retrain_seconds"] = time.perf_counter() - t0
                if evaluable:
                    qr = _quality(ref, remaining, test, cfg, users=retained)
                    row[f"full_retrain_{nd}"], row[f"full_retrain_{rc}"] = qr[nd], qr[rc]
                row["exact"] = bool(parameters_equal(run, ref)[0])
                if not keep:
                    shutil.rmtree(ref.workdir, ignore_errors=True)
                del ref
            if not keep:
                shutil.rmtree(run.workdir, ignore_errors=True)
            del run
        except Exception as exc:  # one scenario failing leaves the others running
            logger.warning("cell %s scenario %r failed: %s: %s", key, sc["name"],
                           type(exc).__name__, exc)
            row.update({"status": "error", "error_type": type(exc).__name__,
                        "error_message": str(exc)})
            status = "error"
            first_error = first_error or {"type": type(exc).__name__, "message": str(exc),
                                          "scenario": sc["name"]}
        timings["scenarios"][sc["name"]] = time.perf_counter() - t_sc
        rows.append(row)
    del fitted
    shutil.rmtree(scratch, ignore_errors=True)
    timings["total_seconds"] = time.perf_counter() - t_cell
    return {"status": status, "error": first_error, "timings": timings, "rows": rows}


# ---------------------------------------------------------------------------------- output
def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return v


def _write_results(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    extra = sorted({k for r in rows for k in r} - set(columns))
    header = [*columns, *extra]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _csv_value(r.get(k)) for k in header})
    os.replace(tmp, path)


def _library_versions() -> dict[str, str]:
    import scipy

    out = {"sisakit": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__, "scipy": scipy.__version__}
    for extra in ("matplotlib", "pyarrow"):
        try:
            out[extra] = __import__(extra).__version__
        except ImportError:
            pass
    return out


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@dataclass
class ExperimentResult:
    """What :func:`run` did.

    Attributes
    ----------
    out_dir : Path
        The output folder.
    results_csv, run_json : Path
        The results table and the run record.
    rows : list of dict
        The rows of ``results.csv`` (one per cell × scenario), as written.
    n_cells, n_ran, n_skipped, n_failed : int
        Cells in the grid, fitted in this call, skipped because a resumed sweep had finished
        them, and failed (in this call or before).
    """

    out_dir: Path
    results_csv: Path
    run_json: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    n_cells: int = 0
    n_ran: int = 0
    n_skipped: int = 0
    n_failed: int = 0


def run(
    config_or_path: str | os.PathLike[str] | Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = True,
    progress: bool | None = None,
    data: Interactions | None = None,
) -> ExperimentResult:
    """Run an experiment sweep and write ``results.csv`` and ``run.json`` to ``out_dir``.

    Parameters
    ----------
    config_or_path : path or mapping
        A TOML file or the equivalent dict (schema: the *Experiments and plots* docs page). It
        is validated completely, and checked against the data, before any cell runs.
    out_dir : path
        Output folder (created if needed).
    resume : bool
        Skip cells finished by an earlier run into the same ``out_dir`` (matched by
        :func:`cell_key`, so a changed setting re-runs the cells it affects). Failed cells are
        always re-run. With ``False`` every cell is fitted again.
    progress : bool or None
        Progress bars: True, False (silent) or None (only on a terminal).
    data : Interactions, optional
        Use these interactions instead of a ``[data]`` source (the config must then have no
        ``[data]`` section, or ``source = "given"``). They are split as ``[split]`` says.

    Returns
    -------
    ExperimentResult

    Raises
    ------
    ValidationError
        If the config is invalid, or does not fit the data (e.g. an unknown attribute).
    DataError
        If the data cannot be loaded.
    """
    if data is not None and not isinstance(data, Interactions):
        raise ValidationError(f"data must be sisakit.Interactions, got {type(data).__name__}; "
                              "load it with a function of sisakit.datasets")
    if not isinstance(resume, bool):
        raise ValidationError(f"resume must be True or False, got {resume!r}")
    cfg = load_config(config_or_path, data_given=data is not None)
    started, t_start = utc_now(), time.perf_counter()
    full = data if data is not None else _load_data(cfg)
    train, test = _split(cfg, full)
    _check_against_data(cfg, train)
    # Created only once the config is known to fit the data: a bad config leaves no folder.
    out = make_out_dir("out_dir", out_dir)
    fingerprint = _fingerprint(train)
    (out / "cells").mkdir(exist_ok=True)
    ctx = _Context(cfg, train, test, out, progress, fingerprint)
    columns = _columns(cfg)
    cells = _cells(cfg)
    keys = [cell_key(c.params(cfg), cfg, fingerprint) for c in cells]
    records: dict[str, dict[str, Any]] = {}
    result = ExperimentResult(out, out / "results.csv", out / "run.json", n_cells=len(cells))
    run_meta = {
        "sisakit": __version__, "config": cfg, "config_file": cfg["config_file"],
        "seeds": sorted(cfg["grid"]["seed"]), "split_seed": cfg["split"]["seed"],
        "data": {"source": cfg["data"]["source"], "n_users": train.n_users,
                 "n_items": train.n_items, "train_records": len(train),
                 "test_records": len(test), "fingerprint": fingerprint},
        "library": _library_versions(), "machine": _machine(), "started": started,
    }

    def flush(finished: bool) -> None:
        done = [k for k in keys if k in records]
        rows = [r for k in done for r in records[k]["rows"]]
        _write_results(result.results_csv, rows, columns)
        meta = {**run_meta, "finished": utc_now() if finished else None,
                "wall_seconds": time.perf_counter() - t_start,
                "summary": {"cells": len(cells), "ran": result.n_ran, "skipped": result.n_skipped,
                            "failed": sum(records[k]["status"] != "ok" for k in done)},
                "cells": [{"key": k, **{x: records[k][x] for x in
                                        ("params", "status", "error", "timings", "resumed")}}
                          for k in done]}
        _write_atomic(result.run_json, json.dumps(meta, indent=2, default=str))
        result.rows = rows

    logger.info("experiment %r: %d cell(s) x %d scenario(s), data %s", cfg["experiment"]["name"],
                len(cells), len(cfg["scenarios"]), fingerprint)
    bar = tqdm(list(zip(cells, keys, strict=True)), desc="experiment cells",
               disable=None if progress is None else not progress)
    for cell, key in bar:
        path = out / "cells" / f"{key}.json"
        if resume and path.is_file():
            try:
                prev = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                prev = None  # a damaged record is simply re-run
            if prev is not None and prev.get("status") == "ok":
                records[key] = {**prev, "resumed": True}
                result.n_skipped += 1
                continue
        record = {"key": key, "params": cell.params(cfg), **_run_cell(cell, key, ctx),
                  "finished": utc_now()}
        _write_atomic(path, json.dumps(record, indent=2, default=str))
        records[key] = {**record, "resumed": False}
        result.n_ran += 1
        flush(finished=False)  # results so far survive an interrupted sweep
    flush(finished=True)
    result.n_failed = sum(records[k]["status"] != "ok" for k in keys)
    logger.info("experiment done: %d ran, %d skipped, %d failed; results in %s", result.n_ran,
                result.n_skipped, result.n_failed, result.results_csv)
    return result
