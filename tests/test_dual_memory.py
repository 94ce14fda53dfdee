"""The ``dual-memory`` unlearner: frozen main memory, LoRA side memory, router (issue #8)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from sisakit import plugins
from sisakit.data import Interactions
from sisakit.errors import CheckpointError, UnknownIdError, ValidationError
from sisakit.models.sasrec import PAD, user_sequences
from sisakit.store import RunStore
from sisakit.unlearners import DualMemory, DualMemoryModel, ForgetRequest
from sisakit.unlearners.dual_memory import (
    STATE_FILE,
    LoRALinear,
    calibrated_ranks,
    forget_losses,
    forget_windows,
    retain_kl,
)

MAX_LEN = 8


def _walks(n_users: int = 60, n_items: int = 70, length: int = 10, seed: int = 0
           ) -> Interactions:
    """Each user walks forward from a distinct start in steps of 1 or 2 (mod n_items), so every
    user's sequence is distinct and the next item is predictable; timestamps are not in record
    order."""
    rng = np.random.default_rng(seed)
    start = rng.permutation(n_items)[:n_users]
    steps = rng.integers(1, 3, size=(n_users, length))
    steps[:, 0] = 0
    items = (start[:, None] + np.cumsum(steps, axis=1)) % n_items
    users = np.repeat(np.arange(n_users), length)
    times = (1000 * users + 10 * np.tile(np.arange(length), n_users))
    perm = rng.permutation(len(users))
    return Interactions.from_arrays(users[perm], items.ravel()[perm], timestamp=times[perm],
                                    item_ids=np.arange(n_items))


def _sasrec(**kw):
    params = dict(factors=16, n_heads=2, max_len=MAX_LEN, batch_size=32, dropout=0.1, lr=0.01,
                  device="cpu")
    params.update(kw)
    return plugins.get("model", "sasrec")(**params)


@pytest.fixture(scope="module")
def trained():
    data = _walks()
    model = _sasrec().fit(data, epochs=25, seed=0)
    return data, model


def _last_pairs(data: Interactions, users: np.ndarray) -> tuple[list, np.ndarray]:
    """The (raw user, raw item) of each user's latest record, and its item index."""
    seq = user_sequences(data, MAX_LEN)
    items = (seq[torch.as_tensor(users), -1] - 1).numpy()
    return list(zip(data.user_ids[users], data.item_ids[items], strict=True)), items


def _contexts(data: Interactions, users: np.ndarray) -> torch.Tensor:
    """Each user's history before their latest record, padded to MAX_LEN."""
    seq = user_sequences(data, MAX_LEN + 1)[torch.as_tensor(users)]
    return seq[:, :-1]


def _removed(data: Interactions) -> np.ndarray:
    """Record positions of the forget users' latest records."""
    order = np.lexsort((data.record_id, data.timestamp, data.user_idx))
    u = data.user_idx[order]
    last = order[np.r_[u[1:] != u[:-1], True]]
    return last[np.isin(data.user_idx[last], FORGET)]


def _rank(scores: torch.Tensor, items: np.ndarray) -> torch.Tensor:
    own = scores[torch.arange(len(scores)), torch.as_tensor(items)]
    return (scores > own[:, None]).sum(1)


FORGET = np.arange(6)
UNLEARN = dict(epochs=30, rank=4, alpha=8.0, router_epochs=300, progress=False)


@pytest.fixture(scope="module")
def unlearned(trained):
    data, model = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pairs, items = _last_pairs(data, FORGET)
    result = DualMemory(preset="suppress", **UNLEARN).unlearn(
        model, ForgetRequest(interactions=pairs), data=data)
    return result, before, items


# ---------------------------------------------------------------------------------- behaviour
def test_main_weights_are_bit_for_bit_unchanged(trained, unlearned):
    _data, model = trained
    result, before, _ = unlearned
    after = model.state_dict()
    assert set(after) == set(before)
    for key in before:
        assert torch.equal(before[key], after[key]), key
    # the served model's main memory is the input model itself, not a copy
    assert result.model.main is model
    for name, p in result.model.side.named_parameters():
        if ".lora_" not in name:
            own = dict(model.network.named_parameters())[name.replace(".base.", ".")]
            assert torch.equal(p, own), name


