"""Scheduling a stream of forget requests: shard agents, policies, a decision log, simulation.

A :class:`Coordinator` sits in front of a fitted :class:`~sisakit.SISA` run. Each request is
acknowledged durably the moment it is submitted (:meth:`SISA.receive
<sisakit.SISA.receive>`: the run's ledger gets its ``received`` line and its raw ids an fsync'd
pending file) and applied later, alone or merged with others (:meth:`SISA.apply_received
<sisakit.SISA.apply_received>`), when its *policy* says so:

``immediate``
    One forget per request, in arrival order.
``batch``
    Requests are grouped by the shards they hit; a group is applied as one forget when it holds
    ``batch_size`` requests or its oldest request would otherwise exceed ``max_delay``.
``deadline``
    Requests wait as long as they can: every request whose deadline (arrival + ``max_delay``,
    minus its estimated retrain seconds) is reached is applied in one merged forget, together
    with the requests that would fall due while it runs as long as the merged forget still ends
    before the oldest request's deadline. With ``budget_seconds``, idle time is
    spent earlier on the pending request of highest priority (estimated influence per estimated
    retrain second), at most ``budget_seconds`` of early retraining per ``max_delay`` window.

No policy ever drops a request: a request is pending until the ledger marks it ``applied``;
:meth:`Coordinator.flush` applies all, and a crash leaves them in the ledger, where
:meth:`SISA.load <sisakit.SISA.load>` (or a new coordinator on the same run) applies them.
Every decision is appended to a JSON-lines log; :func:`sisakit.plots.coordinator_timeline`
draws it. :meth:`Coordinator.simulate` replays arrivals on a virtual clock whose retrain
durations are the measured ``ForgetReport.seconds`` of the
real forgets, so the timeline is faithful.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import check_float, check_int
from .errors import ValidationError
from .influence import estimate
from .ledger import DeletionLedger
from .sisa import SISA
from .sisa.layout import generation_of

__all__ = ["POLICIES", "Coordinator", "ShardAgent", "shard_agents"]

logger = logging.getLogger(__name__)

POLICIES = ("immediate", "batch", "deadline")


@dataclass(frozen=True)
class ShardAgent:
    """What one shard reports to the coordinator.

    Attributes
    ----------
    shard : int
        Shard index.
    size : int
        Training records left in the shard.
    records_per_slice : tuple of int
        Records left in each slice.
    generation : int
        Run generation of the shard's last checkpoint (0: never retrained since fit).
    checkpoint_time : float or None
        Modification time (Unix seconds) of the shard's last checkpoint file.
    stage_work : tuple of int
        Records × epochs of every slice stage (stage ``r`` trains slices ``0..r``).
    seconds_per_unit : float
        Measured seconds per record-epoch (calibration of the retrain estimate).
    val_loss : float or None
        Validation loss of the shard model; None (SISA keeps no validation data per shard).
    """

    shard: int
    size: int
    records_per_slice: tuple[int, ...]
    generation: int
    checkpoint_time: float | None
    stage_work: tuple[int, ...]
    seconds_per_unit: float
    val_loss: float | None = None

    def retrain_seconds(self, from_slice: int = 0) -> float:
        """Estimated seconds to retrain stages ``from_slice..R-1`` of this shard."""
        return float(sum(self.stage_work[from_slice:]) * self.seconds_per_unit)


def _seconds_per_unit(sisa: SISA) -> float:
    total = float(sisa.view().stage_work().sum())
    fit = float(sisa.timings.get("fit_seconds") or 0.0)
    return fit / total if total > 0 and fit > 0 else 1e-6


def shard_agents(sisa: SISA, seconds_per_unit: float | None = None) -> list[ShardAgent]:
    """One :class:`ShardAgent` per shard of a fitted run.

    Parameters
    ----------
    sisa : SISA
        A fitted run.
    seconds_per_unit : float, optional
        Seconds per record-epoch; default: the run's fit seconds over its fit work.

    Returns
    -------
    list of ShardAgent
    """
    view = sisa.view()
    rate = _seconds_per_unit(sisa) if seconds_per_unit is None else float(seconds_per_unit)
    S, R = view.n_shards, view.n_slices
    shard, slice_ = view.assignment
    per = np.bincount(shard * R + slice_, minlength=S * R).reshape(S, R)
    work = view.stage_work()
    out = []
    for s in range(S):
        last = view.checkpoints[s][-1]
        gen = generation_of(last) or 0
        try:
            mtime: float | None = (Path(sisa.workdir) / last).stat().st_mtime
        except OSError:
            mtime = None
        out.append(ShardAgent(shard=s, size=int(per[s].sum()),
                              records_per_slice=tuple(int(x) for x in per[s]), generation=gen,
                              checkpoint_time=mtime, stage_work=tuple(int(x) for x in work[s]),
                              seconds_per_unit=rate))
    return out


@dataclass
class _Request:
    rid: str
    at: float | None  # arrival time; None: recovered after a crash (due at once)
    first: dict[int, int]  # shard -> earliest slice hit
    influence: float
    applied_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Coordinator:
    """Schedule forget requests on a fitted run under a policy (see the module docs).

    Parameters
    ----------
    sisa : SISA
        A fitted run with a run directory (``workdir``).
    policy : {"immediate", "batch", "deadline"}
        When requests are applied.
    max_delay : float
        Seconds a request may wait (``batch`` and ``deadline``).
    batch_size : int
        Requests that make a shard group due at once (``batch``).
    budget_seconds : float, optional
        Retrain seconds per ``max_delay`` window that ``deadline`` may spend before deadlines,
        on the highest-priority requests. None or 0: never early.
    slack : float
        Share of ``max_delay`` held in reserve for retrains that run slower than estimated
        (a loaded machine): ``batch`` and ``deadline`` start a forget at the latest at
        ``(1 - slack) · max_delay`` after the oldest request's arrival, earlier if the padded
        estimate says so. In ``[0, 1)``; default 0.1.
    log : path, optional
        JSON-lines decision log (appended). Decisions are also kept in ``decisions``.

    Raises
    ------
    ValidationError
        On an unknown policy or a bad number.

    Notes
    -----
    Requests the run's ledger lists as received but not applied (e.g. after a crash) are
    adopted on construction and are due at once.
    """

    #: Factor on retrain-time estimates when planning deadlines.
    SAFETY = 1.25

    def __init__(self, sisa: SISA, policy: str = "immediate", *, max_delay: float = 60.0,
                 batch_size: int = 8, budget_seconds: float | None = None,
                 slack: float = 0.1, log: str | os.PathLike[str] | None = None) -> None:
        if not isinstance(sisa, SISA):
            raise ValidationError(f"Coordinator takes a fitted sisakit.SISA, got "
                                  f"{type(sisa).__name__}")
        sisa.view()  # raises if it is not fitted
        if policy not in POLICIES:
            raise ValidationError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
        self.sisa = sisa
        self.policy = policy
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.max_delay = check_float("max_delay", max_delay, minimum=0.0, min_open=True,
                                     example=60.0)
        self.budget_seconds = check_float("budget_seconds", budget_seconds, minimum=0.0,
                                          none=True) or 0.0
        self.slack = check_float("slack", slack, minimum=0.0, maximum=1.0, max_open=True,
                                 example=0.1)
        self.log_path = None if log is None else Path(log)
        self.decisions: list[dict[str, Any]] = []
        self.acknowledged: list[str] = []
        self.applied: list[str] = []
        self._pending: dict[str, _Request] = {}
        self._early: list[tuple[float, float]] = []  # (start, seconds) of budgeted forgets
        self._rate = _seconds_per_unit(sisa)
        # Fixed cost of a forget (aggregator refit, saving, the manifest swap): conservatively one
        # shard's fit time until a forget is measured, then the largest residual seen.
        self._overhead = float(sisa.timings.get("fit_seconds") or 0.0) / sisa.n_shards
        self._measured = False
        self._influence = self._influence_table()
        self._adopt()

    # ------------------------------------------------------------------ estimates
    def _influence_table(self) -> np.ndarray:
        return estimate(self.sisa)

    def agents(self) -> list[ShardAgent]:
        """The current :class:`ShardAgent` of every shard (calibrated retrain rate)."""
        return shard_agents(self.sisa, self._rate)

    def _first_slices(self, idx: np.ndarray, all_shards: bool = False) -> dict[int, int]:
        s = self.sisa
        if all_shards:
            return dict.fromkeys(range(s.n_shards), 0)
        view = s.view()
        return view.earliest_slices(np.isin(view.data.user_idx, idx))

    def estimate_seconds(self, requests: Iterable[str]) -> float:
        """Estimated retrain seconds of one merged forget of the given pending request ids."""
        first: dict[int, int] = {}
        for rid in requests:
            for sh, r in self._pending[rid].first.items():
                first[sh] = min(r, first.get(sh, r))
        return (self._overhead + self._work(first) * self._rate) * self.SAFETY

    def _work(self, first: dict[int, int]) -> float:
        if not first:
            return 0.0
        work = self.sisa.view().stage_work()
        return float(sum(work[s, r:].sum() for s, r in first.items()))

    # ------------------------------------------------------------------ requests
    @property
    def pending(self) -> list[str]:
        """Acknowledged request ids not yet applied, in arrival order."""
        return list(self._pending)

    def _adopt(self) -> None:
        """Take over requests the ledger holds as received (a crashed coordinator's queue)."""
        ledger = DeletionLedger(self.sisa.workdir)
        for entry in ledger.pending():
            rid = entry["request"]
            req = ledger.read_request(rid)
            idx = self.sisa.view().user_index(list(req.users)) if req.users else \
                np.array([], int)
            self._pending[rid] = _Request(
                rid, None, self._first_slices(idx, all_shards=bool(req.items)),
                float(self._influence[idx].sum()) if len(idx) else 0.0)
            self.acknowledged.append(rid)
            self._record({"time": None, "action": "recover", "requests": [rid]})
        if self._pending:
            logger.warning("adopted %d pending deletion request(s) from %s", len(self._pending),
                           self.sisa.workdir)

    def submit(self, users: Iterable[Any], *, at: float | None = None,
               request_id: str | None = None) -> str:
        """Acknowledge a request to forget users; it is durable when this returns.

        Parameters
        ----------
        users : iterable
            Raw user ids.
        at : float, optional
            Arrival time (seconds; virtual in a simulation). Default: ``time.time()``.
        request_id : str, optional
            Idempotency key (never personal data); default a fresh uuid4.

        Returns
        -------
        str
            The request id (in the run's ledger as ``received``).

        Raises
        ------
        UnknownIdError
            If a user id is unknown (nothing is acknowledged).
        ValidationError
            If ``users`` is empty or ``at`` is not a finite number.
        """
        at = time.time() if at is None else check_float("at", at, minimum=0.0)
        if isinstance(users, (str, bytes)) or np.ndim(users) == 0:
            raise ValidationError(f"users must be a list of raw ids, e.g. [{users!r}]")
        users = list(users)
        idx = self.sisa.view().user_index(users)  # UnknownIdError before anything is written
        rid = self.sisa.receive(users=users, request_id=request_id)
        if rid in self._pending or rid in self.applied:
            return rid
        self._pending[rid] = _Request(rid, at, self._first_slices(idx),
                                      float(self._influence[idx].sum()))
        self.acknowledged.append(rid)
        self._record({"time": at, "action": "submit", "requests": [rid],
                      "shards": sorted(self._pending[rid].first)})
        return rid

    # ------------------------------------------------------------------ policies
    def _est(self, rids: Sequence[str]) -> float:
        return self.estimate_seconds(rids)

    def _latest_start(self, arrival: float, rids: Sequence[str]) -> float:
        """When a forget of ``rids`` must start so the request that arrived at ``arrival``
        is applied within ``max_delay``: the padded estimate, and never later than the
        reserve (``slack``) allows, since an estimate cannot foresee a slow machine."""
        return arrival + min(self.max_delay - self._est(rids),
                             (1.0 - self.slack) * self.max_delay)

    def _due(self, now: float) -> tuple[float, list[str], str]:
        """(time, request ids, reason) of the next action; time ``inf`` when none is planned."""
        if not self._pending:
            return math.inf, [], ""
        reqs = list(self._pending.values())
        recovered = [r.rid for r in reqs if r.at is None]
        if recovered:
            return -math.inf, recovered, "recovered"
        if self.policy == "immediate":
            return reqs[0].at, [reqs[0].rid], "arrival"
        if self.policy == "batch":
            groups: dict[tuple[int, ...], list[_Request]] = {}
            for r in reqs:
                groups.setdefault(tuple(sorted(r.first)), []).append(r)
            best = (math.inf, [], "")
            for members in groups.values():
                rids = [m.rid for m in members]
                if len(members) >= self.batch_size:
                    cand = (members[self.batch_size - 1].at, rids, "full")
                else:
                    cand = (self._latest_start(members[0].at, rids), rids, "max_delay")
                if cand[0] < best[0]:
                    best = cand
            return best
        # deadline: the earliest deadline, with everything falling due while it runs
        dl = {r.rid: self._latest_start(r.at, [r.rid]) for r in reqs}
        t = min(dl.values())
        start = max(t, now)
        rids = [rid for rid, d in dl.items() if d <= start]
        oldest = min(self._pending[rid].at for rid in rids)
        # Requests falling due while the retrain runs ride along, in deadline order, as long as
        # the longer merged forget still ends (by its padded estimate) before the deadline of
        # the oldest request it carries.
        for rid in sorted((r for r in dl if r not in set(rids)), key=dl.__getitem__):
            if dl[rid] > start + self._est(rids):
                break
            if start + self._est([*rids, rid]) > oldest + self.max_delay:
                break
            rids.append(rid)
        if self.budget_seconds > 0 and t > now:
            spent = sum(sec for st, sec in self._early if st + self.max_delay > now)
            best = max(reqs, key=lambda r: (r.influence / max(self._est([r.rid]), 1e-9), -r.at))
            mates = [r.rid for r in reqs if set(r.first) <= set(best.first)]
            if spent + self._est(mates) <= self.budget_seconds:
                return now, mates, "budget"
            # budget frees up when the oldest early spend leaves the window
            free = min((st + self.max_delay for st, _ in self._early
                        if st + self.max_delay > now), default=math.inf)
            if free < t:
                return free, [], "budget-retry"
        return t, rids, "deadline"

    def _act(self, now: float, rids: list[str], reason: str) -> float:
        """Apply one merged forget of ``rids`` starting at ``now``; returns its end time."""
        est = self._est(rids)
        work = self._work({k: v for rid in rids for k, v in self._pending[rid].first.items()})
        arrivals = [self._pending[rid].at for rid in rids]
        report = self.sisa.apply_received(rids)
        end = now + report.seconds
        if report.seconds > 0:  # calibrate the fixed cost on the measured forget
            residual = max(report.seconds - work * self._rate, 0.0)
            self._overhead = residual if not self._measured else max(self._overhead, residual)
            self._measured = True
        if reason == "budget":
            self._early.append((now, report.seconds))
        for rid in rids:
            req = self._pending.pop(rid)
            req.applied_at = end
            self.applied.append(rid)
        self._record({
            "time": now, "action": "apply", "reason": reason, "requests": rids,
            "arrivals": arrivals,
            "shards": report.shards_retrained, "earliest_slice": report.earliest_slice,
            "seconds": report.seconds, "estimated_seconds": est, "end": end,
            "work_fraction": report.work_fraction})
        return end

    def tick(self, now: float | None = None) -> list[dict[str, Any]]:
        """Apply everything the policy says is due at ``now``.

        Parameters
        ----------
        now : float, optional
            Current time (virtual in a simulation); default ``time.time()``.

        Returns
        -------
        list of dict
            The ``apply`` decisions taken (see ``decisions``).
        """
        now = time.time() if now is None else check_float("now", now, minimum=0.0)
        t, taken = now, []
        while True:
            due, rids, reason = self._due(t)
            if due > now or not rids:
                return taken
            t = self._act(max(t, due), rids, reason)
            taken.append(self.decisions[-1])

    def flush(self, now: float | None = None) -> list[dict[str, Any]]:
        """Apply every pending request now (one merged forget).

        Returns
        -------
        list of dict
            The ``apply`` decision (empty when nothing was pending).
        """
        now = time.time() if now is None else check_float("now", now, minimum=0.0)
        if not self._pending:
            return []
        self._act(now, list(self._pending), "flush")
        return [self.decisions[-1]]

    # ------------------------------------------------------------------ simulation
    def simulate(self, arrivals: Iterable[tuple[float, Iterable[Any]]]) -> dict[str, Any]:
        """Replay a stream of requests on a virtual clock.

        One forget runs at a time; it starts when the policy says so (or when the previous one
        ends) and lasts its measured ``ForgetReport.seconds``. Requests arriving
        meanwhile are acknowledged at their arrival time.

        Parameters
        ----------
        arrivals : iterable of (time, users)
            Arrival time (seconds, virtual) and raw user ids of each request.

        Returns
        -------
        dict
            ``n_requests``, ``n_acknowledged``, ``n_applied``, ``n_forgets``,
            ``total_retrain_seconds``, ``max_latency``, ``mean_latency`` (seconds from arrival
            to the end of the forget that applied it), ``makespan``, ``latencies`` and
            ``request_ids``.
        """
        events = sorted(((float(t), list(u)) for t, u in arrivals), key=lambda e: e[0])
        clock, i, rids, n_apply0 = 0.0, 0, [], sum(d["action"] == "apply" for d in self.decisions)
        while True:
            if i < len(events) and events[i][0] <= clock:
                rids.append(self.submit(events[i][1], at=events[i][0]))
                i += 1
                continue
            nxt = events[i][0] if i < len(events) else math.inf
            due, todo, reason = self._due(clock)
            if not todo and due == math.inf and nxt == math.inf:
                break
            if due <= nxt:
                start = max(clock, due)
                clock = self._act(start, todo, reason) if todo else start
            else:
                clock = nxt
        applies = [d for d in self.decisions if d["action"] == "apply"][n_apply0:]
        end = {rid: d["end"] for d in applies for rid in d["requests"]}
        lat = np.array([end[r] - t for r, (t, _) in zip(rids, events, strict=True)])
        return {
            "policy": self.policy, "n_requests": len(events),
            "n_acknowledged": len(rids), "n_applied": sum(r in end for r in rids),
            "n_forgets": len(applies),
            "total_retrain_seconds": float(sum(d["seconds"] for d in applies)),
            "max_latency": float(lat.max()) if len(lat) else 0.0,
            "mean_latency": float(lat.mean()) if len(lat) else 0.0,
            "makespan": clock, "latencies": lat.tolist(), "request_ids": rids,
        }

    # ------------------------------------------------------------------ log
    def _record(self, decision: dict[str, Any]) -> None:
        decision = {"policy": self.policy, **decision}
        self.decisions.append(decision)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(decision, sort_keys=True) + "\n")
        logger.debug("coordinator %s", decision)
