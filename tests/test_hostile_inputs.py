"""A corpus of hostile inputs across the public API and the CLI (issue #10).

Every case asserts that

(a) the *specific* :class:`~sisakit.SisakitError` subclass is raised (never a bare
    ``IndexError``/``KeyError``/``ValueError``/``TypeError``/..., never a silent success), and for
    CLI cases that ``sisakit`` exits with status 2 and prints ``sisakit: error: ...``;
(b) the message names the fix (a key phrase such as "use", "pass", "remove", "restore", or the
    bad key/value);
(c) a saved run the case touches is byte-for-byte unchanged afterwards (every path and every
    byte under the run directory is compared).

A forget refused for unknown ids is refused under the run lock, before its request is received
(the ids are resolved before anything is written): it adds no ledger line and no ``pending/``
file. The run lock file (``run.lock``, empty; every fit creates it) is the only file such a
case may touch, and it stays empty.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import sisakit
from sisakit import Interactions, plugins
from sisakit.cli import main
from sisakit.datasets import load_movielens, read_interactions
from sisakit.engine import SISA
from sisakit.errors import (
    CheckpointError,
    DataError,
    PluginError,
    SisakitError,
    UnknownIdError,
    ValidationError,
)
from sisakit.store import RunStore

CFG = dict(model="bpr-mf", model_params={"factors": 4}, epochs=2, n_shards=3, n_slices=2,
           device="cpu", progress=False)
GHOST = 10**9 + 7  # an int user/item id that is not in synthetic(n_users=60, n_items=40)
MILLION = np.arange(10**9, 10**9 + 10**6, dtype=np.int64)


@dataclass
class Ctx:
    data: Interactions
    tmp: Path
    run: Path | None = None
    _model: SISA | None = None

    @property
    def model(self) -> SISA:
        if self._model is None:
            self._model = SISA.load(self.run, device="cpu", progress=False)
        return self._model


@dataclass
class Case:
    id: str
    call: Callable[[Ctx], Any]
    error: type[SisakitError]
    phrase: str  # regex (case-insensitive) the message must match: the fix, or the bad value
    run: bool = False  # works on a copy of the saved run, which must stay unchanged
    ledger: bool = False  # a refused forget may append received + failed ledger lines
    lock: bool = False  # the run lock was taken: an empty run.lock may appear
    setup: Callable[[Path], None] | None = None  # damage the run copy before the snapshot
    cli: bool = False  # ``call`` returns argv for sisakit.cli.main
    seconds: float | None = None  # the call must fail within this many seconds


CASES: list[Case] = []


def case(id: str, error: type[SisakitError], phrase: str, **kw: Any) -> Callable:
    def deco(fn: Callable[[Ctx], Any]) -> Callable[[Ctx], Any]:
        CASES.append(Case(id, fn, error, phrase, **kw))
        return fn
    return deco


# ============================================================================ forget
@case("forget-unknown-user", UnknownIdError, r"remove the unknown ids", run=True, ledger=True)
def _(c):
    c.model.forget(users=[GHOST])


@case("forget-mixed-valid-and-unknown-users", UnknownIdError, rf"{GHOST}.*remove the unknown ids",
      run=True, ledger=True)
def _(c):
    c.model.forget(users=[1, 2, GHOST, 3])


@case("forget-unknown-string-user-in-int-space", UnknownIdError, r"'u1'.*remove", run=True,
      ledger=True)
def _(c):
    c.model.forget(users=["u1"])


@case("forget-unknown-item", UnknownIdError, r"unknown item.*remove", run=True, ledger=True)
def _(c):
    c.model.forget(items=[GHOST])


@case("forget-pair-with-unknown-item", UnknownIdError, r"interaction.*remove", run=True,
      ledger=True)
def _(c):
    c.model.forget(interactions=[(1, GHOST)])


@case("forget-pair-never-in-training-data", UnknownIdError, r"remove them from the request",
      run=True, ledger=True)
def _(c):
    d = c.data
    seen = set(zip(d.user_idx.tolist(), d.item_idx.tolist(), strict=True))
    u, i = next((u, i) for u in range(d.n_users) for i in range(d.n_items) if (u, i) not in seen)
    c.model.forget(interactions=[(int(d.user_ids[u]), int(d.item_ids[i]))])


@case("forget-a-million-unknown-users", UnknownIdError, r"and 999980 more.*remove", run=True,
      ledger=True, seconds=20)
def _(c):
    c.model.forget(users=MILLION)


@case("forget-empty-request", ValidationError, r"pass users=, interactions= or items=", run=True)
def _(c):
    c.model.forget()


@case("forget-empty-lists", ValidationError, r"pass users=", run=True)
def _(c):
    c.model.forget(users=[], items=np.array([], dtype=np.int64))


@case("forget-single-id-not-a-list", ValidationError, r"must be a list of ids", run=True)
def _(c):
    c.model.forget(users="alice")


@case("forget-float-ids", ValidationError, r"integers or strings.*1\.0", run=True)
def _(c):
    c.model.forget(users=[1.0, 2.0])


@case("forget-nan-id", ValidationError, r"integers or strings.*nan", run=True)
def _(c):
    c.model.forget(items=[float("nan")])


@case("forget-bool-array", ValidationError, r"integers or strings.*bool", run=True)
def _(c):
    c.model.forget(users=np.array([True, False]))


@case("forget-2d-user-array", ValidationError, r"1-D.*ravel", run=True)
def _(c):
    c.model.forget(users=np.array([[1, 2], [3, 4]]))


@case("forget-interaction-triple", ValidationError, r"\(user, item\) pairs", run=True)
def _(c):
    c.model.forget(interactions=[(1, 2, 3)])


@case("forget-request-id-with-personal-data", ValidationError, r"never a user id", run=True)
def _(c):
    c.model.forget(users=[1], request_id="alice@example.com")


# ============================================================================ recommend / scores
@case("recommend-unknown-user", UnknownIdError, rf"{GHOST}.*check the user ids", run=True)
def _(c):
    c.model.recommend([GHOST], k=3)


@case("recommend-mixed-valid-and-unknown", UnknownIdError, rf"unknown user id\(s\): {GHOST};",
      run=True)
def _(c):
    c.model.recommend([1, GHOST, 2], k=3)


@case("recommend-a-million-unknown-users", UnknownIdError, r"1000000000, .*and 999980 more",
      run=True, seconds=5)
def _(c):
    c.model.recommend(MILLION, k=3)


@case("recommend-empty-users", ValidationError, r"pass at least one", run=True)
def _(c):
    c.model.recommend([], k=3)


@case("recommend-2d-users", ValidationError, r"1-D list", run=True)
def _(c):
    c.model.recommend(np.array([[1, 2]]), k=3)


@case("recommend-float-user-ids", ValidationError, r"integers or strings.*1\.5", run=True)
def _(c):
    c.model.recommend(np.array([1.5, 2.0]), k=3)


@case("recommend-bool-users", ValidationError, r"integers or strings.*bool", run=True)
def _(c):
    c.model.recommend(np.array([True, True]), k=3)


@case("recommend-k-zero", ValidationError, r"k must be an integer >= 1", run=True)
def _(c):
    c.model.recommend([1], k=0)


@case("recommend-k-as-string", ValidationError, r"k must be an integer.*'3'", run=True)
def _(c):
    c.model.recommend([1], k="3")


@case("recommend-k-larger-than-catalogue", ValidationError, r"lower k", run=True)
def _(c):
    c.model.recommend([1], k=41)


@case("recommend-batch-size-zero", ValidationError, r"batch_size must be an integer >= 1",
      run=True)
def _(c):
    c.model.recommend([1], k=3, batch_size=0)


@case("scores-index-out-of-range", ValidationError, r"user indices.*\[0, 60\).*user_map\.index",
      run=True)
def _(c):
    c.model.scores(np.array([0, 10**6]))


@case("scores-negative-index", ValidationError, r"user indices.*\[0, 60\)", run=True)
def _(c):
    c.model.scores(np.array([-1]))


@case("scores-float-indices", ValidationError, r"integer user indices", run=True)
def _(c):
    c.model.scores(np.array([0.7]))


@case("is-forgotten-needs-exactly-one", ValidationError, r"pass exactly one", run=True)
def _(c):
    c.model.is_forgotten(1, item=1)


@case("lock-timeout-nan", ValidationError, r"finite number of seconds", run=True)
def _(c):
    c.model.lock_timeout = float("nan")


@case("repartition-negative-seed", ValidationError, r"seed must be a non-negative integer.*got -1", run=True,
      lock=True)
def _(c):
    c.model.repartition(seed=-1)


@case("copy-into-non-empty-dir", CheckpointError, r"choose a new or empty directory", run=True)
def _(c):
    (c.tmp / "taken").mkdir()
    (c.tmp / "taken" / "notes.txt").write_text("mine")
    c.model.copy(workdir=c.tmp / "taken")


@case("fit-over-existing-run", CheckpointError, r"pass overwrite=True", run=True)
def _(c):
    SISA(workdir=c.run, **CFG).fit(c.data)


@case("fit-overwrite-with-bad-model-param", ValidationError, r"factors must be a positive integer",
      run=True)
def _(c):
    SISA(workdir=c.run, overwrite=True, **{**CFG, "model_params": {"factors": 0}}).fit(c.data)


@case("fit-over-existing-run-with-bad-data", ValidationError, r"Interactions\.from_arrays",
      run=True)
def _(c):
    SISA(workdir=c.run, overwrite=True, **CFG).fit([(1, 2), (3, 4)])


# ============================================================================ corrupt run files
def _damage(fn: Callable[[Path], None]) -> Callable[[Path], None]:
    return fn


def _truncate(rel: str | Callable[[Path], str]) -> Callable[[Path], None]:
    def setup(run: Path) -> None:
        path = run / (rel(run) if callable(rel) else rel)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return setup


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def _first_ckpt(run: Path) -> str:
    return _manifest(run)["checkpoints"][0][-1]


def _space_file(run: Path) -> str:
    return _manifest(run)["data_files"]["space"]


def _rewrite(rel_of: Callable[[Path], str], data: bytes) -> Callable[[Path], None]:
    """Replace a run file and re-sign the manifest, so only the content check can catch it."""
    def setup(run: Path) -> None:
        rel = rel_of(run)
        store = RunStore(run)
        manifest = store.read_manifest()
        manifest["files"][rel] = store.write(rel, data)
        store.write_manifest(manifest)
    return setup


def _load(c: Ctx) -> None:
    SISA.load(c.run, device="cpu", progress=False)


def _pickled_object() -> bytes:
    buf = io.BytesIO()
    torch.save({"weights": torch.zeros(2), "payload": Path("/etc/passwd")}, buf)
    return buf.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _edit_manifest(change: Callable[[dict], None], resign: bool = True) -> Callable[[Path], None]:
    def setup(run: Path) -> None:
        manifest = _manifest(run)
        change(manifest)
        if resign:
            RunStore(run).write_manifest(manifest)
        else:
            (run / "manifest.json").write_text(json.dumps(manifest))
    return setup


for _id, _setup, _phrase in [
    ("load-truncated-manifest", _truncate("manifest.json"), r"corrupt.*restore it from a backup"),
    ("load-manifest-edited-by-hand", _edit_manifest(lambda m: m.update(seed=1), resign=False),
     r"modified after sisakit wrote it.*restore"),
    ("load-manifest-not-an-object", lambda run: (run / "manifest.json").write_text("[1, 2]"),
     r"not a sisakit manifest.*(restore|re-fit)"),
    ("load-manifest-from-the-future", _edit_manifest(lambda m: m.update(format_version=99),
                                                     resign=False), r"upgrade sisakit"),
    ("load-manifest-missing-config", _edit_manifest(lambda m: m.pop("config")),
     r"damaged.*'config'.*restore"),
    ("load-manifest-bad-n-shards", _edit_manifest(lambda m: m["config"].update(n_shards=-3)),
     r"damaged.*n_shards.*restore"),
    ("load-truncated-checkpoint", _truncate(_first_ckpt), r"checksum mismatch.*restore"),
    ("load-missing-checkpoint", lambda run: (run / _first_ckpt(run)).unlink(),
     r"missing.*restore it from a backup"),
    ("load-checkpoint-with-pickled-object", _rewrite(_first_ckpt, _pickled_object()),
     r"without executing any code.*restore"),
    ("load-truncated-data-npz", _truncate(_space_file), r"checksum mismatch.*restore"),
    ("load-garbage-data-npz-with-valid-checksum", _rewrite(_space_file, b"PK\x03\x04garbage"),
     r"not a valid array file.*restore"),
    ("load-data-npz-missing-arrays", _rewrite(_space_file, _npz(item_ids=np.arange(3))),
     r"(damaged|lack).*restore"),
]:
    CASES.append(Case(_id, _load, CheckpointError, _phrase, run=True, setup=_setup))


def _ledger_is_a_directory(run: Path) -> None:
    (run / "ledger.jsonl").mkdir()


@case("forget-with-unreadable-ledger", CheckpointError, r"deletion ledger.*restore it",
      run=True, lock=True, setup=_ledger_is_a_directory)
def _(c):
    c.model.forget(users=[1])


@case("load-missing-directory", CheckpointError, r"check the path")
def _(c):
    SISA.load(c.tmp / "nowhere")


@case("load-empty-directory", CheckpointError, r"fit a model with SISA\(workdir=")
def _(c):
    (c.tmp / "empty").mkdir()
    SISA.load(c.tmp / "empty")


@case("load-a-file-not-a-directory", CheckpointError, r"check the path")
def _(c):
    (c.tmp / "file.txt").write_text("x")
    SISA.load(c.tmp / "file.txt")


# ============================================================================ configuration
for _id, _kw, _err, _phrase in [
    ("config-negative-shards", dict(n_shards=-2), ValidationError,
     r"n_shards must be a positive integer.*got -2; use a value in \[1, "),
    ("config-zero-slices", dict(n_slices=0), ValidationError, r"n_slices must be a positive integer.*got 0"),
    ("config-epochs-as-str", dict(epochs="2"), ValidationError,
     r"epochs must be a positive integer.*'2' \(str\)"),
    ("config-shards-as-bool", dict(n_shards=True), ValidationError, r"n_shards.*True"),
    ("config-float-slices", dict(n_slices=2.5), ValidationError, r"n_slices.*2\.5"),
    ("config-unknown-model-param", dict(model_params={"factorz": 4}), PluginError,
     r"factorz.*use only its parameters: factors, lr"),
    ("config-unknown-model", dict(model="bpr-mf-typo"), PluginError, r"'bpr-mf-typo'.*install"),
    ("config-unknown-sharder", dict(sharder="by-moon-phase"), PluginError, r"available:.*install"),
    ("config-unknown-aggregator", dict(aggregator="median-ish"), PluginError, r"available:"),
    ("config-unknown-executor", dict(executor="quantum"), PluginError, r"'quantum'.*install"),
    ("config-unknown-device", dict(device="tpu"), ValidationError, r"use 'auto', 'cpu' or 'cuda'"),
    ("config-unknown-sharder-param", dict(sharder_params={"n_shards": 3}), PluginError,
     r"'n_shards'.*use only its parameters"),
]:
    CASES.append(Case(_id, lambda c, kw=_kw: SISA(**{**CFG, **kw}), _err, _phrase))


@case("plugins-get-unknown-name", PluginError, r"check the spelling")
def _(c):
    plugins.get("model", "no-such-model")


@case("fit-more-shards-than-users", ValidationError, r"use at most 2 shards")
def _(c):
    tiny = Interactions.from_arrays([1, 1, 2], [1, 2, 1])
    SISA(**{**CFG, "n_shards": 5}, workdir=c.tmp / "w").fit(tiny)


@case("fit-all-items-inactive", ValidationError, r"nothing can be recommended")
def _(c):
    tiny = Interactions.from_arrays([1, 2], [1, 2])
    SISA(**CFG, workdir=c.tmp / "w").fit(tiny.replace(item_active=np.zeros(2, bool)))


# ============================================================================ data arrays
_U, _I = [1, 2, 3], [10, 11, 12]
for _id, _fn, _err, _phrase in [
    ("data-nan-rating", lambda: Interactions.from_arrays(_U, _I, rating=[1.0, math.nan, 3.0]),
     DataError, r"rating.*records \[1\].*drop or impute"),
    ("data-inf-weight", lambda: Interactions.from_arrays(_U, _I, weight=[1.0, 1.0, math.inf]),
     DataError, r"weight.*drop or impute"),
    ("data-nan-timestamp", lambda: Interactions.from_arrays(_U, _I, timestamp=[1.0, math.nan, 2.0]),
     DataError, r"timestamp.*drop or impute"),
    ("data-nan-user-features",
     lambda: Interactions.from_arrays(_U, _I).replace(user_features=np.full((3, 2), math.nan)),
     DataError, r"user_features.*drop or impute"),
    ("data-float-user-ids", lambda: Interactions.from_arrays([1.0, 2.0, 3.0], _I), ValidationError,
     r"convert float ids"),
    ("data-bool-item-ids", lambda: Interactions.from_arrays(_U, [True, False, True]),
     ValidationError, r"items has dtype bool.*integers or strings"),
    ("data-2d-user-array", lambda: Interactions.from_arrays(np.array([[1, 2, 3]] * 3), _I),
     ValidationError, r"one-dimensional.*ravel"),
    ("data-mixed-id-types", lambda: Interactions.from_arrays([1, "2", 3], _I), ValidationError,
     r"use all ints or all strings"),
    ("data-length-mismatch", lambda: Interactions.from_arrays(_U, _I[:2]), ValidationError,
     r"3 entries.*2.*pass"),
    ("data-no-records", lambda: Interactions.from_arrays([], []), DataError,
     r"pass at least one"),
    ("data-duplicate-ids-in-id-space", lambda: Interactions.from_arrays(_U, _I, user_ids=[1, 2, 3, 3]),
     DataError, r"duplicate user ids.*\[3\].*once"),
    ("data-duplicate-record-ids",
     lambda: Interactions.from_arrays(_U, _I).replace(record_id=np.zeros(3, np.int64)),
     ValidationError, r"record_id values must be unique.*\b(use|pass)\b"),
    ("data-rating-wrong-shape", lambda: Interactions.from_arrays(_U, _I, rating=[1.0, 2.0]),
     ValidationError, r"rating must have shape \(3,\)"),
    ("data-rating-as-text", lambda: Interactions.from_arrays(_U, _I, rating=["a", "b", "c"]),
     ValidationError, r"rating must be numeric.*(convert|pass)"),
    ("data-user-outside-given-id-space", lambda: Interactions.from_arrays(_U, _I, user_ids=[1, 2]),
     UnknownIdError, r"unknown user id\(s\): 3"),
]:
    CASES.append(Case(_id, lambda c, fn=_fn: fn(), _err, _phrase))


# ============================================================================ data files
def _csv(c: Ctx, text: str | bytes, name: str = "data.csv", **kw: Any) -> Interactions:
    path = c.tmp / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return read_interactions(path, **kw)


for _id, _fn, _err, _phrase in [
    ("csv-missing-file", lambda c: read_interactions(c.tmp / "nope.csv"), DataError,
     r"not found; pass the path"),
    ("csv-empty-file", lambda c: _csv(c, ""), DataError, r"empty; expected a header"),
    ("csv-truncated-last-row", lambda c: _csv(c, "user,item,rating\n1,2,3\n4,5,4\n6"),
     DataError, r"row 3|line 4"),
    ("csv-nan-rating", lambda c: _csv(c, "user,item,rating\n1,2,nan\n", rating_col="rating"),
     DataError, r"NaN, empty or infinite; drop or impute"),
    ("csv-inf-rating", lambda c: _csv(c, "user,item,rating\n1,2,inf\n", rating_col="rating"),
     DataError, r"drop or impute"),
    ("csv-missing-column", lambda c: _csv(c, "uid,item\n1,2\n"), DataError, r"'user'"),
    ("csv-not-utf8", lambda c: _csv(c, b"user,item\n\xff\xfe,2\n"), DataError, r"UTF-8"),
    ("csv-garbage-timestamp", lambda c: _csv(c, "user,item,ts\n1,2,yesterday\n",
                                              timestamp_col="ts"), DataError, r"timestamp|'ts'"),
    ("csv-min-rating-without-rating-col", lambda c: _csv(c, "user,item\n1,2\n", min_rating=3),
     ValidationError, r"needs rating_col="),
    ("parquet-truncated", lambda c: _csv(c, b"PAR1\x00\x00garbage", name="d.parquet"), DataError,
     r"not a readable Parquet file.*(re-export|check|restore|pass)"),
    ("movielens-missing-folder", lambda c: load_movielens("ml-100k", c.tmp / "ml"), DataError,
     r"download|unzip|path"),
    ("movielens-unknown-name", lambda c: load_movielens("ml-25x", c.tmp), ValidationError,
     r"ml-100k"),
]:
    CASES.append(Case(_id, _fn, _err, _phrase))


# ============================================================================ the CLI
TOML_OK = """
[data]
n_users = 30
n_items = 20
[grid]
n_shards = 2
"""


def _experiment(text: str) -> Callable[[Ctx], list[str]]:
    def argv(c: Ctx) -> list[str]:
        path = c.tmp / "exp.toml"
        path.write_text(text)
        return ["experiment", str(path), "--out", str(c.tmp / "out"), "--quiet"]
    return argv


for _id, _argv, _phrase, _run in [
    ("cli-experiment-bad-toml", _experiment("[grid\nn_shards = 2"), r"not valid TOML.*fix the syntax",
     False),
    ("cli-experiment-missing-config", lambda c: ["experiment", str(c.tmp / "none.toml")],
     r"cannot read experiment config.*check the path", False),
    ("cli-experiment-unknown-key", _experiment(TOML_OK + "n_shardz = 3\n"),
     r"grid\.n_shardz: unknown key; remove it", False),
    ("cli-experiment-negative-shards", _experiment(TOML_OK.replace("n_shards = 2", "n_shards = -1")),
     r"grid\.n_shards.*got -1; use a value in \[1, ", False),
    ("cli-experiment-zero-slices", _experiment(TOML_OK + "n_slices = 0\n"),
     r"grid\.n_slices.*got 0; use a value in \[1, ", False),
    ("cli-experiment-epochs-as-str", _experiment(TOML_OK + 'epochs = "10"\n'),
     r"grid\.epochs.*expected an integer.*'10'", False),
    ("cli-experiment-unknown-model", _experiment(TOML_OK + 'model = "bpr-mff"\n'),
     r"no model named 'bpr-mff'", False),
    ("cli-experiment-unknown-model-param",
     _experiment(TOML_OK + "[params.model.bpr-mf]\nfactorz = 4\n"), r"factorz", False),
    ("cli-experiment-huge-users", _experiment(TOML_OK.replace("n_users = 30", "n_users = 100000000000")),
     r"data\.n_users: must lie in \[2, 100,000,000\], got 100000000000; use a value in", False),
    ("cli-experiment-absurd-threads",
     _experiment("[experiment]\nthreads_per_shard = 99999999\n" + TOML_OK),
     r"experiment\.threads_per_shard: must lie in \[1, 1,024\]", False),
    ("cli-experiment-seed-beyond-int64", _experiment(TOML_OK + "seed = 99999999999999999999\n"),
     r"grid\.seed\[0\]: must lie in", False),
    ("cli-experiment-huge-cutoff", _experiment("[evaluation]\nndcg_k = 100000000000000\n"
                                               + TOML_OK), r"evaluation\.ndcg_k: must lie in", False),
    ("cli-experiment-huge-scenario",
     _experiment(TOML_OK + '[[scenarios]]\nname = "r"\nkind = "random"\nsize = 10000000000000\n'),
     r"size: must lie in", False),
    ("cli-experiment-out-is-a-file",
     lambda c: ((c.tmp / "taken.txt").write_text("x"),
                [*_experiment(TOML_OK)(c)[:2], "--out", str(c.tmp / "taken.txt")])[1],
     r"--out '.*taken\.txt' is an existing file.*pass a folder name", False),
    ("cli-demo-out-is-a-file",
     lambda c: ((c.tmp / "taken.txt").write_text("x"),
                ["demo", "--quiet", "--out", str(c.tmp / "taken.txt")])[1],
     r"--out '.*taken\.txt' is an existing file", False),
    ("cli-resume-missing-path", lambda c: ["resume", str(c.tmp / "no-run")], r"check the path",
     False),
    ("cli-resume-not-a-run", lambda c: ["resume", str(c.tmp)], r"not a sisakit run directory",
     False),
    ("cli-resume-nan-lock-timeout", lambda c: ["resume", str(c.run), "--lock-timeout", "nan"],
     r"lock_timeout must be a finite number", True),
    ("cli-resume-negative-lock-timeout", lambda c: ["resume", str(c.run), "--lock-timeout", "-1"],
     r"lock_timeout must be a finite number.*>= 0", True),
    ("cli-resume-unknown-device", lambda c: ["resume", str(c.run), "--device", "tpu"],
     r"use 'auto', 'cpu' or 'cuda'", True),
]:
    CASES.append(Case(_id, _argv, ValidationError, _phrase, cli=True, run=_run))


def _latin1_experiment(c: Ctx) -> list[str]:
    path = c.tmp / "latin1.toml"
    path.write_bytes(TOML_OK.encode() + "# caf\u00e9 au lait\n".encode("latin-1"))
    return ["experiment", str(path), "--out", str(c.tmp / "out"), "--quiet"]


CASES.append(Case("cli-experiment-non-utf8-toml", _latin1_experiment, ValidationError,
                  r"not UTF-8 text \(byte 0xe9 on line 7\).*re-save it", cli=True))
CASES.append(Case("cli-resume-corrupt-manifest", lambda c: ["resume", str(c.run)], CheckpointError,
                  r"corrupt.*restore", cli=True, run=True, setup=_truncate("manifest.json")))
CASES.append(Case("cli-resume-missing-checkpoint", lambda c: ["resume", str(c.run)],
                  CheckpointError, r"missing.*restore", cli=True, run=True,
                  setup=lambda run: (run / _first_ckpt(run)).unlink()))


# ============================================================================ data readers and ids (issue 17)
_BIG = 2**70  # a Python int beyond int64: never a known id, never silently wrapped


def _parquet(c: Ctx, **columns: Any) -> Interactions:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"user": pa.array([1, 2]), "item": pa.array([3, 4]), **columns}
    pq.write_table(pa.table(cols), c.tmp / "d.parquet")
    return read_interactions(c.tmp / "d.parquet", timestamp_col="ts" if "ts" in cols else None)


def _denied_csv(c: Ctx) -> Interactions:
    import builtins
    from unittest import mock

    from sisakit.datasets import files as files_mod

    path = c.tmp / "locked.csv"
    path.write_text("user,item\n1,2\n")
    real_open = builtins.open

    def deny(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    with mock.patch.object(builtins, "open", deny), \
            mock.patch.object(files_mod, "_pyarrow", lambda: None):
        return read_interactions(path)


def _pa(kind: str) -> Any:
    import pyarrow as pa

    return {
        "struct": pa.array([{"a": 1}, {"a": 2}]), "list": pa.array([[1], [2, 3]]),
        "binary": pa.array([b"a", b"b"]), "uint64": pa.array([1, 2**64 - 1], pa.uint64()),
        "ns": pa.array([1_500_000_000_000_000_000, 1_500_000_000_500_000_000], pa.timestamp("ns")),
    }[kind]


for _id, _fn, _err, _phrase in [
    ("data-ragged-user-ids", lambda c: Interactions.from_arrays([[1, 2], [3]], [10, 11]),
     ValidationError, r"users must be a flat list of ids.*entry 0.*one int or str id per entry"),
    ("data-nested-id-in-flat-list", lambda c: Interactions.from_arrays([1, [2]], [10, 11]),
     ValidationError, r"entry 1 is \[2\].*one int or str id per entry"),
    ("data-pairs-as-item-ids", lambda c: Interactions.from_arrays([1, 2], [(1, 2), (3,)]),
     ValidationError, r"items must be a flat list of ids"),
    ("data-user-id-beyond-int64", lambda c: Interactions.from_arrays([1, _BIG], [10, 11]),
     ValidationError, rf"{_BIG}, which does not fit a 64-bit integer id.*strings"),
    ("data-uint64-id-would-wrap",
     lambda c: Interactions.from_arrays(np.array([2**63 + 5], np.uint64), [10]), ValidationError,
     r"9223372036854775813, which does not fit a 64-bit integer id"),
    ("data-fractional-timestamp",
     lambda c: Interactions.from_arrays(_U, _I, timestamp=[1.0, 1.5, 2.0]), DataError,
     r"fractional values \(records \[1\].*round them"),
    ("data-timestamp-beyond-int64",
     lambda c: Interactions.from_arrays(_U, _I, timestamp=[1, 2, _BIG]), DataError,
     r"does not fit int64 seconds \(records \[2\].*Unix seconds"),
    ("data-rating-overflows-float32",
     lambda c: Interactions.from_arrays(_U, _I, rating=[1.0, 1e39, 2.0]), DataError,
     r"rating overflows float32 \(records \[1\].*rescale"),
    ("without-ragged-users", lambda c: c.data.without(users=[[1, 2], [3]]), ValidationError,
     r"users must be a flat list of ids"),
    ("without-user-beyond-int64", lambda c: c.data.without(users=[1, _BIG]), UnknownIdError,
     rf"unknown user id\(s\): {_BIG};.*nothing was deleted"),
    ("csv-rating-overflows-float32",
     lambda c: _csv(c, "user,item,r\n1,2,3\n1,3,1e39\n", rating_col="r"), DataError,
     r"data\.csv, line 3: column 'r' holds 1e\+39, which overflows float32.*rescale"),
    ("csv-timestamp-beyond-int64",
     lambda c: _csv(c, "user,item,ts\n1,2,99999999999999999999\n", timestamp_col="ts"),
     DataError, r"line 2: column 'ts'.*does not fit int64 seconds"),
    ("csv-mixed-integer-and-iso-timestamps",
     lambda c: _csv(c, "user,item,ts\n1,2,1000\n1,3,2020-01-01\n", timestamp_col="ts"),
     DataError, r"line 3: column 'ts'.*mixes integer and ISO-8601 timestamps; use one kind"),
    ("csv-fractional-iso-second",
     lambda c: _csv(c, "user,item,ts\n1,2,2020-01-01T00:00:00.5\n", timestamp_col="ts"),
     DataError, r"line 2: column 'ts'.*not a whole number of seconds.*round"),
    ("csv-int-id-beyond-int64",
     lambda c: _csv(c, "user,item\n99999999999999999999,1\n", ids="int"), DataError,
     r"line 2: column 'user'.*does not fit a 64-bit integer id; pass ids='str'"),
    ("csv-bad-utf8-past-first-chunk",
     lambda c: _csv(c, b"user,item\n" + b"1,2\n" * 300_000 + b"\xff,3\n"), DataError,
     r"data\.csv, line 300002: byte 0xff is not UTF-8 text; re-save"),
    ("csv-permission-denied", _denied_csv, DataError,
     r"cannot read .*locked\.csv \(Permission denied\); check the path and its permissions"),
    ("csv-path-is-a-directory",
     lambda c: ((c.tmp / "dir.csv").mkdir(), read_interactions(c.tmp / "dir.csv")), DataError,
     r"dir\.csv is a directory, not a csv file; pass the path of the file itself"),
    ("parquet-uint64-id-beyond-int64", lambda c: _parquet(c, user=_pa("uint64")), DataError,
     r"row 2: column 'user' holds 18446744073709551615.*pass ids='str'"),
    ("parquet-struct-id-column", lambda c: _parquet(c, user=_pa("struct")), DataError,
     r"column 'user' has type struct<a: int64>, which cannot hold ids; supported: integers"),
    ("parquet-list-id-column", lambda c: _parquet(c, item=_pa("list")), DataError,
     r"column 'item' has type list<.*cannot hold ids.*Cast the column"),
    ("parquet-binary-id-column", lambda c: _parquet(c, item=_pa("binary")), DataError,
     r"column 'item' has type binary, which cannot hold ids"),
    ("parquet-fractional-timestamp", lambda c: _parquet(c, ts=_pa("ns")), DataError,
     r"row 2: column 'ts'.*not a whole number of seconds"),
    ("read-interactions-path-none", lambda c: read_interactions(None), ValidationError,
     r"path must be a str or os\.PathLike.*NoneType"),
    ("read-min-rating-huge-int",
     lambda c: _csv(c, "user,item,r\n1,2,3\n", rating_col="r", min_rating=10**400),
     ValidationError, r"min_rating must be a number within float range.*pass e\.g\."),
    ("movielens-name-none", lambda c: load_movielens(None, c.tmp), ValidationError,
     r"name must be a string, one of \['ml-100k', 'ml-1m'\]"),
    ("movielens-name-not-a-string", lambda c: load_movielens(["ml-100k"], c.tmp),
     ValidationError, r"name must be a string.*\(list\)"),
    ("movielens-path-none", lambda c: load_movielens("ml-100k", None), ValidationError,
     r"path must be a str or os\.PathLike.*ml-100k folder"),
    ("synthetic-absurd-n-users", lambda c: sisakit.datasets.synthetic(n_users=10**12),
     ValidationError, r"n_users must be an integer in \[1, 100,000,000\], got 1000000000000"),
    ("synthetic-float-n-items", lambda c: sisakit.datasets.synthetic(n_items=50.0),
     ValidationError, r"n_items must be an integer in \[1, 10,000,000\], got 50\.0 \(float\)"),
    ("synthetic-too-many-pairs",
     lambda c: sisakit.datasets.synthetic(n_users=10**6, n_items=10**6), ValidationError,
     r"user-item pairs is too many.*lower n_users or n_items"),
    ("synthetic-infinite-mean",
     lambda c: sisakit.datasets.synthetic(mean_interactions=math.inf), ValidationError,
     r"mean_interactions must be a finite number > 0.*pass e\.g\."),
]:
    CASES.append(Case(_id, _fn, _err, _phrase, seconds=20))

CASES.append(Case("forget-user-beyond-int64", lambda c: c.model.forget(users=[_BIG]),
                  UnknownIdError, rf"{_BIG}.*remove the unknown ids", run=True, ledger=True))
CASES.append(Case("recommend-user-beyond-int64", lambda c: c.model.recommend([1, -_BIG], k=3),
                  UnknownIdError, rf"unknown user id\(s\): {-_BIG};", run=True))
CASES.append(Case("receive-item-beyond-int64", lambda c: c.model.receive(items=[_BIG]),
                  UnknownIdError, rf"unknown item id\(s\): {_BIG}", run=True, lock=True))


# ========================================================================= the engine's boundary (issue 17)
def _forgotten(request_id: str) -> Callable[[Path], None]:
    """Forget the run's first user under ``request_id`` before the snapshot."""
    def setup(run: Path) -> None:
        model = SISA.load(run, device="cpu", progress=False)
        model.forget(users=[model.user_ids[0]], request_id=request_id)
    return setup