def test_forgotten_items_fall_in_forget_users_rankings(trained, unlearned):
    data, model = trained
    result, _, items = unlearned
    ctx = _contexts(data, FORGET)
    main_rank = _rank(model.score_sequences(ctx), items)
    dm_rank = _rank(result.model.score_sequences(ctx), items)
    assert (main_rank < 10).float().mean() > 0.5  # the main model still predicts them
    assert (dm_rank >= 10).all(), (main_rank.tolist(), dm_rank.tolist())
    # the bound histories exclude the forgotten records, and those requests go to the side
    assert (result.model.route(FORGET) >= 0.5).all()


def test_users_routed_to_main_get_the_main_models_scores_exactly(trained, unlearned):
    data, model = trained
    result, _, _ = unlearned
    others = np.setdiff1d(np.arange(data.n_users), FORGET)
    to_main = others[(result.model.route(others) < 0.5).numpy()]
    assert len(to_main) >= 0.8 * len(others)
    assert torch.equal(result.model.scores(to_main), model.scores(to_main))


def test_report_and_recommend(trained, unlearned):
    data, _model = trained
    result, _, items = unlearned
    rep = result.report
    assert rep["records_forgotten"] == len(FORGET) and rep["forget_users"] == len(FORGET)
    assert rep["side_parameters"] > 0 and rep["seconds"] > 0
    # suppress: the forgotten item is not in the forget user's top 10 any more
    recs = result.model.recommend(data.user_ids[FORGET], k=10)
    assert recs.shape == (len(FORGET), 10)
    assert not any(data.item_ids[i] in row for i, row in zip(items, recs, strict=True))
    # recommend excludes the user's own history
    hist = result.model.histories(FORGET)
    for row, h in zip(recs, hist, strict=True):
        assert not set(row) & set(data.item_ids[(h[h != PAD] - 1).numpy()])


def test_whole_user_request_routes_their_history_to_the_side_memory(trained):
    data, model = trained
    users = data.user_ids[[10, 11]]
    result = DualMemory(preset="suppress", **UNLEARN).unlearn(
        model, ForgetRequest(users=list(users)), data=data)
    seq = user_sequences(data, MAX_LEN + 1)[[10, 11]]
    assert (result.model.route_sequences(seq[:, :-1]) >= 0.5).all()
    assert result.report["forget_windows"] == 2  # one window per whole user
    # a forgotten user's bound history is empty now
    assert (result.model.histories(np.array([10, 11])) == PAD).all()


def test_deterministic_under_a_fixed_seed(trained):
    data, model = trained
    pairs, _ = _last_pairs(data, np.array([3]))
    runs = [DualMemory(preset="match-gold", epochs=3, router_epochs=20, seed=5,
                       progress=False).unlearn(model, ForgetRequest(interactions=pairs),
                                               data=data).model.state_dict()
            for _ in range(2)]
    assert set(runs[0]) == set(runs[1])
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    other = DualMemory(preset="match-gold", epochs=3, router_epochs=20, seed=6,
                       progress=False).unlearn(model, ForgetRequest(interactions=pairs),
                                               data=data).model.state_dict()
    assert any(not torch.equal(runs[0][k], other[k]) for k in runs[0])


def test_presets_and_overrides():
    assert DualMemory().settings()["stop_at_top_k"] is True  # match-gold by default
    assert DualMemory(preset="suppress").settings()["unlikelihood_weight"] > \
        DualMemory().settings()["unlikelihood_weight"]
    assert DualMemory(preset="suppress", kl_weight=0.25).settings()["kl_weight"] == 0.25


# ---------------------------------------------------------------------------------- pieces
def test_lora_starts_equal_to_its_base_layer_and_refuses_a_too_large_rank():
    base = torch.nn.Linear(6, 4)
    layer = LoRALinear(base, 3, 6.0, torch.Generator().manual_seed(0))
    x = torch.randn(5, 6)
    assert torch.equal(layer(x), base(x))
    with pytest.raises(ValidationError, match="rank <= 4"):
        LoRALinear(base, 5, 1.0, torch.Generator())


def test_forget_windows_end_at_the_forgotten_records():
    data = _walks(n_users=4, n_items=20, length=12)
    seq = user_sequences(data, 12)
    remove = np.zeros(len(data), bool)
    # user 0: its 5th record (in time); user 1: every record
    order = np.argsort(data.timestamp)
    u0 = order[data.user_idx[order] == 0][4]
    remove[u0] = True
    remove[data.user_idx == 1] = True
    windows, flags = forget_windows(data, remove, max_len=4)
    assert windows.shape == (2, 5) and flags.shape == (2, 4)
    # user 0: the 5 items ending at its 5th record, only the last target forgotten
    assert windows[0].tolist() == seq[0, :5].tolist()
    assert flags[0].tolist() == [False, False, False, True]
    # user 1 (whole): its last 5 items, every target forgotten
    assert windows[1].tolist() == seq[1, -5:].tolist()
    assert flags[1].all()


