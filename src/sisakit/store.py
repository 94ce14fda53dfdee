"""Run directories: atomic, checksummed, pickle-free persistence of SISA runs.

Every file is written to a temporary name, fsync'd and renamed into place; ``manifest.json``
lists the sha256 of every file and is swapped last, so a crash leaves either the old run or the
new one, never a mixture. Tensors load with ``torch.load(..., weights_only=True)`` and arrays
with ``numpy.load(..., allow_pickle=False)``, after their checksum was verified.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class RunStore:
    """The files of one run directory, with their checksums."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # -- raw files -------------------------------------------------------------------------
    def write(self, rel: str, data: bytes) -> str:
        atomic_write(self.root / rel, data)
        return sha256_bytes(data)

    def read(self, rel: str, sha256: str | None) -> bytes:
        path = self.root / rel
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise CheckpointError(
                f"run file {path} is missing; the run directory is incomplete — restore it from a "
                "backup or re-fit the model"
            ) from exc
        if sha256 is not None and sha256_bytes(data) != sha256:
            raise CheckpointError(
                f"checksum mismatch for {path}: the file is truncated or was modified; restore it "
                "from a backup or re-fit the model (nothing was loaded)"
            )
        return data

    # -- tensors -----------------------------------------------------------------------------
    def save_tensors(self, rel: str, tensors: Mapping[str, torch.Tensor]) -> str:
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, buf)
        return self.write(rel, buf.getvalue())

    def load_tensors(self, rel: str, sha256: str | None) -> dict[str, torch.Tensor]:
        data = self.read(rel, sha256)
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"{self.root / rel} is not a valid tensor checkpoint ({exc.__class__.__name__}); "
                "it was refused without executing any code — restore it or re-fit"
            ) from exc
        if not isinstance(obj, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
        ):
            raise CheckpointError(f"{self.root / rel} does not hold a dict of tensors")
        return obj

    # -- arrays ------------------------------------------------------------------------------
    def save_arrays(self, rel: str, arrays: Mapping[str, np.ndarray]) -> str:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        return self.write(rel, buf.getvalue())

    def load_arrays(self, rel: str, sha256: str | None) -> dict[str, np.ndarray]:
        data = self.read(rel, sha256)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except Exception as exc:
            raise CheckpointError(
                f"{self.root / rel} is not a valid array file ({exc}); restore it or re-fit"
            ) from exc

    # -- manifest ----------------------------------------------------------------------------
    def has_manifest(self) -> bool:
        return (self.root / MANIFEST).is_file()

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Write the manifest atomically, with a checksum of its own content."""
        body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
        body["manifest_sha256"] = _manifest_digest(body)
        text = json.dumps(body, indent=2, sort_keys=True, default=_json_default)
        atomic_write(self.root / MANIFEST, text.encode())

    def read_manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        if not self.root.is_dir():
            raise CheckpointError(f"run directory {self.root} does not exist; check the path")
        if not path.is_file():
            raise CheckpointError(
                f"{self.root} holds no {MANIFEST}; it is not a sisakit run directory (fit a model "
                "with SISA(workdir=...) to create one)"
            )
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(
                f"{path} is corrupt ({exc}); restore it from a backup or re-fit"
            ) from exc
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        if not isinstance(version, int):
            raise CheckpointError(
                f"{path} has no format_version; it is not a sisakit manifest (a damaged or foreign "
                "file): restore the run directory from a backup or re-fit"
            )
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{path} has format_version {version}, newer than this sisakit understands "
                f"({FORMAT_VERSION}); upgrade sisakit to load it"
            )
        if manifest.get("manifest_sha256") != _manifest_digest(manifest):
            raise CheckpointError(
                f"{path} was modified after sisakit wrote it (its checksum does not match); "
                "restore it from a backup or re-fit"
            )
        return manifest

    def _unlisted(self, keep: Iterable[str]) -> list[Path]:
        keep_set = set(keep) | {MANIFEST}
        # A manifest swap torn by a crash leaves its temporary file next to the manifest.
        found = [p for p in self.root.glob(f".{MANIFEST}.*.tmp") if p.is_file()]
        for sub in ("checkpoints", "state"):
            base = self.root / sub
            if base.is_dir():
                found += [p for p in base.rglob("*")
                          if p.is_file() and p.relative_to(self.root).as_posix() not in keep_set]
        return found

    def has_unlisted(self, keep: Iterable[str]) -> bool:
        """Whether run files exist that the manifest does not list."""
        return bool(self._unlisted(keep))

    def remove_unlisted(self, keep: Iterable[str]) -> None:
        """Delete run files that the manifest no longer lists (staged or superseded files)."""
        for path in self._unlisted(keep):
            path.unlink(missing_ok=True)

    def remove_files(self, names: Iterable[str]) -> None:
        """Delete the given run files (relative names); missing ones are ignored."""
        for name in names:
            (self.root / name).unlink(missing_ok=True)


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return sha256_bytes(json.dumps(body, sort_keys=True, default=_json_default).encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
