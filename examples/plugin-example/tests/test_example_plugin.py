"""Tests of the example plugin: sisakit's sharder contract, plus discovery."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
from sisakit_plugin_example import ModuloSharder

import sisakit
from sisakit.testing import SharderContract, make_interactions


class TestModuloSharder(SharderContract):
    """Every test of sisakit's sharder contract, run against ModuloSharder."""

    def make_sharder(self):
        return ModuloSharder()


def test_integer_ids_use_modulo():
    data = make_interactions()  # raw user ids 1000..1059
    shard = ModuloSharder().assign(data, 4, seed=1)
    raw = data.user_ids[data.user_idx]
    assert np.array_equal(shard, (raw + 1) % 4)


def _installed() -> bool:
    try:
        importlib.metadata.distribution("sisakit-plugin-example")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed(), reason="install the package (pip install -e .) so its "
                    "entry point is visible")
def test_discovered_through_entry_point():
    sisakit.plugins.reset()  # re-read entry points
    assert "example-modulo" in sisakit.plugins.names("sharder")
    reg = sisakit.plugins.registration("sharder", "example-modulo")
    assert reg.cls is ModuloSharder
    assert reg.plugin == "sisakit-plugin-example:example"
    assert reg.version == "0.1.0"