def test_stop_at_top_k_stops_pushing_items_already_out_of_the_top_k():
    side = torch.tensor([[5.0, 4.0, 3.0, 0.0], [0.0, 4.0, 3.0, 5.0]], requires_grad=True)
    main = side.detach().clone()
    losses = forget_losses(side, main, torch.tensor([0, 0]), hard_negatives=2, top_k=2,
                           margin=0.5, topk_margin=0.5, suppress_margin=0.0, stop_at_top_k=True)
    total = sum(losses.values())
    total.backward()
    assert side.grad[0].abs().sum() > 0  # item 0 is ranked first: pushed
    assert side.grad[1].abs().sum() == 0  # item 0 is ranked last: left alone


def test_calibrated_ranks_map_member_ranks_onto_the_held_out_distribution():
    rng = np.random.default_rng(0)
    member = rng.integers(0, 20, size=400)  # memorised: ranked near the top
    held = rng.integers(0, 300, size=1000)  # never seen: ranked lower
    target = calibrated_ranks(member, held)
    assert (target >= member).all()  # nothing is pulled up
    # order preserved: a better-ranked member never gets a worse target than a worse-ranked one
    order = np.argsort(member, kind="stable")
    assert (np.diff(target[order]) >= 0).all()
    # the targets follow the held-out distribution (HR@10 included)
    for k in (10, 50, 150):
        assert abs((target < k).mean() - (held < k).mean()) < 0.02
    # members already ranked like unseen records keep their ranks
    same = rng.integers(0, 300, size=1000)
    assert np.abs(calibrated_ranks(same, same) - same).mean() < 1.0
    assert len(calibrated_ranks(np.zeros(0, np.int64), held)) == 0
    # groups are matched separately: a group of strongly memorised records (all ranked first)
    # gets the held-out distribution by itself instead of the pooled best quantiles
    mixed = np.r_[np.zeros(300, np.int64), rng.integers(100, 300, size=300)]
    groups = np.r_[np.zeros(300, np.int64), np.ones(300, np.int64)]
    pooled = calibrated_ranks(mixed, held)
    grouped = calibrated_ranks(mixed, held, groups=groups)
    assert abs((grouped[:300] < 10).mean() - (held < 10).mean()) < 0.02
    assert (pooled[:300] < 10).mean() > 2 * (held < 10).mean()  # pooling hands them the top


def _rank_losses(side, target, need, seen=None, top_k=3):
    return forget_losses(side, side.detach().clone(), target, hard_negatives=1, top_k=top_k,
                         margin=0.0, topk_margin=0.0, suppress_margin=0.0, stop_at_top_k=True,
                         target_rank=need, rank_margin=0.1, seen=seen)


def test_rank_target_term_pushes_to_the_target_rank_lifts_overshoot_and_skips_seen_items():
    # item 0 ranks first in row 0, fourth in row 1, last (5th of 6) in row 2
    side = torch.tensor([[9.0, 8, 7, 6, 5, 4], [6.0, 9, 8, 7, 5, 4], [0.0, 9, 8, 7, 6, 5]],
                        requires_grad=True)
    target = torch.tensor([0, 0, 0])
    losses = _rank_losses(side, target, torch.tensor([3, 3, 1]))
    losses["rank"].backward()
    g = side.grad[:, 0]
    assert g[0] > 0  # rank 0 < target 3: pushed down (gradient descent lowers the logit)
    assert g[1] == 0  # rank 3 == target 3: left alone
    assert g[2] < 0  # target 1 but rank 5, past its band (1 to 3): lifted
    # within its band (target 4: ranks 4 to 1.25 * 4 + 2 = 7) an item is left alone
    side.grad = None
    _rank_losses(side, target, torch.tensor([3, 3, 4]))["rank"].backward()
    assert side.grad[2, 0] == 0
    # seen items leave the ranking: with items 1 and 2 seen, row 1's item 0 ranks 1st of the
    # rest, so a target of 2 pushes it
    side.grad = None
    seen = torch.zeros(3, 6, dtype=torch.bool)
    seen[1, [1, 2]] = True
    _rank_losses(side, target, torch.tensor([0, 2, 5]), seen=seen)["rank"].backward()
    assert side.grad[1, 0] > 0 and side.grad[0, 0] == 0


