"""Durable deletion requests: the ledger, the run lock, pending requests, ``receive`` /
``apply_received``, and catching up with what another process committed.

A request is received (fsync'd ledger line and pending file) before any work, applied under the
run lock, and marked applied after the manifest swap; a crash in between is finished by the next
load, resume or forget. See :mod:`sisakit.ledger` for the files.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._hashing import salted_digest
from ..errors import CheckpointError, SisakitError, ValidationError
from ..ledger import DeletionLedger, RunLock, check_request_id, new_request_id
from ..requests import ForgetReport, ForgetRequest
from .repository import Repository, same_commit
from .state import RunState

__all__ = ["Durability", "EngineHooks"]

logger = logging.getLogger(__name__)

KINDS = ("users", "items", "interactions")


def check_lock_timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or (
            not 0 <= value < float("inf")):
        raise ValidationError(f"lock_timeout must be a finite number of seconds >= 0, got "
                              f"{value!r}")
    return float(value)


@dataclass(frozen=True)
class EngineHooks:
    """What the request protocol needs of the engine that owns it."""

    state: Callable[[], RunState]  # the committed state
    repo: Callable[[], Repository]
    catch_up: Callable[[], None]  # reload what another process committed
    resolve: Callable[[ForgetRequest], Any]  # a request's resolution (no side effect)
    user_index: Callable[[Any], np.ndarray]  # raw user ids -> indices (UnknownIdError)
    apply: Callable[..., ForgetReport]  # apply(request, rid, batch=, resolution=): commit


class Durability:
    """The request protocol of one :class:`~sisakit.SISA` object (its lock depth, lock
    timeout and ledger reader)."""

    def __init__(self, engine: EngineHooks, root: Path, lock_timeout: float = 60.0) -> None:
        self.engine = engine
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self.depth = 0
        self._ledger: DeletionLedger | None = None

    @property
    def ledger(self) -> DeletionLedger:
        # One reader per run object: it keeps what it parsed and reads only what was appended
        # since (by any process), so a forget's cost does not grow with the ledger's length.
        if self._ledger is None:
            self._ledger = DeletionLedger(self.root)
        return self._ledger

    # ------------------------------------------------------------------ the lock
    @contextlib.contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[None]:
        """Take the run lock (for a fit: no state to catch up with)."""
        with RunLock(self.root, self.lock_timeout if timeout is None else timeout):
            self.depth = 1
            try:
                yield
            finally:
                self.depth = 0

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run lock (re-entrant within this object); on taking it, reload the run if
        another process committed since this object last read or wrote it."""
        if self.depth:
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
            return
        with self.hold():
            self.refuse_interrupted_fit()
            self.engine.catch_up()
            yield

    def refuse_interrupted_fit(self) -> None:
        """Under the lock: refuse to change a run whose refit another process left unfinished
        (its new files would collide with ours); clean up after one that had committed."""
        repo = self.engine.repo()
        if not repo.journal.exists():
            return
        with contextlib.suppress(CheckpointError):
            if repo.fit_committed(repo.journal.read()) is not None:
                repo.journal.remove()  # it committed; its leftovers are swept by the next commit
                repo.needs_sweep = True
                return
        raise CheckpointError(
            f"{self.root} holds a refit that was interrupted (a process was killed during "
            f"fit); finish it with SISA.load({str(self.root)!r}) or `sisakit resume "
            f"{self.root}` before changing the run")

    # ------------------------------------------------------------------ requests
    def run_tag(self) -> str:
        """Names this fit in ledger lines (the id hashes' salt changes with every fit)."""
        return salted_digest("run", self.engine.state().salt)[:16]

    def hashes(self, request: ForgetRequest) -> dict[str, list[str]]:
        digest = self.engine.state().digest
        return {kind: [digest(kind, raw) for raw in getattr(request, kind)] for kind in KINDS}

    def same_request(self, rid: str, hashes: dict[str, list[str]]) -> bool:
        """Whether ``rid``'s received request (in the ledger) had exactly these ids, in any
        order; True also when it was never received. A request id names one request: reusing
        it for other ids would silently drop them, so that raises instead."""
        line = self.ledger.received_line(rid)
        if line is None:
            return True
        ours = {k: sorted(set(v)) for k, v in hashes.items() if v}
        theirs = {k: sorted(set(v)) for k, v in (line.get("ids") or {}).items() if v}
        if line.get("run", self.run_tag()) != self.run_tag():
            why = "a request on an earlier fit of this run directory"
        elif ours != theirs:
            why = "a request with different ids"
        else:
            return True
        raise ValidationError(
            f"request id {rid!r} was already used for {why}; a request id names one deletion "
            "request (resubmitting the same ids under it is a no-op): pass a new request_id for "
            "this request")

    def forget(self, request: ForgetRequest, request_id: str | None) -> ForgetReport:
        """Ledger, lock and apply one request (what ``forget`` and the ``sisa`` unlearner run)."""
        if request.is_empty():
            raise ValidationError("empty forget request; pass users=, interactions= or items=")
        rid = new_request_id() if request_id is None else check_request_id(request_id)
        with self.locked():
            self.finish_pending()
            hashes = self.hashes(request)
            if self.ledger.state(rid) == "applied" and self.same_request(rid, hashes):
                logger.info("deletion request %s was applied before; nothing to do", rid)
                counts = {k: len(getattr(request, k)) for k in KINDS}
                return ForgetReport(already_forgotten={k: v for k, v in counts.items() if v})
            # Resolve the ids before anything is written: a request refused for unknown ids
            # leaves the run directory unchanged (the resolution is reused by the forget).
            resolution = self.engine.resolve(request)
            self.ledger.receive(rid, request, hashes, run=self.run_tag())
            return self.apply_logged(request, rid, resuming=False, resolution=resolution)

    def apply_logged(self, request: ForgetRequest, rid: str, *, resuming: bool,
                     resolution: Any = None) -> ForgetReport:
        """Apply a received request and append its final ledger line (call under the lock)."""
        try:
            report = self.engine.apply(request, rid, resolution=resolution)
        except BaseException as exc:
            entry = self._committed(rid)
            if entry is not None:
                # The manifest swap happened before the error: the request is applied.
                self.ledger.mark_applied(rid, int(entry.get("generation",
                                                            self.engine.state().generation)))
            elif not resuming or isinstance(exc, SisakitError):
                # Not acknowledged (the caller sees the error), or it can never succeed.
                try:
                    self.ledger.mark_failed(rid, exc)
                except OSError as io_exc:
                    logger.error("could not record that deletion request %s failed (%s); it "
                                 "stays pending and is retried by the next load", rid, io_exc)
            raise
        self.ledger.mark_applied(rid, self.engine.state().generation,
                                 records_removed=report.records_removed)
        return report

    def _committed(self, rid: str, key: str = "request", value: Any = None) -> Any:
        """The history entry of the last commit if it applied ``rid`` (``history[-1][key] ==
        value``): in memory, or on disk when the error came after the manifest swap."""
        want = rid if value is None else value
        history = list(self.engine.state().history)
        if not (history and history[-1].get(key) == want):
            with contextlib.suppress(CheckpointError, OSError, AttributeError, TypeError):
                history = list(self.engine.repo().store.read_manifest().get("history") or [])
        return history[-1] if history and history[-1].get(key) == want else None

    def finish_pending(self) -> list[dict[str, Any]]:
        """Apply the pending requests in the order received (call under the lock)."""
        ledger = self.ledger
        ledger.sweep()
        done: list[dict[str, Any]] = []
        for entry in ledger.pending():
            done.append(self._finish_one(entry["request"]))
        ledger.sweep()
        return done

    def _finish_one(self, rid: str) -> dict[str, Any]:
        ledger, state = self.ledger, self.engine.state()
        committed = next((h for h in state.history if h.get("request") == rid
                          or rid in h.get("requests", ())), None)
        if committed is not None:  # crashed after the manifest swap, before the ledger line
            generation = int(committed.get("generation", state.generation))
            ledger.mark_applied(rid, generation)
            return {"request": rid, "state": "applied", "generation": generation,
                    "report": committed.get("report")}
        try:
            request = ledger.read_request(rid)
        except CheckpointError as exc:
            logger.error("%s", exc)
            ledger.mark_failed(rid, "RawIdsUnreadable")
            return {"request": rid, "state": "failed", "error": "RawIdsUnreadable"}
        try:
            report = self.apply_logged(request, rid, resuming=True)
        except SisakitError as exc:
            logger.error("pending deletion request %s cannot be applied: %s", rid, exc)
            return {"request": rid, "state": "failed", "error": type(exc).__name__}
        return {"request": rid, "state": "applied", "generation": self.engine.state().generation,
                "report": report.as_dict()}

    def receive(self, request: ForgetRequest, request_id: str | None) -> str:
        """Durably acknowledge a request without applying it (see ``SISA.receive``)."""
        if request.is_empty():
            raise ValidationError("empty deletion request; pass users= or items=")
        rid = new_request_id() if request_id is None else check_request_id(request_id)
        if request.users:
            self.engine.user_index(list(request.users))  # UnknownIdError before anything
        if request.items:
            self.engine.state().data.resolve(items=list(request.items))
        with self.locked():
            hashes = self.hashes(request)
            if self.ledger.state(rid) in ("received", "applied") and self.same_request(rid,
                                                                                       hashes):
                logger.info("deletion request %s was received before; not received twice", rid)
                return rid
            self.ledger.receive(rid, request, hashes, run=self.run_tag())
        return rid

    def apply_received(self, request_ids: Sequence[str]) -> ForgetReport:
        """Apply several received requests as one forget (see ``SISA.apply_received``)."""
        if isinstance(request_ids, (str, bytes)) or not isinstance(
                request_ids, (Sequence, np.ndarray, set, frozenset)):
            raise ValidationError(
                f"request_ids must be a list of request ids returned by receive(), got "
                f"{type(request_ids).__name__} {request_ids!r:.80}; pass e.g. [rid]")
        ids = list(dict.fromkeys(check_request_id(r) for r in request_ids))
        with self.locked():
            states = self.ledger.states()
            missing = [r for r in ids if r not in states]
            if missing:
                raise ValidationError(
                    f"request id(s) {missing[:5]} are not in the ledger of {self.root}; pass "
                    "ids returned by receive() on this run")
            todo = [r for r in ids if states[r] == "received"]
            if not todo:
                return ForgetReport()
            parts = [self.ledger.read_request(r) for r in todo]
            merged = ForgetRequest(
                users=list(dict.fromkeys(u for p in parts for u in p.users)),
                items=list(dict.fromkeys(i for p in parts for i in p.items)))
            try:
                report = self.engine.apply(merged, todo[0], batch=todo)
            except BaseException:
                entry = self._committed(todo[0], "requests", todo)
                if entry is not None:  # the manifest swap happened: they are applied
                    self._mark_applied(todo, entry.get("generation"))
                else:
                    logger.error("deletion requests %s stay pending: the batched forget failed",
                                 todo)
                raise
            self._mark_applied(todo)
            return report

    def _mark_applied(self, todo: list[str], generation: Any = None) -> None:
        generation = self.engine.state().generation if generation is None else int(generation)
        for rid in todo:
            self.ledger.mark_applied(rid, generation, batch=todo[0])

    def pending_requests(self) -> list[dict[str, Any]]:
        return [{k: e.get(k) for k in ("request", "time", "kinds", "counts")}
                for e in self.ledger.pending()]

    # ------------------------------------------------------------------ after a crash
    def try_sweep(self) -> None:
        """Delete what a killed process left behind (staged files of a forget or repartition
        that never committed, a torn manifest write), if the run lock is free right now."""
        repo, state = self.engine.repo(), self.engine.state()
        try:
            with RunLock(self.root, 0):
                if repo.journal.exists():
                    return  # an unfinished refit's files: never swept
                if not same_commit(repo.store.read_manifest(), state.generation, state.salt):
                    return  # another process committed meanwhile; its next commit sweeps
                repo.store.remove_unlisted(state.files)
                repo.needs_sweep = False
        except (CheckpointError, OSError) as exc:  # busy or read-only: a later commit sweeps
            logger.info("left %s's stale files for a later commit to remove (%s)", self.root,
                        exc)
