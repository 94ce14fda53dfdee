"""sisakit: machine unlearning for recommender systems.

The public API: :class:`SISA` (exact unlearning), the data container :class:`Interactions`,
the five pluggable interfaces (:class:`Sharder`, :class:`ShardModel`, :class:`Aggregator`,
:class:`Unlearner`, :class:`Attacker`), the plugin registry (:mod:`sisakit.plugins`,
:data:`hookimpl`) and the errors.
"""

from . import (
    classification,
    datasets,
    executors,
    experiment,
    fairness,
    influence,
    membership,
    metrics,
    plots,
    plugins,
    poisoning,
    split,
)
from ._version import __version__
from .aggregators.base import Aggregator
from .attackers.base import Attacker, AttackResult
from .data import Interactions
from .engine import SISA
from .errors import (
    CheckpointError,
    DataError,
    PluginError,
    PluginWarning,
    SisakitError,
    UnknownIdError,
    ValidationError,
)
from .executors.base import Executor
from .hookspecs import hookimpl
from .influence.base import InfluenceMeasure
from .models.base import ShardModel
from .sharders.base import Sharder
from .unlearners.base import (
    AttributeRequest,
    ForgetReport,
    ForgetRequest,
    UnlearnContext,
    Unlearner,
    UnlearnReport,
    UnlearnResult,
)

__all__ = [
    "SISA",
    "Aggregator",
    "AttackResult",
    "Attacker",
    "AttributeRequest",
    "CheckpointError",
    "DataError",
    "Executor",
    "ForgetReport",
    "ForgetRequest",
    "InfluenceMeasure",
    "Interactions",
    "PluginError",
    "PluginWarning",
    "ShardModel",
    "Sharder",
    "SisakitError",
    "UnknownIdError",
    "UnlearnContext",
    "UnlearnReport",
    "UnlearnResult",
    "Unlearner",
    "ValidationError",
    "__version__",
    "classification",
    "datasets",
    "executors",
    "experiment",
    "fairness",
    "hookimpl",
    "influence",
    "membership",
    "metrics",
    "plots",
    "plugins",
    "poisoning",
    "split",
]
