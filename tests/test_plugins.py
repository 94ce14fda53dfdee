"""Tests of the plugin registry: in-process plugins, clashes, errors, entry-point discovery."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

import sisakit
from sisakit import plugins
from sisakit.errors import PluginError
from sisakit.sharders.random import RandomUserSharder
from sisakit.testing import make_interactions

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin-example"

BUILTINS = {
    ("sharder", "random-user"),
    ("sharder", "random-interaction"),
    ("model", "bpr-mf"),
    ("model", "popularity"),
    ("aggregator", "mean"),
    ("aggregator", "weighted"),
    ("unlearner", "sisa"),
    ("influence", "jaccard"),
    ("influence", "rank-change"),
    ("influence", "ndcg-delta"),
    ("executor", "serial"),
    ("executor", "joblib"),
    ("executor", "ray"),
}


class ToySharder(sisakit.Sharder):
    """User-level toy sharder: user index modulo ``n_shards`` (the id space never changes)."""

    unit = "user"

    def __init__(self) -> None:
        pass

    def assign(self, data, n_shards, *, seed):
        self._check(data, n_shards)
        return (np.asarray(data.user_idx) % n_shards).astype(np.int64)


class ToyPlugin:
    """A plugin object with a hook implementation, as a third-party module would have."""

    __version__ = "1.2.3"

    @sisakit.hookimpl
    def register_sharders(self, register):
        register("toy", ToySharder)


def _snapshot():
    return [reg.as_dict() | {"cls": reg.cls} for reg in plugins.list_components()]


@pytest.fixture
def registry():
    """Rebuild the registry from scratch after the test (drops in-process plugins)."""
    before = _snapshot()
    yield plugins
    plugins.reset()
    assert _snapshot() == before


@pytest.fixture
def small_data():
    return make_interactions(n_users=12, n_items=10, n=60)


# ---------------------------------------------------------------------------------- in-process
def test_register_use_unregister(registry, small_data):
    plugin = ToyPlugin()
    name = plugins.register_plugin(plugin, name="toy-plugin")
    assert name == "toy-plugin"
    assert plugins.get("sharder", "toy") is ToySharder
    assert "toy" in plugins.names("sharder")
    reg = plugins.registration("sharder", "toy")
    assert (reg.plugin, reg.version) == ("toy-plugin", "1.2.3")
    assert plugins.name_of("sharder", ToySharder()) == "toy"

    est = sisakit.SISA(sharder="toy", n_shards=2, n_slices=1, epochs=1, seed=0,
                       model_params=dict(factors=4), progress=False, device="cpu")
    est.fit(small_data)
    assert isinstance(est.sharder, ToySharder)
    assert est.config["sharder"]["name"] == "toy"
    recs = est.recommend(small_data.user_ids[:3], k=2)
    assert recs.shape == (3, 2)

    plugins.unregister_plugin("toy-plugin")
    assert "toy" not in plugins.names("sharder")
    with pytest.raises(PluginError, match="random-user") as info:
        plugins.get("sharder", "toy")
    assert "no sharder named 'toy'" in str(info.value)
    assert "random-interaction" in str(info.value)


def test_unregister_by_object_and_unknown_name(registry):
    plugin = ToyPlugin()
    plugins.register_plugin(plugin)
    assert "toy" in plugins.names("sharder")
    plugins.unregister_plugin(plugin)
    assert "toy" not in plugins.names("sharder")
    with pytest.raises(PluginError, match="no plugin named"):
        plugins.unregister_plugin("never-registered")


@pytest.mark.parametrize("second", ["same-object", "same-name"])
def test_registering_twice_is_a_plugin_error(registry, second):
    plugin = ToyPlugin()
    plugins.register_plugin(plugin, name="toy-plugin")
    again = plugin if second == "same-object" else ToyPlugin()
    try:
        with pytest.raises(PluginError, match="already registered"):
            plugins.register_plugin(again, name="toy-plugin")
    finally:
        assert plugins.names("sharder").count("toy") == 1


def test_hookimpl_with_wrong_signature_is_a_plugin_error(registry):
    class WrongSignature:
        @sisakit.hookimpl
        def register_sharders(self, reg):
            reg("wrong", ToySharder)

    with pytest.raises(PluginError):
        plugins.register_plugin(WrongSignature(), name="wrong-signature")


def test_simple_namespace_plugin(registry):
    @sisakit.hookimpl
    def register_sharders(register):
        register("toy-ns", ToySharder)

    plugins.register_plugin(types.SimpleNamespace(register_sharders=register_sharders),
                            name="ns-plugin")
    assert plugins.get("sharder", "toy-ns") is ToySharder
    assert plugins.registration("sharder", "toy-ns").version == "unknown"


def test_name_clash_names_both_plugins_and_changes_nothing(registry):
    before = _snapshot()

    class ClashPlugin:
        @sisakit.hookimpl
        def register_sharders(self, register):
            register("random-user", ToySharder)

    with pytest.raises(PluginError) as info:
        plugins.register_plugin(ClashPlugin(), name="clash-plugin")
    msg = str(info.value)
    assert "'random-user'" in msg
    assert "clash-plugin" in msg
    assert "sisakit:sisakit.sharders.random" in msg
    assert _snapshot() == before
    assert plugins.get("sharder", "random-user") is RandomUserSharder
    assert plugins.plugin_manager().get_plugin("clash-plugin") is None
    # The registry still accepts a well-behaved plugin afterwards.
    plugins.register_plugin(ToyPlugin(), name="toy-plugin")
    assert plugins.get("sharder", "toy") is ToySharder


@pytest.mark.parametrize("bad", [object, int, RandomUserSharder(), sisakit.ShardModel],
                         ids=["object", "int", "instance", "other-kind"])
def test_non_subclass_is_rejected(registry, bad):
    before = _snapshot()

    class BadPlugin:
        @sisakit.hookimpl
        def register_sharders(self, register):
            register("bad", bad)

    with pytest.raises(PluginError, match="bad-plugin") as info:
        plugins.register_plugin(BadPlugin(), name="bad-plugin")
    assert "Sharder" in str(info.value)
    assert _snapshot() == before
    assert "bad" not in plugins.names("sharder")
    assert plugins.plugin_manager().get_plugin("bad-plugin") is None


@pytest.mark.parametrize("bad_name", ["", None, 3])
def test_bad_component_name_is_rejected(registry, bad_name):
    class BadName:
        @sisakit.hookimpl
        def register_sharders(self, register):
            register(bad_name, ToySharder)

    with pytest.raises(PluginError, match="non-empty strings"):
        plugins.register_plugin(BadName(), name="bad-name")
    assert plugins.plugin_manager().get_plugin("bad-name") is None


# ---------------------------------------------------------------------------------- lookups
def test_list_components_includes_builtins():
    regs = plugins.list_components()
    by_key = {(r.kind, r.name): r for r in regs}
    assert BUILTINS <= set(by_key)
    for key in BUILTINS:
        reg = by_key[key]
        assert reg.plugin.startswith("sisakit:"), reg
        assert reg.plugin == f"sisakit:{reg.cls.__module__}"
        assert reg.version == sisakit.__version__
        assert reg.as_dict() == {"kind": key[0], "name": key[1], "plugin": reg.plugin,
                                 "version": sisakit.__version__}
    kinds = list(plugins.KINDS)
    order = [(kinds.index(r.kind), r.name) for r in regs]
    assert order == sorted(order)


@pytest.mark.parametrize("call", [
    lambda: plugins.names("gizmo"),
    lambda: plugins.get("gizmo", "random-user"),
    lambda: plugins.build("gizmo", "random-user"),
], ids=["names", "get", "build"])
def test_unknown_kind(call):
    with pytest.raises(PluginError, match="unknown component kind 'gizmo'") as info:
        call()
    assert "sharder" in str(info.value)


def test_unknown_name_lists_available():
    with pytest.raises(PluginError) as info:
        plugins.get("model", "no-such-model")
    msg = str(info.value)
    assert "no model named 'no-such-model'" in msg
    assert "bpr-mf" in msg and "popularity" in msg
    with pytest.raises(PluginError, match="no-such-model"):
        plugins.build("model", "no-such-model")
    with pytest.raises(PluginError, match="no-such-model"):
        sisakit.SISA(model="no-such-model")


def test_build_resolves_names_classes_and_instances():
    built = plugins.build("model", "bpr-mf", factors=4)
    assert built.factors == 4
    assert plugins.build("model", type(built), factors=5).factors == 5
    assert plugins.build("model", built) is built
    assert plugins.build("model", built, factors=6).factors == 6
    with pytest.raises(PluginError, match="cannot build"):
        plugins.build("model", "bpr-mf", no_such_param=1)
    with pytest.raises(PluginError, match="expected a sharder"):
        plugins.build("sharder", 42)


def test_name_of_unregistered_class():
    with pytest.raises(PluginError, match="not a registered sharder"):
        plugins.name_of("sharder", ToySharder)


# ---------------------------------------------------------------------------------- entry points
class _FakeDist:
    """Just enough of an ``importlib.metadata.Distribution`` for pluggy."""

    def __init__(self, name, version, entry_points):
        self.metadata = {"name": name}
        self.version = version
        self.entry_points = entry_points


def _fake_entry_point(monkeypatch, module):
    """Make ``module`` discoverable as an installed distribution's ``sisakit`` entry point."""
    monkeypatch.setitem(sys.modules, module.__name__, module)
    ep = importlib.metadata.EntryPoint(name="fake", value=module.__name__, group="sisakit")
    dist = _FakeDist("sisakit-fake-dist", "9.8.7", [ep])
    real = importlib.metadata.distributions
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [*real(), dist])


