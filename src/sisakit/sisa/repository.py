"""Persistence of a run: manifest ↔ state, data files, the commit (manifest swap), the sweep of
superseded files, copies, and the checks of a workdir. Owns the store and the fit journal."""

from __future__ import annotations

import contextlib
import logging
import platform
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._fitjournal import FitJournal
from .._training import RECORD_COLUMNS
from .._version import __version__
from ..data import Interactions
from ..errors import CheckpointError
from ..ledger import DeletionLedger
from ..store import FORMAT_VERSION, MANIFEST, RunStore, check_run_name, is_inside
from .config import SISAConfig
from .layout import TAGGED_DIRS, generation_of, is_own_leftover, records_name, space_name
from .state import DataFiles, RunState

__all__ = ["Repository"]

logger = logging.getLogger(__name__)


class Repository:
    """The run directory ``root`` as the engine reads and writes it.

    ``needs_sweep`` says whether files not listed by the manifest may lie around (after a fit
    replaced a run, or a crash left staged files); the next commit removes them.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.store = RunStore(self.root)
        self.journal = FitJournal(self.root)
        self.needs_sweep = True

    # ------------------------------------------------------------------ workdir checks
    def next_generation(self) -> int:
        """A generation no run file in the workdir uses yet (0 in a new workdir)."""
        found = [g for sub in TAGGED_DIRS
                 if (self.root / sub).is_dir() and is_inside(self.root, self.root / sub)
                 for p in (self.root / sub).rglob("*") if (g := generation_of(p.name)) is not None]
        if self.store.has_manifest():
            with contextlib.suppress(CheckpointError, KeyError, TypeError, ValueError):
                found.append(int(self.store.read_manifest()["generation"]))
        return max(found) + 1 if found else 0

    def check_workdir(self, config: Mapping[str, Any], *, replace: bool) -> None:
        """Refuse a workdir that holds another run (unless ``replace``) or foreign files."""
        root = self.root
        interrupted = self.journal.exists()
        if interrupted and not replace:
            raise CheckpointError(
                f"{root} holds an interrupted fit; finish it with SISA.load({str(root)!r}) or "
                f"`sisakit resume {root}`, or pass overwrite=True to start the fit over")
        if self.store.has_manifest():
            pending = DeletionLedger(root).pending()
            if pending:  # their raw ids would be lost or applied to the new run's data
                raise CheckpointError(
                    f"{root} has {len(pending)} pending deletion request(s); finish them first "
                    f"with `sisakit resume {root}` (or SISA.load), then fit again")
            if not replace:
                try:
                    other = self.store.read_manifest().get("config")
                except CheckpointError:
                    other = None
                what = ("a run with a different config" if other != dict(config)
                        else "a run with the same config")
                raise CheckpointError(
                    f"{root} already holds {what}; reopen it with SISA.load({str(root)!r}), "
                    "choose another workdir, or pass overwrite=True to replace it")
        elif not interrupted and root.exists() and (not root.is_dir() or any(
                not is_own_leftover(p) for p in root.iterdir())):
            raise CheckpointError(
                f"workdir {root} exists and is not an empty directory or a sisakit run; choose "
                "an empty or new directory")

    def fit_committed(self, journal: Mapping[str, Any]) -> dict[str, Any] | None:
        """The manifest, if it is the one the journal's fit committed (None otherwise)."""
        if not self.store.has_manifest():
            return None
        try:
            manifest = self.store.read_manifest()
        except CheckpointError:
            return None
        return manifest if same_commit(manifest, journal.get("generation"),
                                       journal.get("salt")) else None

    # ------------------------------------------------------------------ data files
    def write_data(self, state: RunState, files: dict[str, str], shards: Iterable[int],
                   space: bool) -> DataFiles:
        """Write the id space (if ``space``) and the records of ``shards`` (one file per shard,
        so a forget rewrites only what it changed); returns the new data file names."""
        g, cols = state.generation, state.data.to_state()
        names = DataFiles(state.data_files.space,
                          state.data_files.shards or ("",) * state.n_shards)
        space_file, shard_files = names.space, list(names.shards)
        if space:
            space_file = space_name(g)
            files[space_file] = self.store.save_arrays(
                space_file, {k: v for k, v in cols.items() if k not in RECORD_COLUMNS})
        for s in shards:
            rows = np.flatnonzero(state.shard == s)
            arrays = {k: cols[k][rows] for k in RECORD_COLUMNS if k in cols}
            arrays["slice"] = state.slice[rows]
            shard_files[s] = records_name(s, g)
            files[shard_files[s]] = self.store.save_arrays(shard_files[s], arrays)
        return DataFiles(space_file, tuple(shard_files))

    def read_data(self, data_files: DataFiles, files: Mapping[str, str], n_shards: int
                  ) -> tuple[Interactions, np.ndarray, np.ndarray]:
        """The records (canonical order), shard and slice arrays stored in a run's data files."""
        store = self.store
        space = store.load_arrays(data_files.space, files[data_files.space])
        parts = [store.load_arrays(n, files[n]) for n in data_files.shards]
        if len(parts) != n_shards:
            raise CheckpointError(f"{store.root}: {len(parts)} shard data files for "
                                  f"{n_shards} shards; the manifest is damaged")
        records = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        shard = np.repeat(np.arange(n_shards), [len(p["slice"]) for p in parts])
        order = np.argsort(records["record_id"], kind="stable")  # canonical record order
        slice_ = records.pop("slice")[order]
        data = Interactions.from_state({**space, **{k: v[order] for k, v in records.items()}})
        return data, shard[order], slice_

    # ------------------------------------------------------------------ the commit
    def commit(self, state: RunState, config: SISAConfig, determinism: Mapping[str, Any],
               files: dict[str, str], *, previous: Mapping[str, str],
               shards: Iterable[int] = (), space: bool = False,
               on_swap: Callable[[RunState], None] | None = None) -> RunState:
        """Write the changed data files (their digests are added to ``files``), then swap the
        manifest (the atomic commit point), then delete what the new manifest no longer lists
        (of ``previous``, the committed run's files). ``on_swap(state)`` runs right after the
        swap, before anything else can fail. Returns the committed state."""
        staged = files
        data_files = self.write_data(state, staged, shards, space)
        state = state.evolve(data_files=data_files)
        listed = state.listed_files()
        state = state.evolve(files={k: v for k, v in sorted(staged.items()) if k in listed})
        self.store.write_manifest(manifest_of(state, config, determinism))  # the commit point
        if on_swap is not None:
            on_swap(state)
        self.remove_superseded(set(previous) - set(state.files), state.files)
        return state

    def remove_superseded(self, superseded: set[str], listed: Mapping[str, str]) -> None:
        """Best effort: a file left behind is swept by a later commit, never loaded."""
        try:
            if self.needs_sweep:
                self.store.remove_unlisted(listed)  # after fit, or a crash's leftovers
                self.needs_sweep = False
            else:
                self.store.remove_files(superseded)
        except OSError as exc:
            logger.warning("could not delete superseded run files (%s); they will be removed "
                           "by a later forget", exc)
            self.needs_sweep = True

    def copy_to(self, target: Path, files: Iterable[str]) -> None:
        """Copy the listed files, then the manifest (last, like a commit), into ``target``."""
        for name in [*files, MANIFEST]:
            src, dst = self.store.path(name), check_run_name(target, name, "the copy")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst, follow_symlinks=False)


def same_commit(manifest: Mapping[str, Any], generation: Any, salt: Any) -> bool:
    """Whether ``manifest`` is the commit of this generation and salt."""
    return (manifest.get("generation"), manifest.get("forgotten", {}).get("salt")) == (
        generation, salt)


def library_versions() -> dict[str, str]:
    return {"sisakit": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def manifest_of(state: RunState, config: SISAConfig, determinism: Mapping[str, Any]
                ) -> dict[str, Any]:
    """The manifest (format 1) of a state."""
    return {
        "format_version": FORMAT_VERSION,
        "library": library_versions(),
        "config": config.to_dict(),
        "seed": config.seed,
        "determinism": dict(determinism),
        "generation": state.generation,
        "data_files": state.data_files.to_dict(),
        "checkpoints": [list(c) for c in state.checkpoints],
        "aggregator_file": state.aggregator_file,
        "files": dict(sorted(state.files.items())),
        "forgotten": {"salt": state.salt, **{k: list(v) for k, v in state.forgotten.items()}},
        "tombstones": dict(state.tombstones),
        "history": list(state.history),
        "timings": dict(state.timings),
    }