def _tombstone(c: Ctx) -> Any:
    (tomb,) = set(c.model.data.user_ids.tolist()) - set(c.model.user_ids.tolist())
    return tomb


def _list_file(name: str) -> Callable[[Path], None]:
    """Re-sign the manifest so that it also lists ``name`` (with a valid-looking checksum)."""
    return _edit_manifest(lambda m: m["files"].update({name: "0" * 64}))


def _nested_manifest(run: Path) -> None:
    (run / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)


def _block_pending(run: Path) -> None:
    (run / "pending").write_text("not a folder")


def _link_out(run: Path) -> None:
    outside = run.parent / "outside.pt"
    outside.write_bytes(b"someone else's file")
    (run / "checkpoints" / "escape.pt").symlink_to(outside)
    RunStore(run).write_manifest({**_manifest(run), "files": {**_manifest(run)["files"],
                                                               "checkpoints/escape.pt": "0" * 64}})


def _bad_ledger_line(run: Path) -> None:
    line = {"request": "../../etc", "state": "received", "time": "2026-01-01T00:00:00Z"}
    (run / "ledger.jsonl").write_text(json.dumps(line) + "\n")


def _replace_state_by_file(c: Ctx) -> None:
    model = c.model  # loaded while the run is whole
    shutil.rmtree(c.run / "state")
    (c.run / "state").write_text("a file where a folder was")
    model.forget(users=[model.user_ids[0]])