def test_match_gold_calibrated_on_held_out_records_forgets_down_to_unseen_ranks(trained):
    data, model = trained
    pairs, _items = _last_pairs(data, FORGET)
    held = data.take(np.isin(data.record_id, data.record_id[_removed_others(data)]))
    res = DualMemory(preset="match-gold", **UNLEARN).unlearn(
        model, ForgetRequest(interactions=pairs), data=data, held_out=held)
    cal = res.report["calibration"]
    assert cal is not None and cal["held_out_records"] == len(held)
    assert cal["positions"] == len(FORGET)
    # the targets are the held-out ranks: forgotten items reach them, and rank no better than
    # the main model ranked them
    assert cal["reached"] >= 0.8
    assert cal["forgotten_side_hr@10"] <= cal["forgotten_main_hr@10"]
    assert cal["forgotten_target_hr@10"] <= cal["forgotten_main_hr@10"]


def test_match_gold_without_held_out_logs_that_it_is_not_calibrated(trained, caplog):
    data, model = trained
    pairs, _ = _last_pairs(data, FORGET)
    with caplog.at_level("WARNING", logger="sisakit.unlearners.dual_memory"):
        res = DualMemory(preset="match-gold", **dict(UNLEARN, epochs=1)).unlearn(
            model, ForgetRequest(interactions=pairs), data=data)
    assert res.report["calibration"] is None
    assert "held_out" in caplog.text


def test_bad_held_out_is_refused(trained):
    data, model = trained
    pairs, _ = _last_pairs(data, FORGET)
    req = ForgetRequest(interactions=pairs)
    dm = DualMemory(preset="match-gold", **dict(UNLEARN, epochs=1))
    with pytest.raises(ValidationError, match="held_out must be non-empty"):
        dm.unlearn(model, req, data=data, held_out=data.take(np.zeros(len(data), bool)))
    other = _walks(n_users=50)
    with pytest.raises(ValidationError, match="id space"):
        dm.unlearn(model, req, data=data, held_out=other)
    with pytest.raises(ValidationError, match="held_out must be non-empty"):
        dm.unlearn(model, req, data=data, held_out=[("u", "i")])
    # only forget users' records: nothing to calibrate on
    forget_only = data.take(np.isin(data.user_idx, FORGET))
    with pytest.raises(ValidationError, match="users who are not forgotten"):
        dm.unlearn(model, req, data=data, held_out=forget_only)


def _removed_others(data: Interactions) -> np.ndarray:
    """Record positions of the latest records of users 10-39 (stand-ins for held-out records;
    the model trained on them, so they only exercise the calibration's plumbing)."""
    order = np.lexsort((data.record_id, data.timestamp, data.user_idx))
    u = data.user_idx[order]
    last = order[np.r_[u[1:] != u[:-1], True]]
    return last[np.isin(data.user_idx[last], np.arange(10, 40))]


def test_retain_kl_ignores_forgotten_items_and_is_finite_with_inactive_items():
    main = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    main[:, 5] = float("-inf")  # an inactive item: masked like the forgotten ones
    forgotten = torch.tensor([1, 5])
    side = main.clone().requires_grad_(True)
    assert retain_kl(side, main, forgotten).abs() < 1e-6
    moved = main.clone()
    moved[:, 1] += 5.0  # only the forgotten item moves: no divergence
    assert retain_kl(moved, main, forgotten).abs() < 1e-6
    moved[:, 2] += 1.0  # a retained item moves: divergence
    assert retain_kl(moved, main, forgotten) > 1e-3
    loss = retain_kl(side + torch.tensor([0.0, 0, 1, 0, 0, 0]), main, forgotten)
    loss.backward()
    assert torch.isfinite(side.grad).all() and side.grad[:, 2].abs().sum() > 0


# ---------------------------------------------------------------------------------- state
def test_save_load_round_trip_gives_identical_scores(trained, unlearned, tmp_path):
    data, model = trained
    result, _, _ = unlearned
    result.model.save(tmp_path / "dm")
    loaded = DualMemoryModel.load(tmp_path / "dm", model,
                                  data=data.take(~np.isin(np.arange(len(data)), _removed(data))))
    users = np.arange(data.n_users)
    assert torch.equal(loaded.scores(users), result.model.scores(users))
    assert torch.equal(loaded.route(users), result.model.route(users))
    saved = torch.load(io.BytesIO((tmp_path / "dm" / STATE_FILE).read_bytes()),
                       weights_only=True)
    assert all(k.startswith(("side.", "router.")) for k in saved)
    assert not any("item_emb" in k for k in saved)  # the main model is not saved again


