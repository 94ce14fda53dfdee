"""Every hook of :mod:`sisakit.hookspecs` works for a third-party plugin.

One plugin object implements every hook, each registering a subclass of its kind's interface;
the registry must attribute each component to the plugin, hand the class back, and drop it when
the plugin is unregistered. ``tests/test_docs.py`` checks that every hookspec is named here (or
in another test).
"""

from __future__ import annotations

import importlib

import pytest

import sisakit
from sisakit import hookspecs, plugins


def _interface(kind: str) -> type:
    module, _, name = plugins.KINDS[kind][1].rpartition(".")
    return getattr(importlib.import_module(module), name)


def _component(kind: str) -> type:
    return type(f"HookTest{kind.title()}", (_interface(kind),), {"__module__": __name__})


COMPONENTS = {kind: _component(kind) for kind in plugins.KINDS}


class EveryHookPlugin:
    """Implements every hookspec, as a third-party plugin module would."""

    __version__ = "9.9.9"

    @sisakit.hookimpl
    def register_sharders(self, register):
        register("hooktest-sharder", COMPONENTS["sharder"])

    @sisakit.hookimpl
    def register_models(self, register):
        register("hooktest-model", COMPONENTS["model"])

    @sisakit.hookimpl
    def register_aggregators(self, register):
        register("hooktest-aggregator", COMPONENTS["aggregator"])

    @sisakit.hookimpl
    def register_unlearners(self, register):
        register("hooktest-unlearner", COMPONENTS["unlearner"])

    @sisakit.hookimpl
    def register_attackers(self, register):
        register("hooktest-attacker", COMPONENTS["attacker"])

    @sisakit.hookimpl
    def register_influence(self, register):
        register("hooktest-influence", COMPONENTS["influence"])

    @sisakit.hookimpl
    def register_executors(self, register):
        register("hooktest-executor", COMPONENTS["executor"])


@pytest.fixture
def every_hook():
    plugin = EveryHookPlugin()
    plugins.register_plugin(plugin, name="every-hook")
    try:
        yield plugin
    finally:
        plugins.unregister_plugin(plugin)
        plugins.reset()


def test_every_kind_has_a_hookspec():
    specs = {name for name, f in vars(hookspecs).items() if hasattr(f, "sisakit_spec")}
    assert {hook for hook, _ in plugins.KINDS.values()} == specs
    implemented = {name for name in vars(EveryHookPlugin) if name.startswith("register_")}
    assert implemented == specs, "EveryHookPlugin must implement every hookspec"


@pytest.mark.parametrize("kind", sorted(plugins.KINDS))
def test_each_hook_registers_a_component(every_hook, kind):
    name = f"hooktest-{kind}"
    assert plugins.get(kind, name) is COMPONENTS[kind]
    assert name in plugins.names(kind)
    reg = plugins.registration(kind, name)
    assert (reg.plugin, reg.version) == ("every-hook", "9.9.9")
    listed = {(r.kind, r.name, r.plugin) for r in plugins.list_components()}
    assert (kind, name, "every-hook") in listed


def test_unregistering_removes_every_component():
    plugin = EveryHookPlugin()
    plugins.register_plugin(plugin, name="every-hook")
    plugins.unregister_plugin(plugin)
    try:
        for kind in plugins.KINDS:
            assert f"hooktest-{kind}" not in plugins.names(kind)
    finally:
        plugins.reset()