for _id, _kw, _phrase in [
    ("config-model-params-not-a-mapping", dict(model_params=[("factors", 4)]),
     r"model_params must be a dict.*got list.*pass e\.g\. model_params=\{'factors'"),
    ("config-sharder-params-as-string", dict(sharder_params="n=3"),
     r"sharder_params must be a dict.*'n=3'.*pass e\.g\. sharder_params=\{'n_bins'"),
    ("config-aggregator-params-as-int", dict(aggregator_params=3), r"aggregator_params must be"),
    ("config-executor-params-key-not-str", dict(executor_params={1: 2}),
     r"executor_params must be a dict of parameter names.*\{1: 2\}.*n_jobs"),
    ("config-workdir-not-path-like", dict(workdir=3), r"workdir must be a path.*got int 3.*pass e\.g\."),
    ("config-workdir-as-list", dict(workdir=["runs"]), r"workdir must be a path.*got list"),
    ("config-progress-as-string", dict(progress="yes"), r"progress must be True, False or None.*'yes'"),
    ("config-overwrite-as-int", dict(overwrite=2), r"overwrite must be True or False"),
    ("config-model-lr-as-string", dict(model_params={"factors": 4, "lr": "fast"}),
     r"lr must be a finite number.*'fast'.*pass e\.g\. lr="),
    ("config-model-factors-unallocatable", dict(model_params={"factors": 10**9}),
     r"factors must be a positive integer <= 16,384.*use a value in"),
    ("config-model-negative-reg", dict(model_params={"factors": 4, "reg": -1.0}),
     r"reg must be a finite number >= 0"),
    ("config-model-nan-init-std", dict(model_params={"factors": 4, "init_std": math.nan}),
     r"init_std must be a finite number"),
]:
    CASES.append(Case(_id, lambda c, kw=_kw: SISA(**{**CFG, **kw}), ValidationError, _phrase))

