"""Durable deletion requests: an append-only, fsync'd request ledger and a run-directory lock.

A deletion request is a legal obligation, so :meth:`sisakit.SISA.forget` never acknowledges one
it could still lose. In the run directory:

``ledger.jsonl``
    One JSON object per line, appended and fsync'd, never rewritten. A request gets a
    ``received`` line (request id, time, kinds, counts and the *salted hashes* of its ids) before
    any work starts, and an ``applied`` line (with the manifest generation that holds it) after
    the manifest swap — or a ``failed`` line (the error's class only: messages may quote raw
    ids) if the forget raised. The ledger never holds a raw id.
``pending/<request id>.json``
    The raw ids of a request that is received but not yet applied: a crashed process needs them
    to finish the request. The file is written atomically and fsync'd *before* the ``received``
    line, and deleted right after the ``applied`` (or ``failed``) line, so raw ids exist on disk
    only while their request is pending. A pending file without a ``received`` line (a crash
    between the two writes: the request was never received, nor acknowledged) is deleted.
``run.lock``
    An exclusive ``flock`` serialising every process that changes the run (fit, forget, resume,
    repartition). The operating system drops the lock when its process dies, so a crashed
    process never leaves the run locked.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from ._clock import utc_now
from .errors import CheckpointError, ValidationError
from .requests import ForgetRequest
from .store import atomic_write, check_inside, fsync_dir

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

__all__ = ["LEDGER", "LOCK", "PENDING", "DeletionLedger", "RunLock", "check_request_id",
           "new_request_id"]

logger = logging.getLogger(__name__)

LEDGER = "ledger.jsonl"
PENDING = "pending"
LOCK = "run.lock"
RECEIVED, APPLIED, FAILED = "received", "applied", "failed"
KINDS = ("users", "items", "interactions")
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_GUARD = 64  # bytes before the parsed offset that must be unchanged for an incremental read


def new_request_id() -> str:
    """A fresh random request id (uuid4, 32 hex digits)."""
    return uuid.uuid4().hex


def check_request_id(value: Any) -> str:
    """Validate a caller-chosen request id (an idempotency key, e.g. a ticket number).

    It must be 1-128 characters of letters, digits and ``._:-``, starting with a letter or a
    digit, and must not contain personal data: it is stored in the ledger as is.
    """
    if not isinstance(value, str) or not _REQUEST_ID.fullmatch(value):
        raise ValidationError(
            f"request_id must be 1-128 characters of letters, digits and '._:-' (starting with a "
            f"letter or digit), got {value!r}; pass e.g. a ticket number, never a user id"
        )
    return value


def _is_entry(raw: bytes) -> bool:
    try:
        entry = json.loads(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError:
        return False
    return isinstance(entry, dict)




class DeletionLedger:
    """The request ledger and pending raw ids of one run directory.

    Parameters
    ----------
    root : path
        The run directory.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.path = self.root / LEDGER
        self.pending_dir = self.root / PENDING
        self._reset()

    # -- reading ------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._entries: list[dict[str, Any]] = []
        self._states: dict[str, str] = {}
        self._pending: dict[str, dict[str, Any]] = {}  # insertion order = order received
        self._received: dict[str, dict[str, Any]] = {}  # the latest received line per id
        self._offset = 0  # bytes of the file parsed so far
        self._guard = b""  # the last bytes before the offset, to detect a rewritten file
        self._ident: tuple[int, int] | None = None
        self._lines = 0
        self._torn: tuple[int, int] | None = None

    def _refresh(self) -> None:
        """Parse what was appended since the last read (by this or any other process).

        The parsed state is kept, so reading the ledger costs what was appended since, not its
        length. A ledger that was replaced, truncated or rewritten (its identity or the bytes
        before the parsed offset changed) is parsed again from the start.
        """
        try:
            with open(self._inside(self.path), "rb") as fh:
                st = os.fstat(fh.fileno())
                ident = (st.st_dev, st.st_ino)
                if self._offset and (ident != self._ident or st.st_size < self._offset
                                     or self._read_guard(fh) != self._guard):
                    self._reset()
                self._ident = ident
                fh.seek(self._offset)
                tail = fh.read()
        except FileNotFoundError:
            self._reset()
            return
        except OSError as exc:
            raise CheckpointError(
                f"cannot read the deletion ledger {self.path} ({exc.strerror or exc}); restore it "
                "from a backup (it must be a readable file) before changing this run"
            ) from exc
        end = tail.rfind(b"\n") + 1
        if end < len(tail) and _is_entry(tail[end:]):
            end = len(tail)  # complete but for its newline (the next append starts a new line)
        elif end < len(tail) and self._torn != (self._offset + end, len(tail) - end):
            # An unterminated last line: a write torn by a crash (the next append starts a fresh
            # line after it). It is parsed, and skipped, once it is terminated.
            self._torn = (self._offset + end, len(tail) - end)
            logger.warning("%s line %d is not valid JSON (a write torn by a crash); skipped",
                           self.path, self._lines + tail[:end].count(b"\n") + 1)
        if not end:
            return
        for raw in tail[:end].splitlines():
            self._lines += 1
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s line %d is not valid JSON (a write torn by a crash); skipped",
                               self.path, self._lines)
                continue
            if isinstance(entry, dict) and isinstance(entry.get("request"), str):
                self._add(entry)
        self._offset += end
        self._guard = (self._guard + tail[max(0, end - _GUARD):end])[-_GUARD:]

    def _read_guard(self, fh: Any) -> bytes:
        fh.seek(max(0, self._offset - _GUARD))
        return fh.read(min(_GUARD, self._offset))

    def _inside(self, path: Path) -> Path:
        """``path`` (the ledger or ``pending/``), refused if it is a link out of the run."""
        if path.exists() or path.is_symlink():
            check_inside(self.root, path)
        return path

    def _add(self, entry: dict[str, Any]) -> None:
        rid = entry["request"]
        if not _REQUEST_ID.fullmatch(rid):  # it names a pending file: never a path
            raise CheckpointError(
                f"the deletion ledger {self.path} lists request id {rid[:80]!r}, which sisakit "
                "never writes (it was tampered with); restore the ledger from a backup"
            )
        self._entries.append(entry)
        self._states[rid] = entry.get("state", "")
        self._pending.pop(rid, None)
        if entry.get("state") == RECEIVED:
            self._pending[rid] = entry
            self._received[rid] = entry

    def entries(self) -> list[dict[str, Any]]:
        """Every well-formed ledger line, in order (a torn last line of a crash is skipped)."""
        self._refresh()
        return list(self._entries)

    def states(self) -> dict[str, str]:
        """The latest state of every request id."""
        self._refresh()
        return dict(self._states)

    def state(self, request_id: str) -> str | None:
        """The latest state of one request id (None if the ledger does not list it)."""
        self._refresh()
        return self._states.get(request_id)

    def received_line(self, request_id: str) -> dict[str, Any] | None:
        """The latest ``received`` line of one request id (None if it was never received):
        what a reuse of the id is compared with (its salted id hashes and run tag)."""
        self._refresh()
        return self._received.get(request_id)

    def pending(self) -> list[dict[str, Any]]:
        """``received`` lines of requests neither applied nor failed, oldest first."""
        self._refresh()
        return list(self._pending.values())

    def has_pending_files(self) -> bool:
        """Whether any file (pending raw ids, or a write torn by a crash) is in ``pending/``."""
        return self._inside(self.pending_dir).is_dir() and any(self.pending_dir.iterdir())

    def _pending_file(self, request_id: str) -> Path:
        return self._inside(self.pending_dir) / f"{check_request_id(request_id)}.json"

    def read_request(self, request_id: str) -> ForgetRequest:
        """The raw ids of a pending request.

        Raises
        ------
        CheckpointError
            If its pending file is missing or unreadable.
        """
        path = self._pending_file(request_id)
        try:
            body = json.loads(path.read_text())
            if body.get("request") != request_id:
                raise ValueError(f"it belongs to request {body.get('request')!r}")
            return ForgetRequest(**{k: body.get(k, []) for k in KINDS})
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"the raw ids of pending deletion request {request_id} ({path}) cannot be read "
                f"({exc.__class__.__name__}: {exc}); the request must be submitted again"
            ) from exc

    # -- writing ------------------------------------------------------------------------------
    def receive(self, request_id: str, request: ForgetRequest,
                hashes: dict[str, list[str]], run: str | None = None) -> dict[str, Any]:
        """Make a request durable: its raw ids in a pending file, then the ``received`` line.

        Parameters
        ----------
        request_id : str
            The request id.
        request : ForgetRequest
            The raw ids.
        hashes : dict
            Salted hashes of the ids, by kind (what the ledger stores).
        run : str, optional
            A tag of the fitted run the hashes belong to (their salt changes with every fit),
            so a request id reused after a refit is not mistaken for the same request.

        Returns
        -------
        dict
            The ``received`` line.
        """
        raw = {k: [list(v) if k == "interactions" else v for v in getattr(request, k)]
               for k in KINDS}
        path = self._pending_file(request_id)
        try:
            atomic_write(path, json.dumps({"request": request_id, **raw}).encode())
        except OSError as exc:  # e.g. "pending" is a file: the request was not received
            raise CheckpointError(
                f"cannot write the pending deletion request {path} ({exc.strerror or exc}); "
                f"{self.pending_dir} must be a writable folder of the run (remove or rename what "
                "is there). The request was not received; submit it again"
            ) from exc
        entry = {
            "request": request_id, "state": RECEIVED, "time": utc_now(),
            "kinds": [k for k in KINDS if raw[k]],
            "counts": {k: len(raw[k]) for k in KINDS if raw[k]},
            "ids": {k: list(v) for k, v in hashes.items() if v},
        }
        if run is not None:
            entry["run"] = run
        self._append(entry)
        return entry

    def mark_applied(self, request_id: str, generation: int, **extra: Any) -> None:
        """Append the ``applied`` line, then delete the request's raw ids."""
        self._append({"request": request_id, "state": APPLIED, "time": utc_now(),
                      "generation": int(generation), **extra})
        self._drop_pending_file(request_id)

    def mark_failed(self, request_id: str, error: BaseException | str) -> None:
        """Append a ``failed`` line (the error's class, never its message), then delete the
        request's raw ids: it was not acknowledged and must be submitted again."""
        name = error if isinstance(error, str) else type(error).__name__
        self._append({"request": request_id, "state": FAILED, "time": utc_now(), "error": name})
        self._drop_pending_file(request_id)

    def sweep(self) -> None:
        """Delete pending files of no pending request (a crash before the ``received`` line, or
        after the final line) and temporary files torn by a crash. Call it under the lock."""
        if not self._inside(self.pending_dir).is_dir():
            return
        keep = {f"{e['request']}.json" for e in self.pending()}
        for path in self.pending_dir.iterdir():
            if path.name not in keep:
                logger.info("removing %s: it belongs to no pending request", path)
                path.unlink(missing_ok=True)
        self._drop_empty_dir()

    def _drop_pending_file(self, request_id: str) -> None:
        self._pending_file(request_id).unlink(missing_ok=True)
        fsync_dir(self.pending_dir)
        self._drop_empty_dir()

    def _drop_empty_dir(self) -> None:
        try:
            self.pending_dir.rmdir()
        except OSError:  # not empty (another pending request), or already gone
            return
        fsync_dir(self.root)

    def _append(self, entry: dict[str, Any]) -> None:
        data = (json.dumps(entry, sort_keys=True) + "\n").encode()
        new = not self._inside(self.path).exists()
        with open(self.path, "ab+") as fh:  # appends go to the end whatever the position
            if fh.seek(0, os.SEEK_END):
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    data = b"\n" + data  # a crash tore the last line: start on a fresh one
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if new:
            fsync_dir(self.root)


