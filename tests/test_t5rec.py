"""The optional ``t5rec`` model (Hugging Face T5 over item tokens) and dual-memory on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sisakit import plugins
from sisakit.errors import ValidationError
from sisakit.unlearners import DualMemory, ForgetRequest

transformers = pytest.importorskip("transformers")

from test_dual_memory import FORGET, MAX_LEN, _contexts, _last_pairs, _rank, _walks  # noqa: E402

SMALL = dict(factors=16, n_blocks=1, n_heads=2, max_len=MAX_LEN, batch_size=32, lr=0.01,
             dropout=0.1, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # tiny T5 layers: one thread is fastest, and several spin against a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # nothing may be downloaded: any attempt to reach the Hub fails
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def walks():
    return _walks()


@pytest.fixture(scope="module")
def trained(walks):
    return plugins.get("model", "t5rec")(**SMALL).fit(walks, epochs=25, seed=0)


def _last_item_ranks(model, data):
    users = np.arange(data.n_users)
    _, items = _last_pairs(data, users)
    return _rank(model.score_sequences(_contexts(data, users)), items).numpy()


def test_t5rec_learns_the_next_item(walks, trained):
    untrained = plugins.get("model", "t5rec")(**SMALL)
    untrained.setup(walks, seed=0)
    before = _last_item_ranks(untrained, walks)
    after = _last_item_ranks(trained, walks)
    # 70 items: an untrained model ranks the next item near the middle, a trained one near the top
    assert np.median(before) > 20
    assert np.median(after) < 10 and (after < 10).mean() > 0.5


def test_state_round_trip_and_determinism(walks, trained):
    again = plugins.get("model", "t5rec")(**SMALL).fit(walks, epochs=25, seed=0)
    a, b = trained.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loaded = plugins.get("model", "t5rec")(**SMALL)
    loaded.load_state_dict(a)
    loaded.bind_space(walks)
    users = np.arange(10)
    assert torch.equal(loaded.scores(users), trained.scores(users))
    with pytest.raises(ValidationError, match="not saved by a t5rec"):
        loaded.load_state_dict({"net.item_emb.weight": torch.zeros(3, 2)})


def test_local_config_and_local_weights_are_used_and_nothing_else(walks, tmp_path):
    cfg = dict(d_model=8, d_kv=4, d_ff=12, num_layers=1, num_decoder_layers=2, num_heads=2,
               feed_forward_proj="relu", vocab_size=5)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    model = plugins.get("model", "t5rec")(max_len=MAX_LEN, device="cpu", config=tmp_path)
    model.setup(walks, seed=0)
    t5 = model.network.t5
    assert (t5.config.d_model, len(t5.decoder.block), t5.config.d_ff) == (8, 2, 12)
    assert t5.config.vocab_size == walks.n_items + 1  # resized to the catalogue
    assert model.hidden_size == 8
    # local weights: a directory written by save_pretrained, loaded as is
    saved = tmp_path / "weights"
    t5.save_pretrained(saved)
    from_weights = plugins.get("model", "t5rec")(max_len=MAX_LEN, device="cpu", weights=saved)
    from_weights.setup(walks, seed=1)
    for (name, p), q in zip(t5.state_dict().items(),
                            from_weights.network.t5.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    with pytest.raises(ValidationError, match="not found"):
        plugins.get("model", "t5rec")(device="cpu", weights=tmp_path / "nope").setup(
            walks, seed=0)
    with pytest.raises(ValidationError, match="not found"):
        plugins.get("model", "t5rec")(device="cpu", config=tmp_path / "none.json").setup(
            walks, seed=0)
    small = transformers.T5ForConditionalGeneration(transformers.T5Config(**cfg))
    small.save_pretrained(tmp_path / "small")
    with pytest.raises(ValidationError, match="tokens but the catalogue"):
        plugins.get("model", "t5rec")(device="cpu", weights=tmp_path / "small").setup(
            walks, seed=0)
    with pytest.raises(ValidationError, match="train_positions"):
        plugins.get("model", "t5rec")(device="cpu", train_positions=0).setup(walks, seed=0)


def test_dual_memory_forgets_on_a_t5_backbone(walks, trained):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    pairs, items = _last_pairs(walks, FORGET)
    ctx = _contexts(walks, FORGET)
    res = DualMemory(preset="suppress", epochs=30, rank=4, alpha=8.0, router_epochs=300,
                     progress=False, seed=0).unlearn(
        trained, ForgetRequest(interactions=pairs), data=walks)
    # the T5's own attention and feed-forward projections carry the adapters
    assert any(t.endswith("EncDecAttention.q") for t in res.report["targets"])
    after = trained.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # main memory untouched
    main_rank = _rank(trained.score_sequences(ctx), items)
    side_rank = _rank(res.model.score_sequences(ctx), items)
    assert (side_rank > main_rank).all() and (side_rank >= 50).all()
    # users the router sends to the main memory get the main model's scores, bit for bit
    others = np.arange(len(FORGET), walks.n_users)
    to_main = others[res.model.route(others).numpy() < 0.5]
    assert len(to_main) >= 0.9 * len(others)
    assert torch.equal(res.model.scores(to_main), trained.scores(to_main))
