"""The one commit mechanism of fit, repartition and forget.

A change stages its files under a new generation (so the committed run stays intact), builds a
new :class:`~.state.RunState`, and commits it by swapping the manifest. Until the swap, an error
(or a crash) changes nothing: the staged files are removed and the caller keeps its old state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from .config import SISAConfig
from .repository import Repository
from .state import RunState

__all__ = ["Transaction"]


class Transaction:
    """Stage, then commit or roll back, one change of a run.

    Use as a context manager::

        with Transaction(repo, base=state) as tx:
            ...train, adding each staged file's sha256 to tx.files...
            new = tx.commit(new_state, config, determinism, shards=..., space=...)

    Parameters
    ----------
    repo : Repository
    base : RunState or None
        The committed state (None for a first fit). ``files`` starts as its files.
    cleanup : bool
        Whether an error removes the staged files (False when resuming an interrupted fit,
        whose files stay resumable).
    on_abort : callable, optional
        Called after an error before the commit (e.g. to drop the fit journal).
    """

    def __init__(self, repo: Repository, base: RunState | None = None, *, cleanup: bool = True,
                 on_abort: Callable[[], None] | None = None) -> None:
        self.repo = repo
        self.base_files: Mapping[str, str] = dict(base.files) if base is not None else {}
        self.files: dict[str, str] = dict(self.base_files)
        self.planned: set[str] = set()  # staged names that may not be in files yet
        self.cleanup = cleanup
        self.on_abort = on_abort
        self.committed = False

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None or self.committed:
            return
        if self.on_abort is not None:
            self.on_abort()
        if self.cleanup:  # a new generation: none of these names is listed by the old run
            self.repo.store.remove_files((set(self.files) | self.planned) - set(self.base_files))

    def commit(self, state: RunState, config: SISAConfig, determinism: Mapping[str, Any], *,
               shards: Iterable[int] = (), space: bool = False,
               on_commit: Callable[[RunState], None] | None = None) -> RunState:
        """Write the changed data files and swap the manifest: from here on the change is
        durable. ``on_commit(state)`` runs right after the swap (the caller installs the new
        state there, so no later error can leave it holding the old one). Returns the
        committed state (with its file list)."""

        def swapped(committed: RunState) -> None:
            self.committed = True  # from here on nothing staged may be removed
            if on_commit is not None:
                on_commit(committed)

        return self.repo.commit(state, config, determinism, self.files,
                                previous=self.base_files, shards=shards, space=space,
                                on_swap=swapped)
