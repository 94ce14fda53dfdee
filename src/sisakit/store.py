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
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"

logger = logging.getLogger(__name__)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename or a new file in it survives a crash."""
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


def _tampered(root: Path, what: str, name: Any, why: str) -> CheckpointError:
    return CheckpointError(
        f"{what} in {root} names {name!r}, which {why}; a run directory only lists files inside "
        "itself, so it was tampered with or damaged: nothing was read, written or deleted — "
        "restore the run directory from a backup or re-fit"
    )


def check_run_name(root: str | os.PathLike[str], name: Any, what: str = "the manifest") -> Path:
    """The path of run file ``name`` under ``root``, refusing any name that could leave it.

    A run file's name is a relative POSIX path without ``.`` or ``..`` parts, backslashes,
    drive letters or NUL bytes, whose real path (symbolic links resolved, in the file's folders
    too) lies inside the real path of ``root``. Names come from checksummed files, but a
    checksum only proves that *some* writer signed them: a re-signed manifest naming
    ``../victim`` must not make sisakit read, overwrite or delete ``victim``.

    Raises
    ------
    CheckpointError
        If ``name`` is not such a name (``what`` says which file listed it).
    """
    root = Path(root)
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise _tampered(root, what, name, "is not a relative file name")
    posix, win = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or win.is_absolute() or win.drive:
        raise _tampered(root, what, name, "is an absolute path")
    if any(part in ("..", ".") for part in name.split("/")) or "" in name.split("/"):
        raise _tampered(root, what, name, "is not a plain relative path (it has '..', '.' or "
                        "empty parts)")
    path = root / posix
    if not is_inside(root, path):
        raise _tampered(root, what, name, "resolves (through a symbolic link) outside the run "
                        "directory")
    return path


def is_inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether the real path of ``path`` (symbolic links resolved) lies strictly inside the
    real path of ``root``."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real != real_root and real.startswith(real_root.rstrip(os.sep) + os.sep)


def check_inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """``path`` if it lies inside ``root`` (see :func:`is_inside`), else CheckpointError: a
    fixed run file (the ledger, ``pending/``, the fit journal) replaced by a link elsewhere."""
    if not is_inside(root, path):
        raise CheckpointError(
            f"{path} resolves outside the run directory {root} (a symbolic link?); sisakit never "
            "reads, writes or deletes outside a run directory — replace the link by the run's own "
            "file or restore the run directory from a backup"
        )
    return Path(path)


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
    fsync_dir(path.parent)


class RunStore:
    """The files of one run directory, with their checksums."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # -- raw files -------------------------------------------------------------------------
    def path(self, rel: str, what: str = "the manifest") -> Path:
        """The path of run file ``rel``; refuses a name that leaves the run directory."""
        return check_run_name(self.root, rel, what)

    def write(self, rel: str, data: bytes) -> str:
        path = self.path(rel)
        try:
            atomic_write(path, data)
        except OSError as exc:
            raise CheckpointError(
                f"cannot write run file {path} ({exc.strerror or exc.__class__.__name__}); the "
                "run directory must be a writable folder with free space (was a folder in it "
                "replaced by a file?) — fix it or restore the run directory from a backup"
            ) from exc
        return sha256_bytes(data)

    def read(self, rel: str, sha256: str | None) -> bytes:
        path = self.path(rel)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise CheckpointError(
                f"run file {path} is missing; the run directory is incomplete — restore it from a "
                "backup or re-fit the model"
            ) from exc
        except OSError as exc:
            raise CheckpointError(
                f"run file {path} cannot be read ({exc.strerror or exc.__class__.__name__}); "
                "check its permissions, or restore the run directory from a backup"
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
        atomic_write(check_inside(self.root, self.root / MANIFEST), text.encode())

    def read_manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        if not self.root.is_dir():
            raise CheckpointError(f"run directory {self.root} does not exist; check the path")
        if not path.is_file():
            raise CheckpointError(
                f"{self.root} holds no {MANIFEST}; it is not a sisakit run directory (fit a model "
                "with SISA(workdir=...) to create one)"
            )
        check_inside(self.root, path)
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise CheckpointError(
                f"{path} is corrupt ({exc.__class__.__name__}: {str(exc)[:200]}); restore it from "
                "a backup or re-fit"
            ) from exc
        except OSError as exc:
            raise CheckpointError(
                f"{path} cannot be read ({exc.strerror or exc.__class__.__name__}); check its "
                "permissions, or restore the run directory from a backup"
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
        check_listed_names(self.root, manifest, "the manifest")
        return manifest

    def _unlisted(self, keep: Iterable[str]) -> list[Path]:
        keep_set = set(keep) | {MANIFEST}
        # A manifest swap torn by a crash leaves its temporary file next to the manifest.
        found = [p for p in self.root.glob(f".{MANIFEST}.*.tmp")
                 if p.is_file() and not p.is_symlink()]
        for sub in ("checkpoints", "state"):
            base = self.root / sub
            # A folder linked elsewhere is never swept: only files really inside the run go.
            if base.is_dir() and not base.is_symlink() and is_inside(self.root, base):
                found += [p for p in base.rglob("*")
                          if (p.is_file() or p.is_symlink())
                          and p.relative_to(self.root).as_posix() not in keep_set]
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
            try:
                path = self.path(name)
            except CheckpointError as exc:  # never follow a name out of the run directory
                logger.warning("%s", exc)
                continue
            path.unlink(missing_ok=True)


def listed_names(body: Mapping[str, Any]) -> list[Any]:
    """Every run-file name a manifest or fit journal lists (``files``, ``data_files``,
    ``checkpoints``, ``aggregator_file``), as stored (not yet validated)."""
    names: list[Any] = []
    files = body.get("files", {})
    names += list(files) if isinstance(files, Mapping) else [files]
    data_files = body.get("data_files", {})
    if isinstance(data_files, Mapping):
        if "space" in data_files:
            names.append(data_files["space"])
        shards = data_files.get("shards", [])
        names += list(shards) if isinstance(shards, list) else [shards]
    else:
        names.append(data_files)
    for stages in body.get("checkpoints", []) or []:
        names += list(stages) if isinstance(stages, list) else [stages]
    if body.get("aggregator_file") is not None:
        names.append(body["aggregator_file"])
    return names


def check_listed_names(root: str | os.PathLike[str], body: Mapping[str, Any], what: str) -> None:
    """Refuse (CheckpointError) a manifest or journal that names a file outside ``root``."""
    for name in listed_names(body):
        if name == "" and what == "the fit journal":
            continue  # a journal lists its data files before they all exist
        check_run_name(root, name, what)


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