for _id, _fn, _err, _phrase in [
    ("load-path-none", lambda c: SISA.load(None), ValidationError,
     r"workdir must be a path.*NoneType"),
    ("load-path-int", lambda c: SISA.load(3), ValidationError, r"workdir must be a path.*got int"),
    ("load-lock-timeout-as-string", lambda c: SISA.load(c.run, lock_timeout="x"), ValidationError,
     r"lock_timeout must be a finite number.*'x'"),
    ("load-progress-as-string", lambda c: SISA.load(c.run, progress="no"), ValidationError,
     r"progress must be True, False or None.*'no'"),
    ("load-resume-as-int", lambda c: SISA.load(c.run, resume=2), ValidationError,
     r"resume must be True or False"),
    ("apply-received-none", lambda c: c.model.apply_received(None), ValidationError,
     r"request_ids must be a list of request ids"),
    ("apply-received-a-string", lambda c: c.model.apply_received("T-1"), ValidationError,
     r"request_ids must be a list.*got str 'T-1'.*pass e\.g\."),
    ("apply-received-unknown-request", lambda c: c.model.apply_received(["T-404"]),
     ValidationError, r"'T-404'.*receive\(\)"),
    ("forget-request-id-not-a-string", lambda c: c.model.forget(users=[1], request_id=5),
     ValidationError, r"request_id must be 1-128 characters.*got 5.*ticket number"),
    ("forget-users-as-dict", lambda c: c.model.forget(users={1: 2}), ValidationError,
     r"users must be a list of ids"),
    ("is-forgotten-unknown-user", lambda c: c.model.is_forgotten(user=GHOST), UnknownIdError,
     rf"unknown user id\(s\): {GHOST}"),
    ("is-forgotten-user-beyond-int64", lambda c: c.model.is_forgotten(user=_BIG), UnknownIdError,
     rf"{_BIG}"),
    ("copy-target-an-int", lambda c: c.model.copy(3), ValidationError,
     r"workdir must be a path.*got int 3"),
    ("copy-target-is-a-file", lambda c: ((c.tmp / "f.txt").write_text("x"),
                                         c.model.copy(c.tmp / "f.txt")), CheckpointError,
     r"f\.txt.*(not a directory|choose a new or empty directory)"),
]:
    CASES.append(Case(_id, _fn, _err, _phrase, run=True))


