"""The plugin registry: every sharder, model, aggregator, unlearner and attacker comes from here.

Built-ins are ordinary plugins (the modules in :data:`DEFAULT_PLUGINS`), registered through the
same hooks a third-party package uses. Third-party plugins are discovered from the entry-point
group ``sisakit``; set ``SISAKIT_DISABLE_PLUGINS=1`` to turn that off, or to a comma-separated
list of entry-point or distribution names to skip just those.

A broken third-party plugin (its entry point fails to import, its hooks raise, or it registers
an invalid or clashing component) never takes the built-ins down: it is skipped with a
:class:`~sisakit.errors.PluginWarning` naming its distribution, version, error and how to disable
it, and :func:`failed_plugins` (and ``sisakit plugins``) lists it. ``SISAKIT_STRICT_PLUGINS=1``
makes such a plugin a :class:`~sisakit.errors.PluginError` instead.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from ._version import __version__
from .errors import PluginError, PluginWarning

__all__ = [
    "DEFAULT_PLUGINS",
    "KINDS",
    "FailedPlugin",
    "Registration",
    "build",
    "failed_plugins",
    "get",
    "list_components",
    "names",
    "plugin_manager",
    "register_plugin",
    "unregister_plugin",
]

#: Modules that provide the built-in components, registered exactly like third-party plugins.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "sisakit.sharders.random",
    "sisakit.sharders.stratified",
    "sisakit.sharders.receraser",
    "sisakit.models.bpr",
    "sisakit.models.ials",
    "sisakit.models.ncf",
    "sisakit.models.popularity",
    "sisakit.models.sasrec",
    "sisakit.models.t5rec",
    "sisakit.aggregators.linear",
    "sisakit.aggregators.attention",
    "sisakit.aggregators.proto",
    "sisakit.aggregators.foldin",
    "sisakit.unlearners.sisa",
    "sisakit.unlearners.retrain",
    "sisakit.unlearners.approximate",
    "sisakit.unlearners.potau",
    "sisakit.unlearners.dual_memory",
    "sisakit.attackers.attribute",
    "sisakit.attackers.membership",
    "sisakit.sharders.class_dominant",
    "sisakit.models.mlp",
    "sisakit.influence.measures",
    "sisakit.executors.serial",
    "sisakit.executors.local",
    "sisakit.executors.ray",
)

#: Component kind -> (hook name, dotted path of its base class).
KINDS: dict[str, tuple[str, str]] = {
    "sharder": ("register_sharders", "sisakit.sharders.base.Sharder"),
    "model": ("register_models", "sisakit.models.base.ShardModel"),
    "aggregator": ("register_aggregators", "sisakit.aggregators.base.Aggregator"),
    "unlearner": ("register_unlearners", "sisakit.unlearners.base.Unlearner"),
    "attacker": ("register_attackers", "sisakit.attackers.base.Attacker"),
    "influence": ("register_influence", "sisakit.influence.base.InfluenceMeasure"),
    "executor": ("register_executors", "sisakit.executors.base.Executor"),
}

ENTRY_POINT_GROUP = "sisakit"


@dataclass(frozen=True)
class Registration:
    """One registered component."""

    kind: str
    name: str
    cls: type
    plugin: str
    version: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "plugin": self.plugin,
                "version": self.version}


@dataclass(frozen=True)
class FailedPlugin:
    """A third-party plugin that was skipped because it is broken."""

    name: str  # the entry-point name
    distribution: str
    version: str
    error: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "distribution": self.distribution, "version": self.version,
                "error": self.error}


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_registry: dict[str, dict[str, Registration]] | None = None
#: entry-point plugin name -> (distribution, version), for attribution and for skipping.
_dists: dict[str, tuple[str, str]] = {}
_failed: list[FailedPlugin] = []

_TRUE = ("1", "true", "yes")


def _base_class(kind: str) -> type:
    module, _, attr = KINDS[kind][1].rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _disabled() -> tuple[bool, set[str]]:
    """(all disabled, names disabled) from ``SISAKIT_DISABLE_PLUGINS``."""
    value = os.environ.get("SISAKIT_DISABLE_PLUGINS", "").strip()
    if value.lower() in _TRUE:
        return True, set()
    return False, {v.strip() for v in value.split(",") if v.strip() and v.strip() != "0"}


def _strict() -> bool:
    return os.environ.get("SISAKIT_STRICT_PLUGINS", "").strip().lower() in _TRUE


def _fail(name: str, exc: BaseException) -> None:
    """Record (or, in strict mode, raise) a broken third-party plugin."""
    dist, version = _dists.get(name, (name, "unknown"))
    error = f"{exc.__class__.__name__}: {exc}"
    message = (
        f"the sisakit plugin {name!r} from distribution {dist} {version} is broken and was "
        f"skipped ({error}); fix or uninstall {dist}, or skip it with "
        f"SISAKIT_DISABLE_PLUGINS={name}"
    )
    if _strict():
        raise PluginError(message + " (SISAKIT_STRICT_PLUGINS=1 makes this fatal)") from exc
    _failed.append(FailedPlugin(name, dist, version, error))
    warnings.warn(message, PluginWarning, stacklevel=4)


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """Register every ``sisakit`` entry point; a broken one is skipped, not fatal."""
    everything, skip = _disabled()
    if everything:
        return
    for dist in list(importlib.metadata.distributions()):
        try:
            dist_name = str(dist.metadata["name"])
        except Exception:  # a distribution with unreadable metadata: not ours to judge
            dist_name = "unknown"
        for ep in dist.entry_points:
            if (ep.group != ENTRY_POINT_GROUP or pm.get_plugin(ep.name) is not None
                    or pm.is_blocked(ep.name) or ep.name in skip or dist_name in skip):
                continue
            _dists[ep.name] = (dist_name, str(dist.version))
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as exc:  # an import error, a hook with a wrong signature, ...
                _fail(ep.name, exc)


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide pluggy manager (created on first use)."""
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager("sisakit")
            pm.add_hookspecs(hookspecs)
            for modname in DEFAULT_PLUGINS:
                pm.register(importlib.import_module(modname), name=modname)
            _dists.clear()
            _failed.clear()
            _load_entry_points(pm)
            _pm = pm
        return _pm