def test_entry_point_discovery_and_disable_switch(registry, monkeypatch):
    module = types.ModuleType("sisakit_fake_plugin_mod")

    @sisakit.hookimpl
    def register_sharders(register):
        register("toy", ToySharder)

    module.register_sharders = register_sharders
    _fake_entry_point(monkeypatch, module)
    monkeypatch.delenv("SISAKIT_DISABLE_PLUGINS", raising=False)
    plugins.reset()
    assert plugins.get("sharder", "toy") is ToySharder
    reg = plugins.registration("sharder", "toy")
    assert (reg.plugin, reg.version) == ("sisakit-fake-dist:fake", "9.8.7")

    for value in ("1", "true", "yes"):
        monkeypatch.setenv("SISAKIT_DISABLE_PLUGINS", value)
        plugins.reset()
        assert "toy" not in plugins.names("sharder")
        assert BUILTINS <= {(r.kind, r.name) for r in plugins.list_components()}

    monkeypatch.setenv("SISAKIT_DISABLE_PLUGINS", "0")
    plugins.reset()
    assert "toy" in plugins.names("sharder")


def _broken_entry_point(monkeypatch, name="broken", module=None):
    """An installed distribution whose ``sisakit`` entry point is ``module`` (by default one
    that cannot be imported: None in sys.modules blocks the import)."""
    modname = f"sisakit_{name}_plugin_mod"
    monkeypatch.setitem(sys.modules, modname, module)
    ep = importlib.metadata.EntryPoint(name=name, value=modname, group="sisakit")
    real = importlib.metadata.distributions
    dist = _FakeDist(f"sisakit-{name}", "0.0.1", [ep])
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [*real(), dist])
    for var in ("SISAKIT_DISABLE_PLUGINS", "SISAKIT_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    plugins.reset()


def test_broken_entry_point_is_skipped_with_a_warning(registry, monkeypatch):
    _broken_entry_point(monkeypatch)
    with pytest.warns(sisakit.PluginWarning) as caught:
        names = plugins.names("sharder")
    message = str(caught[0].message)
    for part in ("'broken'", "sisakit-broken 0.0.1", "ModuleNotFoundError",
                 "SISAKIT_DISABLE_PLUGINS=broken"):
        assert part in message, message
    assert BUILTINS <= {(r.kind, r.name) for r in plugins.list_components()}
    assert "random-user" in names
    # the built-ins work end to end despite the broken plugin
    model = sisakit.SISA(model="popularity", n_shards=2, n_slices=1, epochs=1, progress=False,
                         device="cpu").fit(make_interactions(n_users=10, n_items=8, n=40))
    assert model.recommend([model.user_ids[0]], k=2).shape == (1, 2)
    failed = plugins.failed_plugins()
    assert [(f.name, f.distribution, f.version) for f in failed] == [
        ("broken", "sisakit-broken", "0.0.1")]
    assert "ModuleNotFoundError" in failed[0].error


def test_broken_entry_point_is_fatal_in_strict_mode(registry, monkeypatch):
    _broken_entry_point(monkeypatch)
    monkeypatch.setenv("SISAKIT_STRICT_PLUGINS", "1")
    plugins.reset()
    with pytest.raises(PluginError, match=r"sisakit-broken 0\.0\.1.*SISAKIT_STRICT_PLUGINS"):
        plugins.names("sharder")


@pytest.mark.parametrize("value", ["broken", "sisakit-broken", "other, broken"])
def test_broken_entry_point_can_be_disabled_by_name(registry, monkeypatch, value):
    _broken_entry_point(monkeypatch)
    monkeypatch.setenv("SISAKIT_DISABLE_PLUGINS", value)
    plugins.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "random-user" in plugins.names("sharder")
    assert plugins.failed_plugins() == []


def test_plugin_whose_hook_raises_or_clashes_is_skipped(registry, monkeypatch):
    raising = types.ModuleType("raising")

    @sisakit.hookimpl
    def register_models(register):
        raise RuntimeError("boom at registration")

    raising.register_models = register_models
    _broken_entry_point(monkeypatch, "raising", raising)
    with pytest.warns(sisakit.PluginWarning, match="RuntimeError: boom at registration"):
        assert "bpr-mf" in plugins.names("model")

    clashing = types.ModuleType("clashing")

    @sisakit.hookimpl
    def register_sharders(register):
        register("toy", ToySharder)
        register("random-user", ToySharder)  # a built-in's name

    clashing.register_sharders = register_sharders
    _broken_entry_point(monkeypatch, "clashing", clashing)
    with pytest.warns(sisakit.PluginWarning) as caught:  # "raising" is still installed too
        names = plugins.names("sharder")
    assert any("registered twice" in str(w.message) for w in caught)
    assert "toy" not in names  # the whole plugin is skipped, not half of it
    assert plugins.get("sharder", "random-user") is not ToySharder


def test_cli_plugins_lists_a_broken_plugin_as_failed(registry, monkeypatch, capsys):
    from sisakit.cli import main

    _broken_entry_point(monkeypatch)
    with pytest.warns(sisakit.PluginWarning):
        assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "sisakit-broken" in x)
    assert "FAILED" in line and "0.0.1" in line and "ModuleNotFoundError" in line
    plugins.reset()
    with pytest.warns(sisakit.PluginWarning):
        assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    failed = [r for r in rows if r.get("status") == "failed"]
    assert [(r["plugin"], r["version"]) for r in failed] == [("sisakit-broken:broken", "0.0.1")]
    assert all(r["status"] == "ok" for r in rows if r not in failed)


