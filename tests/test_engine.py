"""The exact SISA engine: exactness properties, persistence, validation."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sisakit
from sisakit.engine import parameters_equal, stage_epochs

SMALL = dict(model_params=dict(factors=8, batch_size=64), epochs=4, progress=False, device="cpu")


@pytest.fixture(scope="module")
def data() -> sisakit.Interactions:
    return sisakit.datasets.synthetic(n_users=120, n_items=50, mean_interactions=12, seed=3)


def make(n_shards=3, n_slices=3, sharder="random-user", seed=0, **kw):
    return sisakit.SISA(n_shards=n_shards, n_slices=n_slices, sharder=sharder, seed=seed,
                        **{**SMALL, **kw})


def assert_exact(model: sisakit.SISA, remaining: sisakit.Interactions) -> None:
    cfg = model.config
    ref = sisakit.SISA(
        n_shards=model.n_shards, n_slices=model.n_slices, sharder=cfg["sharder"]["name"],
        aggregator=cfg["aggregator"]["name"], seed=model.seed, **SMALL,
    ).fit(remaining)
    equal, n = parameters_equal(model, ref)
    assert n > 0
    assert equal, "forgotten model differs from a scratch fit on the remaining data"
    users = remaining.user_ids
    assert np.array_equal(model.recommend(users, k=5), ref.recommend(users, k=5))


# ---------------------------------------------------------------------------- exactness
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_shards=st.integers(1, 3),
    n_slices=st.integers(1, 3),
    sharder=st.sampled_from(["random-user", "random-interaction"]),
    picks=st.lists(st.integers(0, 119), min_size=1, max_size=4, unique=True),
)
def test_forget_users_equals_scratch_fit(data, n_shards, n_slices, sharder, picks):
    users = data.user_ids[picks].tolist()
    model = make(n_shards, n_slices, sharder).fit(data)
    report = model.forget(users=users)
    assert report.records_removed == int(np.isin(data.user_idx, picks).sum())
    assert_exact(model, data.without(users=users))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sharder=st.sampled_from(["random-user", "random-interaction"]),
    rows=st.lists(st.integers(0, 10_000), min_size=1, max_size=5, unique=True),
)
def test_forget_interactions_equals_scratch_fit(data, sharder, rows):
    rows = [r % len(data) for r in rows]
    pairs = list({(int(data.user_ids[data.user_idx[r]]), int(data.item_ids[data.item_idx[r]]))
                  for r in rows})
    model = make(2, 3, sharder).fit(data)
    model.forget(interactions=pairs)
    assert_exact(model, data.without(interactions=pairs))


def test_forget_item_retrains_every_shard_from_slice_zero(data):
    model = make(3, 3).fit(data)
    item = data.item_ids[int(np.argmax(data.item_counts()))]
    report = model.forget(items=[item])
    assert report.shards_retrained == [0, 1, 2]
    assert report.earliest_slice == {0: 0, 1: 0, 2: 0}
    assert report.work_fraction == pytest.approx(1.0)
    remaining = data.without(items=[item])
    assert_exact(model, remaining)
    recs = model.recommend(data.user_ids, k=10, exclude_seen=False)
    assert item not in recs


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_forget_in_each_slice_restarts_from_that_slice(data, which):
    model = make(2, 3).fit(data)
    target = {"first": 0, "middle": 1, "last": 2}[which]
    rows = np.flatnonzero(model.assignment[1] == target)
    user = data.user_ids[data.user_idx[rows[0]]]
    shard = int(model.assignment[0][rows[0]])
    report = model.forget(users=[user])
    assert report.shards_retrained == [shard]
    assert report.earliest_slice == {shard: target}
    assert report.slices_retrained == 3 - target
    assert 0 < report.work_fraction < 1
    assert_exact(model, data.without(users=[user]))


def test_repeated_forgets_equal_scratch_fit_on_cumulative_deletions(data):
    model = make(3, 2, sharder="random-interaction").fit(data)
    u1, u2 = data.user_ids[[4, 9]].tolist()
    r = 17
    pair = (int(data.user_ids[data.user_idx[r]]), int(data.item_ids[data.item_idx[r]]))
    item = int(data.item_ids[5])
    model.forget(users=[u1])
    model.forget(interactions=[pair])
    model.forget(users=[u2], items=[item])
    assert_exact(model, data.without(users=[u1, u2], interactions=[pair], items=[item]))
    assert len(model.history) == 3


def test_full_retrain_baseline_reports_whole_work(data):
    model = make(1, 1).fit(data)
    report = model.forget(users=[data.user_ids[0]])
    assert report.shards_retrained == [0]
    assert report.slices_retrained == 1
    assert report.work_fraction == pytest.approx(1.0)
    assert report.parameters_retrained == model.shard_models[0].n_parameters()
    assert report.seconds > 0 and report.cpu_seconds > 0


def test_work_fraction_matches_stage_sizes(data):
    model = make(2, 4).fit(data)
    user = data.user_ids[0]
    rows = data.user_idx == 0
    s, r = int(model.assignment[0][rows][0]), int(model.assignment[1][rows][0])
    report = model.forget(users=[user])
    work = model.view().stage_work()
    assert report.work_fraction == pytest.approx(work[s, r:].sum() / work.sum())


def test_stage_epochs_follow_the_sisa_schedule():
    assert stage_epochs(20, 4) == 8
    assert stage_epochs(20, 1) == 20
    assert stage_epochs(1, 9) == 1


# ---------------------------------------------------------------------------- determinism
def test_same_seed_same_bits_other_seed_differs(data):
    a, b = make().fit(data), make().fit(data)
    assert parameters_equal(a, b)[0]
    c = make(seed=1).fit(data)
    assert not parameters_equal(a, c)[0]


# ---------------------------------------------------------------------------- no-ops and errors
def test_unknown_id_among_valid_deletes_nothing(data, tmp_path):
    model = make(workdir=tmp_path / "run").fit(data)
    before = (tmp_path / "run" / "manifest.json").read_bytes()
    params = model.parameters()
    with pytest.raises(sisakit.UnknownIdError) as err:
        model.forget(users=[data.user_ids[0], 987654])
    assert "987654" in str(err.value)
    assert (tmp_path / "run" / "manifest.json").read_bytes() == before
    assert all(torch.equal(a[k], b[k]) for a, b in zip(params, model.parameters(), strict=True) for k in a)
    assert len(model.data) == len(data)


def test_already_forgotten_is_a_reported_noop(data):
    model = make().fit(data)
    user = data.user_ids[3]
    first = model.forget(users=[user])
    assert not first.noop
    again = model.forget(users=[user])
    assert again.noop and again.already_forgotten == {"users": 1}
    assert again.shards_retrained == []
    assert model.is_forgotten(user)
    item = data.item_ids[2]
    model.forget(items=[item])
    assert model.forget(items=[item]).already_forgotten == {"items": 1}


def test_never_seen_interaction_is_an_error(data):
    model = make().fit(data)
    u = data.user_idx[0]
    seen = set(zip(data.user_idx.tolist(), data.item_idx.tolist(), strict=True))
    j = next(j for j in range(data.n_items) if (u, j) not in seen)
    with pytest.raises(sisakit.UnknownIdError, match="not in the training data"):
        model.forget(interactions=[(data.user_ids[u], data.item_ids[j])])
    assert len(model.data) == len(data)
    assert model.history == []


def test_empty_request_is_rejected_and_a_shard_may_be_emptied(data):
    model = make(2, 1).fit(data)
    with pytest.raises(sisakit.ValidationError, match="empty forget request"):
        model.forget()
    assert len(model.history) == 0
    # An erasure request is never refused because it empties a shard.
    shard0 = model.assignment[0] == 0
    users = np.unique(data.user_ids[data.user_idx[shard0]]).tolist()
    keep = ~np.isin(data.user_ids[data.user_idx], users)
    stored = (model.assignment[0][keep], model.assignment[1][keep])
    report = model.forget(users=users)
    assert report.records_removed == int(shard0.sum())
    assert model.view().user_counts[0].sum() == 0
    ref = make(2, 1).fit(data.without(users=users), assignment=stored)
    assert parameters_equal(model, ref)[0]
    left = data.without(users=users).user_ids
    assert np.array_equal(model.recommend(left, k=5), ref.recommend(left, k=5))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_slices=0), "n_slices"),
        (dict(n_shards=0), "n_shards"),
        (dict(epochs=0), "epochs"),
        (dict(model="no-such-model"), "no model named"),
        (dict(sharder="nope"), "no sharder named"),
    ],
)
def test_bad_config_is_rejected(kwargs, match):
    with pytest.raises(sisakit.SisakitError, match=match):
        make(**kwargs)


def test_more_shards_than_users_is_rejected():
    tiny = sisakit.Interactions.from_arrays([1, 1, 2], [1, 2, 1])
    with pytest.raises(sisakit.ValidationError, match="larger than the number of users"):
        make(n_shards=3).fit(tiny)


def test_fit_rejects_non_interactions():
    with pytest.raises(sisakit.ValidationError, match="Interactions"):
        make().fit(np.zeros((3, 2)))


# ---------------------------------------------------------------------------- recommending
def test_recommend_shape_order_and_exclusion(data):
    model = make().fit(data)
    users = data.user_ids[[5, 1, 7]]
    recs = model.recommend(users, k=6)
    assert recs.shape == (3, 6)
    assert np.array_equal(recs[1], model.recommend([users[1]], k=6)[0])
    seen = set(data.item_ids[data.item_idx[data.user_idx == 5]].tolist())
    assert not seen & set(recs[0].tolist())
    with pytest.raises(sisakit.UnknownIdError, match="nobody"):
        model.recommend(["nobody"], k=3)
    with pytest.raises(sisakit.ValidationError, match="exceeds"):
        model.recommend(users, k=data.n_items + 1)


def test_user_without_data_gets_popularity_fallback(data):
    model = make().fit(data)
    user = data.user_ids[0]
    model.forget(users=[user])
    recs = model.recommend([user], k=5)[0]
    pop = model.data.item_counts()
    picked = np.isin(data.item_ids, recs)
    assert picked.sum() == 5
    assert pop[picked].min() >= pop[~picked].max()


def test_items_a_shard_never_saw_rank_below_its_scored_items(data):
    model = make(3, 1).fit(data)
    u = 0
    s = int(model.assignment[0][data.user_idx == u][0])
    seen = (model.shard_counts()[1][s] > 0).numpy()
    assert not seen.all(), "fixture should leave some items unseen by a shard"
    scores = model.scores(np.array([u]))[0].numpy()
    assert scores[~seen].max() < scores[seen].min()
    # Changing the untrained parameters of an unseen item changes nothing.
    q = model.shard_models[s].item_embeddings()
    q[np.flatnonzero(~seen)] += 100.0
    assert np.array_equal(model.scores(np.array([u]))[0].numpy(), scores)


def test_users_a_shard_never_saw_are_unaffected_by_it(data, monkeypatch):
    model = make(3, 1).fit(data)
    u = 0
    s = int(model.assignment[0][data.user_idx == u][0])
    before = model.scores(np.array([u])).clone()
    for other in range(3):
        if other != s:  # whatever another shard would say about this user is ignored
            monkeypatch.setattr(model.shard_models[other], "scores",
                                lambda idx: torch.full((len(idx), data.n_items), 1e6))
    assert torch.equal(model.scores(np.array([u])), before)
    assert not torch.equal(model.shard_models[(s + 1) % 3].scores(np.array([u])),
                           model.shard_models[s].scores(np.array([u])))


def test_metrics_evaluate_a_sisa_model(data):
    train, test = sisakit.split.holdout(data, test_fraction=0.2, seed=0)
    model = make(2, 2, epochs=10).fit(train)
    res = sisakit.metrics.evaluate(model, train, test, k=(5, 10))
    pop = make(2, 2, model="popularity", model_params={}).fit(train)
    res_pop = sisakit.metrics.evaluate(pop, train, test, k=(5, 10))
    assert 0 < res["ndcg@10"] <= 1
    assert 0 < res_pop["ndcg@10"] <= 1


# ---------------------------------------------------------------------------- persistence
def test_save_load_round_trip_and_forget_after_load(data, tmp_path):
    run = tmp_path / "run"
    model = make(workdir=run).fit(data)
    loaded = sisakit.SISA.load(run)
    assert parameters_equal(model, loaded)[0]
    assert np.array_equal(model.recommend(data.user_ids, k=5), loaded.recommend(data.user_ids, k=5))
    user = data.user_ids[10]
    loaded.forget(users=[user])
    assert_exact(loaded, data.without(users=[user]))
    again = sisakit.SISA.load(run)
    assert again.is_forgotten(user)
    assert parameters_equal(loaded, again)[0]


def test_manifest_lists_checksums_and_determinism_but_no_raw_ids(tmp_path):
    rng = np.random.default_rng(0)
    users = np.array([f"secret-user-{k}" for k in rng.integers(0, 30, 400)])
    items = rng.integers(0, 20, 400)
    d = sisakit.Interactions.from_arrays(users, items)
    run = tmp_path / "run"
    model = make(2, 2, workdir=run).fit(d)
    model.forget(users=["secret-user-7"])
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["determinism"]["threads_per_shard"] == 1
    assert manifest["determinism"]["torch_version"] == torch.__version__
    for name, digest in manifest["files"].items():
        assert (run / name).is_file() and len(digest) == 64
    listed = set(manifest["files"])
    on_disk = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert on_disk == listed | {"manifest.json", "ledger.jsonl", "run.lock"}  # + request ledger
    assert "secret-user-7" not in (run / "manifest.json").read_text()
    assert len(manifest["forgotten"]["users"]) == 1


def test_tampered_or_truncated_checkpoint_is_refused(data, tmp_path):
    run = tmp_path / "run"
    make(workdir=run).fit(data)
    manifest = json.loads((run / "manifest.json").read_text())
    ckpt = run / manifest["checkpoints"][0][-1]
    raw = ckpt.read_bytes()
    ckpt.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(sisakit.CheckpointError, match="checksum mismatch"):
        sisakit.SISA.load(run)
    ckpt.unlink()
    with pytest.raises(sisakit.CheckpointError, match="missing"):
        sisakit.SISA.load(run)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pickle_payload_is_refused_without_executing(data, tmp_path):
    run = tmp_path / "run"
    make(workdir=run).fit(data)
    manifest = json.loads((run / "manifest.json").read_text())
    name = manifest["checkpoints"][0][-1]
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps({"P": Evil()})
    (run / name).write_bytes(payload)
    import hashlib

    # An attacker who also fixes every checksum still cannot make sisakit unpickle code.
    manifest["files"][name] = hashlib.sha256(payload).hexdigest()
    sisakit.store.RunStore(run).write_manifest(manifest)
    with pytest.raises(sisakit.CheckpointError) as err:
        sisakit.SISA.load(run)
    assert "refused without executing any code" in str(err.value)
    assert not marker.exists()


def test_edited_manifest_is_detected(data, tmp_path):
    run = tmp_path / "run"
    make(workdir=run).fit(data)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["epochs"] = 99  # would silently break exactness of later forgets
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(sisakit.CheckpointError) as err:
        sisakit.SISA.load(run)
    assert "checksum does not match" in str(err.value)


def test_damaged_manifest_is_a_checkpoint_error(data, tmp_path):
    run = tmp_path / "run"
    make(workdir=run).fit(data)
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["data_files"]
    sisakit.store.RunStore(run).write_manifest(manifest)
    with pytest.raises(sisakit.CheckpointError) as err:
        sisakit.SISA.load(run)
    assert "damaged" in str(err.value)


def test_newer_format_and_missing_run_are_clear_errors(data, tmp_path):
    with pytest.raises(sisakit.CheckpointError, match="does not exist"):
        sisakit.SISA.load(tmp_path / "nowhere")
    run = tmp_path / "run"
    make(workdir=run).fit(data)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["format_version"] = 99
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(sisakit.CheckpointError, match="upgrade sisakit"):
        sisakit.SISA.load(run)


def test_existing_run_with_other_config_is_not_overwritten(data, tmp_path):
    run = tmp_path / "run"
    make(workdir=run).fit(data)
    before = (run / "manifest.json").read_bytes()
    with pytest.raises(sisakit.CheckpointError, match="different config"):
        make(n_shards=2, workdir=run).fit(data)
    assert (run / "manifest.json").read_bytes() == before
    make(n_shards=2, workdir=run, overwrite=True).fit(data)
    assert sisakit.SISA.load(run).n_shards == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(sisakit.CheckpointError, match="not an empty directory"):
        make(workdir=tmp_path / "other").fit(data)


def test_private_workdirs_never_collide(data):
    a, b = make(), make()
    assert a.workdir != b.workdir
    a.fit(data)
    b.fit(data.without(users=[data.user_ids[0]]))
    assert a.workdir.is_dir() and b.workdir.is_dir()
    assert len(a.data) != len(b.data)


def test_sisa_unlearner_plugin_is_the_same_as_forget(data):
    model = make().fit(data)
    unlearner = sisakit.plugins.build("unlearner", "sisa")
    result = unlearner.unlearn(model, sisakit.ForgetRequest(users=[data.user_ids[2]]))
    assert result.model is model
    assert result.report.records_removed == int((data.user_idx == 2).sum())
    with pytest.raises(sisakit.ValidationError, match="ForgetRequest"):
        unlearner.unlearn(model, sisakit.AttributeRequest(attribute="gender"))


def test_failed_commit_rolls_back_memory_and_disk(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    model = make(workdir=run).fit(data)
    manifest_before = (run / "manifest.json").read_bytes()
    files_before = sorted(p.relative_to(run).as_posix() for p in run.rglob("*")
                          if p.is_file() and p.name != "run.lock")  # fit took the run lock
    params = model.parameters()

    def boom(self, manifest):
        raise OSError("disk full")

    monkeypatch.setattr(sisakit.store.RunStore, "write_manifest", boom)
    with pytest.raises(OSError, match="disk full"):
        model.forget(users=[data.user_ids[1]])
    monkeypatch.undo()
    assert (run / "manifest.json").read_bytes() == manifest_before
    files_after = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    ledger = [json.loads(x) for x in (run / "ledger.jsonl").read_text().splitlines()]
    assert [e["state"] for e in ledger] == ["received", "failed"]  # not acknowledged
    assert [f for f in files_after if f not in ("ledger.jsonl", "run.lock")] == files_before
    assert len(model.data) == len(data) and not model.is_forgotten(data.user_ids[1])
    assert parameters_equal(model, sisakit.SISA.load(run))[0]
    assert all(torch.equal(a[k], b[k]) for a, b in zip(params, model.parameters(), strict=True)
               for k in a)
    # The run is still usable: the same forget now succeeds and is exact.
    model.forget(users=[data.user_ids[1]])
    assert_exact(model, data.without(users=[data.user_ids[1]]))