def _fit_with(assignment: Any) -> Callable[[Ctx], Any]:
    return lambda c: SISA(**CFG).fit(c.data, assignment=assignment)


for _id, _assignment, _phrase in [
    ("fit-assignment-as-string", "0,1,2", r"assignment must be a \(shard, slice\) pair.*pass assignment="),
    ("fit-assignment-wrong-length", (np.zeros(3, np.int64), np.zeros(3, np.int64)),
     r"assignment.*one entry per record"),
    ("fit-assignment-shard-out-of-range",
     lambda c: (np.full(len(c.data), 7), np.zeros(len(c.data), np.int64)),
     r"shard assignment's ids must lie in \[0, 3\).*configure n_shards"),
    ("fit-assignment-float-slices",
     lambda c: (np.zeros(len(c.data), np.int64), np.full(len(c.data), 0.5)),
     r"assignment.*integer"),
]:
    def _call(c: Ctx, a: Any = _assignment) -> Any:
        return _fit_with(a(c) if callable(a) else a)(c)
    CASES.append(Case(_id, _call, ValidationError, _phrase))


for _id, _setup, _phrase in [
    ("load-manifest-names-parent-folder", _list_file("../victim.txt"),
     r"'\.\./victim\.txt'.*tampered.*restore"),
    ("load-manifest-names-absolute-path", _list_file("/etc/passwd"),
     r"'/etc/passwd', which is an absolute path.*restore"),
    ("load-manifest-names-windows-drive", _list_file("C:/Windows/win.ini"),
     r"absolute path.*restore"),
    ("load-manifest-names-backslash-path", _list_file("..\\victim.txt"),
     r"not a relative file name.*restore"),
    ("load-manifest-checkpoint-outside",
     _edit_manifest(lambda m: m["checkpoints"][0].__setitem__(-1, "../../x.pt")),
     r"'\.\./\.\./x\.pt'.*tampered"),
    ("load-manifest-data-file-outside",
     _edit_manifest(lambda m: m["data_files"].update(space="/tmp/space.npz")),
     r"absolute path.*restore"),
    ("load-manifest-names-link-out", _link_out, r"symbolic link.*restore"),
    ("load-manifest-nested-too-deeply", _nested_manifest, r"corrupt \(RecursionError.*restore"),
]:
    CASES.append(Case(_id, _load, CheckpointError, _phrase, run=True, setup=_setup))