def _run_python(code: str, target: Path, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SISAKIT_DISABLE_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(target), os.environ.get("PYTHONPATH", "")) if p
    )
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)


def test_example_plugin_installed_end_to_end(tmp_path):
    """pip-install examples/plugin-example into a throwaway directory and discover it."""
    try:
        import setuptools  # noqa: F401
    except ImportError:
        pytest.skip("setuptools is not installed, so --no-build-isolation cannot build")
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", ".pytest_cache"))  # keep the repo clean
    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--quiet", "--target", str(target),
         str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(target.glob("sisakit_plugin_example-0.1.0.dist-info"))

    code = (
        "import sisakit\n"
        "from sisakit import plugins\n"
        "from sisakit.testing import make_interactions\n"
        "names = plugins.names('sharder')\n"
        "assert 'example-modulo' in names, names\n"
        "reg = plugins.registration('sharder', 'example-modulo')\n"
        "assert reg.plugin == 'sisakit-plugin-example:example', reg\n"
        "assert reg.version == '0.1.0', reg\n"
        "assert {'random-user', 'random-interaction'} <= set(names), names\n"
        "est = sisakit.SISA(sharder='example-modulo', model='popularity', n_shards=2,\n"
        "                   n_slices=1, epochs=1, progress=False, device='cpu')\n"
        "est.fit(make_interactions(n_users=10, n_items=8, n=40))\n"
        "print('FOUND')\n"
    )
    found = _run_python(code, target)
    assert found.returncode == 0, found.stderr
    assert "FOUND" in found.stdout

    code_disabled = (
        "from sisakit import plugins\n"
        "names = plugins.names('sharder')\n"
        "assert 'example-modulo' not in names, names\n"
        "assert 'random-user' in names, names\n"
        "import sisakit_plugin_example\n"  # importable, just not loaded as a plugin
        "print('DISABLED')\n"
    )
    disabled = _run_python(code_disabled, target, SISAKIT_DISABLE_PLUGINS="1")
    assert disabled.returncode == 0, disabled.stderr
    assert "DISABLED" in disabled.stdout
