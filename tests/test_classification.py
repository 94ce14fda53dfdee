"""Class-level SISA on labelled samples: data, the class-dominant sharder, mlp-classifier and
the sisakit.classification helpers."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import sisakit
from sisakit import SISA, Interactions, classification
from sisakit.engine import parameters_equal
from sisakit.sharders.class_dominant import ClassDominantSharder
from sisakit.testing import make_interactions

MODEL = {"hidden": (16,), "lr": 0.02, "batch_size": 32, "device": "cpu"}


@pytest.fixture(scope="module")
def digits3():
    return classification.load_digits_data(3, seed=0)


def make_sisa(leakage="high", n_shards=3, n_slices=2, epochs=8, leak_fraction=0.1, **kw):
    return SISA(model="mlp-classifier", sharder="class-dominant", n_shards=n_shards,
                n_slices=n_slices, epochs=epochs, seed=5, model_params=dict(MODEL),
                sharder_params={"leakage": leakage, "leak_fraction": leak_fraction},
                progress=False, **kw)


@pytest.fixture(scope="module")
def fitted_high(digits3):
    return make_sisa("high", n_shards=3).fit(digits3.train)


# ---------------------------------------------------------------------------------- data
def test_digits_subsets_and_split(digits3):
    d5 = classification.load_digits_data(5, seed=0)
    for d, k in ((digits3, 3), (d5, 5)):
        assert d.n_classes == k and d.classes.tolist() == list(range(k))
        assert d.train.user_features.shape == (len(d.train), 64)
        assert len(d.train) == d.train.n_users  # one record per sample
        assert 0.0 <= d.train.user_features.min() and d.train.user_features.max() <= 1.0
        assert set(np.unique(d.test_labels)) == set(range(k))
        # Train and test samples are disjoint and stratified (about 25% of every class held out).
        share = np.bincount(d.test_labels) / (np.bincount(d.test_labels)
                                              + d.train.item_counts())
        assert np.all(np.abs(share - 0.25) < 0.02)
    again = classification.load_digits_data(3, seed=0)
    assert np.array_equal(again.train.user_ids, digits3.train.user_ids)
    other = classification.load_digits_data(3, seed=1)
    assert not np.array_equal(other.train.user_ids, digits3.train.user_ids)


def test_user_features_round_trip_and_follow_subsets(digits3):
    data = digits3.train
    back = Interactions.from_state(data.to_state())
    assert np.array_equal(back.user_features, data.user_features)
    sub = data.take(np.arange(10))
    assert sub.user_features is data.user_features  # per-user table, id space unchanged
    gone = data.user_ids[:3].tolist()
    rest = data.without(users=gone)
    assert np.array_equal(rest.user_features, data.user_features)
    assert np.array_equal(data.replace(weight=None).user_features, data.user_features)
    with pytest.raises(sisakit.ValidationError, match="user_features"):
        data.replace(user_features=data.user_features[:5])
    bad = data.user_features.copy()
    bad[0, 0] = np.nan
    with pytest.raises(sisakit.DataError, match="NaN"):
        data.replace(user_features=bad)


def test_forgotten_samples_features_are_zeroed_and_run_reloads(tmp_path, digits3):
    data = digits3.train
    sisa = make_sisa("high", workdir=tmp_path / "run").fit(data)
    before = classification.predict_proba(sisa, digits3.test_features)
    gone = data.user_ids[[0, 5, 9]]
    sisa.forget(users=gone.tolist())
    idx = data.user_map.index(gone, "user")
    assert not sisa.data.user_features[idx].any()
    keep = np.setdiff1d(np.arange(data.n_users), idx)
    assert np.array_equal(sisa.data.user_features[keep], data.user_features[keep])
    loaded = SISA.load(tmp_path / "run", device="cpu", progress=False)
    assert not loaded.data.user_features[idx].any()  # no pixels of theirs on disk
    assert np.array_equal(classification.predict_proba(loaded, digits3.test_features),
                          classification.predict_proba(sisa, digits3.test_features))
    assert not np.array_equal(before, classification.predict_proba(sisa, digits3.test_features))


def test_no_shard_model_keeps_forgotten_features_and_loaded_run_scores(tmp_path, digits3):
    data = digits3.train
    sisa = make_sisa("none", n_slices=1, epochs=1, workdir=tmp_path / "run").fit(data)
    gone = data.user_ids[:1]
    report = sisa.forget(users=gone.tolist())
    assert len(report.shards_retrained) < sisa.n_shards  # some shard models were not retrained
    idx = data.user_map.index(gone, "user")
    for model in sisa.shard_models:  # retrained or not, none holds the forgotten pixels
        assert not model._space_features[idx].any()
    loaded = SISA.load(tmp_path / "run", device="cpu", progress=False)
    users = data.user_ids[1:6]
    assert np.array_equal(loaded.recommend(users, k=1), sisa.recommend(users, k=1))


def test_from_samples_aligns_rows_with_ids():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    data = classification.from_samples(x, ["b", "a", "b", "c"], sample_ids=[30, 10, 20, 40])
    assert data.user_ids.tolist() == [30, 10, 20, 40]
    assert np.array_equal(data.user_features, x)
    assert data.item_ids[data.item_idx].tolist() == ["b", "a", "b", "c"]
    with pytest.raises(sisakit.ValidationError, match="one entry per feature row"):
        classification.from_samples(x, [0, 1])
    with pytest.raises(sisakit.DataError, match="duplicate"):
        classification.from_samples(x, [0, 1, 0, 1], sample_ids=[1, 1, 2, 3])


# ---------------------------------------------------------------------------------- sharder
def _assign(data, leakage, n_shards, leak_fraction=0.1, seed=0):
    return ClassDominantSharder(leakage, leak_fraction).assign(data, n_shards, seed=seed)


def test_none_leakage_keeps_every_class_in_its_shards(digits3):
    data = digits3.train
    for n_shards in (3, 6, 7):  # more shards than classes: classes repeat as dominant
        shard = _assign(data, "none", n_shards)
        assert np.array_equal(shard % 3, data.item_idx)
        counts = np.bincount(shard, minlength=n_shards)
        assert (counts > 0).all()
    shard = _assign(data, "none", 2)  # fewer shards than classes: class c goes to c % 2
    assert np.array_equal(shard, data.item_idx % 2)


def test_leak_fraction_and_targets(digits3):
    data = digits3.train
    dom = ClassDominantSharder.dominated(3, 6)
    for frac in (0.1, 0.3):
        high = _assign(data, "high", 6, frac)
        leaked = ~dom[data.item_idx, high]
        # Bernoulli(frac) per record: within 4 standard deviations of the expected share.
        n = len(data)
        assert abs(leaked.mean() - frac) < 4 * np.sqrt(frac * (1 - frac) / n)
        per_class = np.bincount(data.item_idx, weights=leaked) / data.item_counts()
        assert np.all(np.abs(per_class - frac) < 4 * np.sqrt(frac * (1 - frac) / 100))
        # High leakage goes only to shards the class does not dominate, and (with ~40 leaked
        # records per class at 30%) reaches every one of them.
        for c in range(3):
            targets = set(high[leaked & (data.item_idx == c)].tolist())
            assert targets <= set(np.flatnonzero(~dom[c]).tolist())
            if frac == 0.3:
                assert targets == set(np.flatnonzero(~dom[c]).tolist())
        low = _assign(data, "low", 6, frac)
        home = _assign(data, "none", 6)
        moved = low != home
        assert np.array_equal(low[moved], (home[moved] + 1) % 6)  # only into the neighbour
        assert abs(moved.mean() - frac) < 4 * np.sqrt(frac * (1 - frac) / n)
    assert np.array_equal(_assign(data, "high", 6, 0.0), _assign(data, "none", 6))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"leak_fraction": 1.0}, "leak_fraction"),
    ({"leak_fraction": -0.1}, "leak_fraction"),
    ({"leak_fraction": "0.1"}, "leak_fraction"),
    ({"leakage": "medium"}, "leakage"),
])
def test_sharder_rejects_bad_parameters(kwargs, match):
    with pytest.raises(sisakit.ValidationError, match=match):
        ClassDominantSharder(**kwargs)


# ---------------------------------------------------------------------------------- forgetting
@pytest.mark.parametrize("leakage", ["none", "low", "high"])
def test_forgetting_a_class_retrains_exactly_the_shards_holding_it(digits3, leakage):
    data = digits3.train
    sisa = make_sisa(leakage, n_shards=6, epochs=2).fit(data)
    comp = classification.shard_composition(sisa)
    holding = np.flatnonzero(comp[:, 1] > 0).tolist()
    assert classification.affected_shards(sisa, 1) == holding
    report = classification.forget_class(sisa, 1)
    assert report.shards_retrained == holding
    assert report.records_removed == int(comp[:, 1].sum())
    assert classification.shard_composition(sisa)[:, 1].sum() == 0
    if leakage == "none":
        assert holding == [1, 4]  # the shards class 1 dominates
    elif leakage == "low":
        assert holding == [1, 2, 4, 5]  # ... and their neighbours
    else:
        assert holding == list(range(6))


def test_exact_class_and_sample_forgetting_equals_scratch_fit(digits3):
    data = digits3.train
    sisa = make_sisa("low", n_shards=4, n_slices=3, epochs=3).fit(data)
    extra = data.user_ids[data.user_idx[data.item_idx == 0][:3]].tolist()
    gone = np.concatenate([classification.class_samples(sisa, 2), extra])
    keep = ~np.isin(data.user_ids[data.user_idx], gone)
    stored = (sisa.assignment[0][keep], sisa.assignment[1][keep])
    report = classification.forget_class(sisa, 2, extra_samples=extra)
    assert 0 < len(report.shards_retrained) < 4
    ref = make_sisa("low", n_shards=4, n_slices=3, epochs=3).fit(data.without(users=gone.tolist()),
                                                                 assignment=stored)
    equal, n = parameters_equal(sisa, ref)
    assert equal and n > 0
    x = digits3.test_features
    assert np.array_equal(classification.predict_proba(sisa, x),
                          classification.predict_proba(ref, x))


def test_forgotten_class_is_no_longer_predicted(digits3):
    sisa = make_sisa("high", n_shards=3, epochs=20).fit(digits3.train)
    x, y = digits3.test_features, digits3.test_labels
    before = classification.accuracy(sisa, x, y)
    assert before["per_class"][2] > 0.8
    classification.forget_class(sisa, 2)
    after = classification.accuracy(sisa, x, y)
    assert after["per_class"][2] <= 0.05
    assert after["per_class"][0] > 0.8 and after["per_class"][1] > 0.8
    assert not np.isin(2, classification.predict(sisa, x))


def test_dropped_and_emptied_shards_abstain(fitted_high, digits3):
    sisa, x, y = fitted_high, digits3.test_features, digits3.test_labels
    proba = classification.predict_proba(sisa, x)
    assert proba.shape == (len(x), 3) and np.allclose(proba.sum(1), 1.0)
    only0 = classification.predict_proba(sisa, x, shards=[0])
    model0 = sisa.shard_models[0]
    expect = np.exp(model0.predict_logits(x).double().numpy())
    assert np.allclose(only0, expect / expect.sum(1, keepdims=True))
    nan = classification.accuracy(sisa, x, y, shards=[])
    assert np.isnan(nan["overall"]) and nan["n_shards_used"] == 0
    with pytest.raises(sisakit.ValidationError, match="no shard model votes"):
        classification.predict(sisa, x, shards=[])
    with pytest.raises(sisakit.ValidationError, match="shards must lie"):
        classification.predict_proba(sisa, x, shards=[3])


def test_emptied_shard_abstains_and_inactive_class_gets_no_mass(digits3):
    sisa = make_sisa("none", n_shards=3, epochs=2).fit(digits3.train)
    classification.forget_class(sisa, 0)
    x = digits3.test_features
    assert classification.accuracy(sisa, x, digits3.test_labels)["n_shards_used"] == 2
    assert np.array_equal(classification.predict_proba(sisa, x),
                          classification.predict_proba(sisa, x, shards=[1, 2]))
    sisa.forget(items=[0])
    assert np.all(classification.predict_proba(sisa, x)[:, 0] == 0.0)


def test_class_forgetting_report_low_vs_high(digits3):
    reports = {leak: classification.class_forgetting_report(
        digits3, 1, leakage=leak, n_shards=6, epochs=2, seed=0, model_params=MODEL,
        device="cpu") for leak in ("low", "high")}
    for r in reports.values():
        assert set(r["accuracy"]) == {"before", "dropped", "retrained", "single_model",
                                      "full_retrain"}
        assert r["shards_retrained"] == r["affected_shards"]
        assert r["records_removed"] == sum(row[1] for row in r["composition"])
        assert r["accuracy"]["full_retrain"]["per_class"][1] <= 0.05
    assert reports["low"]["slices_retrained"] < reports["high"]["slices_retrained"]
    assert reports["low"]["work_fraction"] < reports["high"]["work_fraction"]
    for r in reports.values():
        assert r["accuracy"]["dropped"]["n_shards_used"] == 6 - len(r["affected_shards"])


# ---------------------------------------------------------------------------------- bad input
def test_unknown_class_and_sample_are_rejected(fitted_high, digits3):
    with pytest.raises(sisakit.UnknownIdError, match="class"):
        classification.forget_class(fitted_high, 7)
    with pytest.raises(sisakit.UnknownIdError):
        classification.forget_class(fitted_high, 0, extra_samples=[10**9])
    with pytest.raises(sisakit.UnknownIdError, match="class"):
        classification.accuracy(fitted_high, digits3.test_features[:2], [0, 9])
    assert len(fitted_high.history) == 0  # nothing was deleted


def test_bad_arguments():
    with pytest.raises(sisakit.ValidationError, match="n_classes"):
        classification.load_digits_data(11)
    with pytest.raises(sisakit.ValidationError, match="test_size"):
        classification.load_digits_data(3, test_size=1.0)
    plain = make_interactions()
    with pytest.raises(sisakit.ValidationError, match="user_features"):
        sisakit.plugins.get("model", "mlp-classifier")(device="cpu").setup(plain, seed=0)
    bpr = SISA(model="popularity", n_shards=2, n_slices=1, epochs=1, progress=False).fit(plain)
    with pytest.raises(sisakit.ValidationError, match="predict_logits"):
        classification.predict_proba(bpr, np.zeros((2, 3)))


def _write_images(root, classes=("cat", "dog"), n=4):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for k in range(n):
            pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{k}.png")


def test_image_folder(tmp_path):
    pytest.importorskip("PIL")
    _write_images(tmp_path / "imgs")
    (tmp_path / "imgs" / "cat" / "notes.txt").write_text("not an image")
    d = classification.load_image_folder(tmp_path / "imgs", size=(4, 3), test_size=0.25, seed=0)
    assert d.classes.tolist() == ["cat", "dog"]
    assert d.train.user_features.shape == (6, 12) and d.test_features.shape == (2, 12)
    assert sorted(d.test_labels.tolist()) == ["cat", "dog"]
    assert all(i.split("/")[0] == d.classes[c]
               for i, c in zip(d.train.user_ids, d.train.item_idx, strict=True))
    rgb = classification.load_image_folder(tmp_path / "imgs", size=(4, 3), grayscale=False,
                                           test_size=0)
    assert rgb.train.user_features.shape == (8, 36) and len(rgb.test_labels) == 0
    assert 0.0 <= rgb.train.user_features.min() and rgb.train.user_features.max() <= 1.0


def test_image_folder_errors(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(sisakit.DataError, match="no images found"):
        classification.load_image_folder(tmp_path / "empty")
    with pytest.raises(sisakit.DataError, match="not a folder"):
        classification.load_image_folder(tmp_path / "missing")
    _write_images(tmp_path / "one", n=1)
    with pytest.raises(sisakit.DataError, match="fewer than 2 samples"):
        classification.load_image_folder(tmp_path / "one")
    (tmp_path / "one" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(sisakit.DataError, match="cannot read image"):
        classification.load_image_folder(tmp_path / "one", test_size=0)
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    with pytest.raises(sisakit.DataError, match=r"sisakit\[images\]"):
        classification.load_image_folder(tmp_path / "one")
