"""The fit journal: what an interrupted :meth:`sisakit.SISA.fit` needs to resume.

A fit writes, in the run directory, before it trains anything (under the run lock):

``fit/journal.json``
    Written atomically, with a checksum of its own content: the run's config, seed, salt, the
    generation the new run's files are tagged with, and the data files (records with their
    shard and slice, the id space) with their sha256. The data files are the new run's own
    ``state/*.g<generation>.npz`` files, written once.
``fit/progress.jsonl``
    One line ``{"name", "sha256"}`` per slice checkpoint, appended and fsync'd right after the
    checkpoint itself was written (atomically) and fsync'd, by whichever process trained it.

The journal is deleted after the manifest swap that commits the fit. A resumed fit reuses every
checkpoint whose bytes match its recorded sha256 and whose earlier stages are complete, and
retrains the rest; the result is bit for bit the one an uninterrupted fit gives.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .store import (
    _manifest_digest,
    atomic_write,
    check_inside,
    check_listed_names,
    check_run_name,
    fsync_dir,
    sha256_bytes,
)

__all__ = ["FIT_DIR", "FitJournal", "record_checkpoint"]

logger = logging.getLogger(__name__)

FIT_DIR = "fit"
JOURNAL = "journal.json"
PROGRESS = "progress.jsonl"


def record_checkpoint(journal_dir: str | os.PathLike[str], name: str, sha256: str) -> None:
    """Append (fsync'd) that checkpoint ``name`` with digest ``sha256`` is complete."""
    line = (json.dumps({"name": name, "sha256": sha256}, sort_keys=True) + "\n").encode()
    fd = os.open(Path(journal_dir) / PROGRESS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"\n" + line)  # a leading newline ends a line torn by a crash
        os.fsync(fd)
    finally:
        os.close(fd)


class FitJournal:
    """The fit journal of one run directory (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.dir = self.root / FIT_DIR
        self.path = self.dir / JOURNAL

    def exists(self) -> bool:
        return self.path.is_file()

    def _inside(self) -> Path:
        """The journal folder, refused if it is a link out of the run directory."""
        if self.dir.exists() or self.dir.is_symlink():
            check_inside(self.root, self.dir)
        return self.dir

    def start(self, body: dict[str, Any]) -> None:
        """Start a fit: a fresh journal (the progress of any earlier fit is dropped)."""
        self._inside().mkdir(parents=True, exist_ok=True)
        (self.dir / PROGRESS).unlink(missing_ok=True)
        body = {k: v for k, v in body.items() if k != "journal_sha256"}
        body["journal_sha256"] = _manifest_digest(body)
        atomic_write(self.path, json.dumps(body, sort_keys=True, indent=1).encode())
        fsync_dir(self.root)

    def read(self) -> dict[str, Any]:
        try:
            self._inside()
            body = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise CheckpointError(
                f"the fit journal {self.path} cannot be read ({exc.__class__.__name__}); fit the "
                "model again with overwrite=True"
            ) from exc
        if not isinstance(body, dict) or body.get("journal_sha256") != _manifest_digest(
                {k: v for k, v in body.items() if k != "journal_sha256"}):
            raise CheckpointError(
                f"the fit journal {self.path} was modified after sisakit wrote it (its checksum "
                "does not match); fit the model again with overwrite=True"
            )
        check_listed_names(self.root, body, "the fit journal")
        return body

    def completed(self) -> dict[str, str]:
        """Checkpoint name -> sha256 of every recorded checkpoint (torn lines skipped)."""
        try:
            text = (self._inside() / PROGRESS).read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return {}
        out = {}
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                out[entry["name"]] = str(entry.get("sha256"))
        return out

    def verified(self, names: list[str], done: dict[str, str] | None = None) -> int:
        """How many of ``names`` (one shard's stages, in order) are recorded and intact."""
        done = self.completed() if done is None else done
        for k, name in enumerate(names):
            path = check_run_name(self.root, name, "the fit journal")
            try:
                ok = name in done and sha256_bytes(path.read_bytes()) == done[name]
            except OSError:
                ok = False
            if not ok:
                return k
        return len(names)

    def remove(self) -> None:
        """Delete the journal (the journal file first: without it the fit is not resumable)."""
        self._inside()
        self.path.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)  # (rmtree refuses to follow a link)
        fsync_dir(self.root)