def test_corrupted_or_pickled_state_is_refused(trained, unlearned, tmp_path):
    _data, model = trained
    result, _, _ = unlearned
    path = tmp_path / "dm"
    result.model.save(path)
    raw = (path / STATE_FILE).read_bytes()
    (path / STATE_FILE).write_bytes(raw[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match="checksum"):
        DualMemoryModel.load(path, model)
    # a pickle payload with a matching checksum is refused by weights_only loading
    buf = io.BytesIO()
    torch.save({"side.x": torch.zeros(1), "evil": _Evil()}, buf)
    store = RunStore(path)
    digest = store.write(STATE_FILE, buf.getvalue())
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][STATE_FILE] = digest
    store.write_manifest(manifest)
    with pytest.raises(CheckpointError, match="refused"):
        DualMemoryModel.load(path, model)


class _Evil:
    def __reduce__(self):
        return (print, ("executed",))


def test_loading_onto_another_main_model_is_refused(trained, unlearned, tmp_path):
    data, _ = trained
    result, _, _ = unlearned
    result.model.save(tmp_path / "dm")
    other = _sasrec().fit(data, epochs=1, seed=1)
    with pytest.raises(CheckpointError, match="do not match"):
        DualMemoryModel.load(tmp_path / "dm", other)


# ---------------------------------------------------------------------------------- bad input
def _unlearn(trained, request, **kw):
    data, model = trained
    params = dict(epochs=1, router_epochs=2, progress=False)
    params.update(kw.pop("params", {}))
    return DualMemory(**params).unlearn(model, request, data=kw.get("data", data))


def test_interactions_never_seen_are_refused(trained):
    data, _ = trained
    seq = user_sequences(data, MAX_LEN + 2)
    seen = set((seq[0][seq[0] != PAD] - 1).tolist())
    unseen = next(i for i in range(data.n_items) if i not in seen)
    with pytest.raises(ValidationError, match="never seen"):
        _unlearn(trained, ForgetRequest(interactions=[(data.user_ids[0],
                                                       data.item_ids[unseen])]))


def test_empty_request_is_refused(trained):
    with pytest.raises(ValidationError, match="empty"):
        _unlearn(trained, ForgetRequest())


def test_unknown_items_and_users_are_refused(trained):
    data, _ = trained
    with pytest.raises(UnknownIdError):
        _unlearn(trained, ForgetRequest(interactions=[(data.user_ids[0], 99999)]))
    with pytest.raises(UnknownIdError):
        _unlearn(trained, ForgetRequest(users=[99999]))


def test_item_requests_and_missing_data_are_refused(trained):
    data, model = trained
    with pytest.raises(ValidationError, match="not whole items"):
        _unlearn(trained, ForgetRequest(items=[data.item_ids[0]]))
    with pytest.raises(ValidationError, match="data=train"):
        DualMemory(epochs=1).unlearn(model, ForgetRequest(users=[data.user_ids[0]]))
    with pytest.raises(ValidationError, match="histories"):
        _unlearn(trained, ForgetRequest(users=[data.user_ids[0]]), data=data.take(
            np.arange(len(data) - 5)))


def test_too_large_rank_and_unknown_targets_are_refused(trained):
    data, _ = trained
    req = ForgetRequest(users=[data.user_ids[0]])
    with pytest.raises(ValidationError, match="rank"):
        _unlearn(trained, req, params=dict(rank=17))  # layers are 16 x 16
    with pytest.raises(ValidationError, match="matches no linear layer"):
        _unlearn(trained, req, params=dict(targets=("attn.nope",)))
    with pytest.raises(ValidationError, match="preset"):
        _unlearn(trained, req, params=dict(preset="gentle"))


def test_sequences_longer_than_max_len_are_refused(unlearned):
    result, _, _ = unlearned
    with pytest.raises(ValidationError, match="at most max_len"):
        result.model.score_sequences([np.arange(MAX_LEN + 1)])
    with pytest.raises(ValidationError, match="at most max_len"):
        result.model.route_sequences(np.ones((1, MAX_LEN + 3), dtype=np.int64))


def test_a_model_that_is_not_sasrec_is_refused():
    from sisakit.datasets import synthetic
    from sisakit.models import BPRMF

    data = synthetic(n_users=20, n_items=10, seed=0)
    model = BPRMF(factors=4, device="cpu").fit(data, epochs=1)
    with pytest.raises(ValidationError, match="SASRec"):
        DualMemory(epochs=1).unlearn(model, ForgetRequest(users=[data.user_ids[0]]), data=data)