class RunLock:
    """An exclusive, inter-process lock on a run directory (``run.lock``).

    Parameters
    ----------
    root : path
        The run directory.
    timeout : float
        Seconds to wait for another process to release the lock.

    Raises
    ------
    CheckpointError
        On entering, if the lock is still held after ``timeout`` seconds.
    """

    _POLL = 0.05

    def __init__(self, root: str | os.PathLike[str], timeout: float) -> None:
        self.root = Path(root)
        self.timeout = float(timeout)
        self._fd: int | None = None

    def _try(self, fd: int) -> bool:
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover - Windows
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def __enter__(self) -> RunLock:
        path = self.root / LOCK
        if path.is_symlink():
            check_inside(self.root, path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise CheckpointError(
                f"cannot create the lock file {path} ({exc.strerror}); changing a run needs write "
                "access to its directory (to only read a run, load it with resume=False)"
            ) from exc
        deadline = time.monotonic() + self.timeout
        while not self._try(fd):
            if time.monotonic() >= deadline:
                os.close(fd)
                raise CheckpointError(
                    f"{self.root} is locked by another process (a fit, forget, resume or "
                    f"repartition is running) and was not released within {self.timeout:g} s; "
                    "retry later or raise lock_timeout (the lock is released when that process "
                    "ends)"
                )
            time.sleep(self._POLL)
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:  # pragma: no cover - Windows
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(fd)