for _id, _argv, _setup, _phrase in [
    ("cli-resume-manifest-names-parent-folder", lambda c: ["resume", str(c.run)],
     _list_file("../victim.txt"), r"tampered.*restore"),
    ("cli-resume-manifest-names-absolute-path", lambda c: ["resume", str(c.run)],
     _list_file("/etc/passwd"), r"absolute path"),
]:
    CASES.append(Case(_id, _argv, CheckpointError, _phrase, cli=True, run=True, setup=_setup))


@case("forget-reused-request-id-with-other-users", ValidationError,
      r"request id 'T-1'.*different ids.*pass a new request_id", run=True, lock=True,
      setup=_forgotten("T-1"))
def _(c):
    c.model.forget(users=[c.model.user_ids[0]], request_id="T-1")


@case("receive-reused-request-id-with-other-users", ValidationError,
      r"request id 'T-2'.*different ids.*pass a new request_id", run=True, lock=True,
      setup=_forgotten("T-2"))
def _(c):
    c.model.receive(users=[c.model.user_ids[1]], request_id="T-2")


@case("forget-a-tombstone", UnknownIdError, r"unknown user id.*remove the unknown ids", run=True,
      lock=True, setup=_forgotten("T-3"))
def _(c):
    c.model.forget(users=[_tombstone(c)])


