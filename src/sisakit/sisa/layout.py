"""Every name, pattern and generation rule of a run directory, in one place.

A run directory holds::

    manifest.json                          the commit point (self-checksummed)
    state/space.g<G>.npz                   the id space (id maps, item_active, attributes)
    state/records-shard-<SSSS>.g<G>.npz    one shard's records and their slices
    state/aggregator.g<G>.pt               a fitted aggregator's state
    checkpoints/shard-<SSSS>/slice-<RRRR>.g<G>.pt
                                           a shard's model after slice stage R
    ledger.jsonl, pending/                 the deletion ledger (sisakit.ledger)
    fit/                                   the journal of an unfinished fit (sisakit._fitjournal)
    run.lock                               the run lock

``G`` is the generation of the commit that wrote the file. A change writes its files under a
generation no file uses yet, so the committed run stays intact until the manifest swap.
"""

from __future__ import annotations

import re
from pathlib import Path

from .._fitjournal import FIT_DIR
from .._training import checkpoint_name

__all__ = ["aggregator_name", "checkpoint_name", "checkpoint_names", "generation_of",
           "is_aggregator_file", "is_own_leftover", "records_name", "space_name"]

#: The folders that hold generation-tagged files.
TAGGED_DIRS = ("checkpoints", "state")
_TAG = re.compile(r"\.g(\d+)\.")
_LEFTOVER_STATE = re.compile(r"(space|records-shard-\d{4})\.g\d+\.npz|\..+\.tmp")


def space_name(generation: int) -> str:
    """The id-space file of a generation."""
    return f"state/space.g{generation}.npz"


def records_name(shard: int, generation: int) -> str:
    """The records file of one shard in a generation."""
    return f"state/records-shard-{shard:04d}.g{generation}.npz"


def aggregator_name(generation: int) -> str:
    """The fitted aggregator's state file of a generation."""
    return f"state/aggregator.g{generation}.pt"


def is_aggregator_file(name: str) -> bool:
    return name.startswith("state/aggregator.")


def checkpoint_names(n_shards: int, n_slices: int, generation: int) -> list[list[str]]:
    """``[shard][stage]`` checkpoint names of a run trained entirely in ``generation``."""
    return [[checkpoint_name(s, r, generation) for r in range(n_slices)]
            for s in range(n_shards)]


def generation_of(name: str) -> int | None:
    """The generation a run file's name carries (None for an untagged name)."""
    m = _TAG.search(Path(name).name)
    return int(m.group(1)) if m else None


def is_own_leftover(path: Path) -> bool:
    """Whether ``path`` (in a workdir holding no run) is what a fit killed before writing its
    journal leaves behind: the run lock, data files and the journal folder's temporary file."""
    if path.name == "run.lock":
        return path.is_file()
    if path.name == FIT_DIR and path.is_dir():
        return all(c.name.startswith(".journal.json.") and c.name.endswith(".tmp")
                   for c in path.iterdir())
    if path.name == "state" and path.is_dir():
        return all(_LEFTOVER_STATE.fullmatch(c.name) for c in path.iterdir())
    return False