def failed_plugins() -> list[FailedPlugin]:
    """The third-party plugins that were skipped because they are broken."""
    _get_registry()
    return list(_failed)


def _plugin_version(plugin_name: str, plugin: object) -> tuple[str, str]:
    if plugin_name in _dists:
        dist, version = _dists[plugin_name]
        return f"{dist}:{plugin_name}", version
    if plugin_name in DEFAULT_PLUGINS:
        return f"sisakit:{plugin_name}", __version__
    version = getattr(plugin, "__version__", None) or "unknown"
    return plugin_name, str(version)


def _build_registry() -> dict[str, dict[str, Registration]]:
    pm = plugin_manager()
    while True:
        try:
            return _collect(pm)
        except _BrokenPlugin as broken:  # drop that entry-point plugin and build again
            pm.unregister(name=broken.name)
            _fail(broken.name, broken.__cause__ or broken)


class _BrokenPlugin(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _collect(pm: pluggy.PluginManager) -> dict[str, dict[str, Registration]]:
    registry: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
    for kind, (hook_name, _) in KINDS.items():
        base = _base_class(kind)
        hook = getattr(pm.hook, hook_name)
        # Call each implementation on its own so every component is attributed to its plugin;
        # in registration order, so the built-ins come first and a clashing plugin is the
        # one that fails.
        for impl in hook.get_hookimpls():
            pname = pm.get_name(impl.plugin) or repr(impl.plugin)
            label, version = _plugin_version(pname, impl.plugin)

            def register(name: str, cls: type, *, _kind: str = kind, _label: str = label,
                         _version: str = version, _base: type = base) -> None:
                if not isinstance(name, str) or not name:
                    raise PluginError(f"plugin {_label} registered a {_kind} with name {name!r}; "
                                      "names must be non-empty strings")
                if not (isinstance(cls, type) and issubclass(cls, _base)):
                    raise PluginError(
                        f"plugin {_label} registered {cls!r} as {_kind} {name!r}, but it is not "
                        f"a subclass of {_base.__name__}; subclass sisakit.{_base.__name__}"
                    )
                existing = registry[_kind].get(name)
                if existing is not None:
                    raise PluginError(
                        f"{_kind} name {name!r} is registered twice: by {existing.plugin} and by "
                        f"{_label}; rename one of them or uninstall one plugin"
                    )
                registry[_kind][name] = Registration(_kind, name, cls, _label, _version)

            try:
                impl.function(register=register)
            except Exception as exc:
                if pname in _dists:  # an installed plugin: skip it, keep everything else
                    raise _BrokenPlugin(pname) from exc
                raise
    return registry


def _get_registry() -> dict[str, dict[str, Registration]]:
    global _registry
    with _lock:
        if _registry is None:
            _registry = _build_registry()
        return _registry


def _invalidate() -> None:
    global _registry
    with _lock:
        _registry = None


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise PluginError(f"unknown component kind {kind!r}; kinds are {sorted(KINDS)}")


def names(kind: str) -> list[str]:
    """Sorted names of the registered components of ``kind``."""
    _check_kind(kind)
    return sorted(_get_registry()[kind])


def get(kind: str, name: str) -> type:
    """The class registered as ``name`` for ``kind``.

    Raises
    ------
    PluginError
        If no such component is registered (the message lists the available names).
    """
    _check_kind(kind)
    reg = _get_registry()[kind].get(name)
    if reg is None:
        raise PluginError(
            f"no {kind} named {name!r}; available: {', '.join(names(kind)) or '(none)'}. "
            "Install the plugin that provides it, or check the spelling"
        )
    return reg.cls


def registration(kind: str, name: str) -> Registration:
    """Full registration record of a component (class, providing plugin, version)."""
    get(kind, name)
    return _get_registry()[kind][name]


def name_of(kind: str, obj: Any) -> str:
    """Registered name of a component instance or class (its plugin name)."""
    cls = obj if isinstance(obj, type) else type(obj)
    for reg in _get_registry()[kind].values():
        if reg.cls is cls:
            return reg.name
    raise PluginError(
        f"{cls.__module__}.{cls.__qualname__} is not a registered {kind}; register it through "
        f"the {KINDS[kind][0]} hook (see the plugin author guide) so runs can be saved and reloaded"
    )


def build(kind: str, spec: Any, **params: Any) -> Any:
    """Resolve ``spec`` (a registered name, a class or an instance) to an instance of ``kind``."""
    _check_kind(kind)
    base = _base_class(kind)
    if isinstance(spec, str):
        cls = get(kind, spec)
        try:
            return cls(**params)
        except TypeError as exc:
            accepted = ", ".join(getattr(cls, "param_names", list)()) or "(none)"
            raise PluginError(
                f"cannot build {kind} {spec!r} with parameters {params}: {exc}; use only its "
                f"parameters: {accepted}"
            ) from exc
    if isinstance(spec, type) and issubclass(spec, base):
        return spec(**params)
    if isinstance(spec, base):
        return spec.clone(**params) if params else spec
    raise PluginError(
        f"expected a {kind} name (one of {names(kind)}) or a {base.__name__} instance, "
        f"got {spec!r}"
    )


def list_components() -> list[Registration]:
    """Every registered component, sorted by kind and name."""
    reg = _get_registry()
    return [reg[k][n] for k in KINDS for n in sorted(reg[k])]


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin object (usually a module with hook implementations) in-process.

    Returns the name it was registered under. Name clashes between components raise
    :class:`~sisakit.PluginError` and leave the registry unchanged.
    """
    pm = plugin_manager()
    with _lock:
        try:
            registered = pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            raise PluginError(
                f"cannot register plugin {name or plugin!r}: {exc}; check the hook names and "
                "arguments (see sisakit.hookspecs) or unregister the plugin of the same name first"
            ) from exc
        if registered is None:
            raise PluginError(f"plugin {name or plugin!r} is blocked from registering")
        _invalidate()
        try:
            _get_registry()
        except PluginError:
            pm.unregister(plugin)
            _invalidate()
            raise
        return registered


def unregister_plugin(name_or_plugin: str | object) -> None:
    """Remove a plugin registered with :func:`register_plugin`."""
    pm = plugin_manager()
    with _lock:
        if isinstance(name_or_plugin, str):
            plugin = pm.get_plugin(name_or_plugin)
            if plugin is None:
                raise PluginError(f"no plugin named {name_or_plugin!r} is registered")
            pm.unregister(plugin)
        else:
            pm.unregister(name_or_plugin)
        _invalidate()


def reset() -> None:
    """Forget the plugin manager; the next lookup rebuilds it (re-reads entry points)."""
    global _pm
    with _lock:
        _pm = None
        _invalidate()