@case("recommend-a-tombstone", UnknownIdError, r"unknown user id", run=True,
      setup=_forgotten("T-4"))
def _(c):
    c.model.recommend([_tombstone(c)], k=3)


@case("receive-a-tombstone", UnknownIdError, r"unknown user id", run=True, lock=True,
      setup=_forgotten("T-5"))
def _(c):
    c.model.receive(users=[_tombstone(c)])


@case("is-forgotten-a-tombstone", UnknownIdError, r"unknown user id", run=True,
      setup=_forgotten("T-6"))
def _(c):
    c.model.is_forgotten(user=_tombstone(c))


@case("forget-with-blocked-pending-folder", CheckpointError, r"pending.*(restore|remove)",
      run=True, lock=True, setup=_block_pending)
def _(c):
    c.model.forget(users=[c.model.user_ids[0]])


@case("forget-with-tampered-ledger-request-id", CheckpointError, r"tampered.*restore", run=True,
      lock=True, setup=_bad_ledger_line)
def _(c):
    c.model.forget(users=[c.model.user_ids[0]])


@case("forget-after-state-folder-became-a-file", CheckpointError, r"state.*(restore|re-fit)")
def _(c):
    c.run = c.tmp / "own-run"
    SISA(workdir=c.run, **CFG).fit(c.data)
    _replace_state_by_file(c)


# ============================================================================ the test
@pytest.fixture(scope="module")
def data() -> Interactions:
    return sisakit.datasets.synthetic(n_users=60, n_items=40, seed=0)


@pytest.fixture(scope="module")
def base_run(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("hostile") / "run"
    SISA(workdir=run, **CFG).fit(data)
    return run


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a directory)."""
    return {p.relative_to(root).as_posix(): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


HASH = re.compile(r"[0-9a-f]{64}")


def assert_unchanged(before: dict, after: dict, *, ledger: bool, lock: bool, error: type) -> None:
    assert before.get("run.lock", b"") == b""  # the fit took the run lock: an empty file
    if ledger or lock:  # the run lock was taken: its (empty) lock file may now exist
        assert after.get("run.lock", b"") == b""
        if "run.lock" not in before:
            after.pop("run.lock", None)
    if ledger:  # refused before it was received: no ledger line, no pending file
        assert "ledger.jsonl" not in after and "pending" not in after
    assert after.keys() == before.keys(), "files were added or removed"
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, f"run files changed: {changed}"


def test_the_corpus_is_big_and_ids_are_unique():
    assert len(CASES) >= 120
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_hostile_input(c: Case, data, base_run, tmp_path, capsys):
    ctx = Ctx(data=data, tmp=tmp_path)
    before = None
    if c.run:
        ctx.run = tmp_path / "run"
        shutil.copytree(base_run, ctx.run)
        if c.setup is not None:
            c.setup(ctx.run)
        before = snapshot(ctx.run)
    t0 = time.perf_counter()
    if c.cli:
        capsys.readouterr()
        code = main(c.call(ctx))
        out, err = capsys.readouterr()
        assert code == 2, (out, err)
        assert err.startswith("sisakit: error: ") and err.count("\n") == 1, err
        message = err
    else:
        with pytest.raises(SisakitError) as info:
            c.call(ctx)
        assert type(info.value) is c.error, f"{type(info.value).__name__}: {info.value}"
        message = str(info.value)
    elapsed = time.perf_counter() - t0
    assert re.search(c.phrase, message, re.IGNORECASE | re.DOTALL), message
    assert "np.int64(" not in message and "np.str_(" not in message, message  # plain raw ids
    if c.seconds is not None:
        assert elapsed < c.seconds, f"took {elapsed:.1f} s"
    if before is not None:
        assert_unchanged(before, snapshot(ctx.run), ledger=c.ledger, lock=c.lock,
                         error=c.error)
