"""Attribute attackers and the ``pot-au`` attribute unlearner."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import sisakit
from sisakit import plugins
from sisakit.attackers import XGBoostAttributeAttacker, balance
from sisakit.engine import parameters_equal
from sisakit.unlearners.potau import PotAU, mmd2, u2u_loss


@pytest.fixture(scope="module")
def data() -> sisakit.Interactions:
    return sisakit.datasets.synthetic(n_users=400, n_items=120, mean_interactions=25, seed=2)


@pytest.fixture(scope="module")
def model(data) -> sisakit.models.BPRMF:
    return sisakit.models.BPRMF(factors=16, batch_size=512, device="cpu").fit(data, epochs=15)


def quick_attacker():
    return XGBoostAttributeAttacker(n_repeats=1, n_estimators=30)


def test_u2u_loss_equals_the_pairwise_sum():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(9, 3, generator=g, dtype=torch.float64)
    codes = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1])
    brute = 0.0
    for a, b in itertools.combinations(range(3), 2):
        ea, eb = e[codes == a], e[codes == b]
        brute += float(((ea[:, None] - eb[None]) ** 2).sum()) / (len(ea) * len(eb))
    assert float(u2u_loss(e, codes, 3)) == pytest.approx(brute, rel=1e-12)


def test_mmd_is_zero_for_equal_samples_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 4, generator=g, dtype=torch.float64)
    bw = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    assert float(mmd2(a, a, bw)) == pytest.approx(0.0, abs=1e-12)
    near = float(mmd2(a, a + 0.1, bw))
    far = float(mmd2(a, a + 1.0, bw))
    assert 0 < near < far


def test_balance_equalises_classes():
    labels = np.array([0] * 30 + [1] * 10 + [2] * 12)
    idx = balance(labels, seed=0)
    assert np.bincount(labels[idx]).tolist() == [10, 10, 10]
    assert np.array_equal(idx, balance(labels, seed=0))


def test_attackers_follow_the_protocol(model, data):
    emb = model.user_embeddings().numpy()
    gender = data.user_attributes["gender"]
    res = quick_attacker().evaluate(emb, gender)
    assert res.details["folds"] == 5 and res.details["n_classes"] == 2
    assert res.auc > 0.6  # the synthetic attribute leaks into the embeddings
    age = data.user_attributes["age_group"]
    multi = quick_attacker().evaluate(emb, age)
    assert multi.details["n_classes"] == 3 and 0 <= multi.auc <= 1
    mlp = plugins.build("attacker", "mlp-attribute", n_repeats=1).evaluate(emb, gender)
    assert 0 <= mlp.auc <= 1 and set(mlp.details) >= {"f1_mean", "precision_mean", "recall_std"}


@pytest.mark.parametrize(
    ("features", "labels", "match"),
    [
        (np.zeros((5, 2)), np.zeros(5), "single class"),
        (np.zeros((5, 2)), np.arange(4), "one entry per row"),
        (np.full((4, 2), np.nan), np.array([0, 1, 0, 1]), "NaN"),
        (np.zeros(4), np.array([0, 1, 0, 1]), "2-D"),
    ],
)
def test_attacker_bad_input(features, labels, match):
    with pytest.raises(sisakit.ValidationError, match=match):
        quick_attacker().evaluate(features, labels)


def test_pot_au_hides_the_attribute_and_keeps_the_input(model, data):
    gender = data.user_attributes["gender"]
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before = quick_attacker().evaluate(model.user_embeddings().numpy(), gender).auc
    result = PotAU(steps=150, attackers=()).unlearn(
        model, sisakit.AttributeRequest("gender", labels=gender))
    after = quick_attacker().evaluate(result.model.user_embeddings().numpy(), gender).auc
    assert before > 0.6
    assert abs(after - 0.5) < abs(before - 0.5) - 0.1
    assert all(torch.equal(before_state[k], v) for k, v in model.state_dict().items())
    # Item embeddings stay fixed; only user embeddings move.
    assert torch.equal(result.model.item_embeddings(), model.item_embeddings())
    assert not torch.equal(result.model.user_embeddings(), model.user_embeddings())
    assert result.report["users"] == data.n_users and result.report["seconds"] > 0


def test_pot_au_on_a_sisa_ensemble_refuses_later_forgets(data):
    cfg = dict(n_shards=2, n_slices=1, epochs=6, progress=False, device="cpu",
               model_params={"factors": 8, "batch_size": 512})
    sisa = sisakit.SISA(**cfg).fit(data)
    params = sisa.parameters()
    result = plugins.build("unlearner", "pot-au", steps=40, attackers=()).unlearn(
        sisa, sisakit.AttributeRequest("gender"))
    derived = result.model
    assert derived is not sisa and derived.derived_by == "pot-au"
    assert all(torch.equal(a[k], b[k]) for a, b in zip(params, sisa.parameters(), strict=True)
               for k in a)
    assert not all(torch.equal(a[k], b[k]) for a, b in zip(params, derived.parameters(),
                                                           strict=True) for k in a)
    assert derived.recommend(data.user_ids[:3], k=5).shape == (3, 5)
    with pytest.raises(sisakit.ValidationError, match=r"(?i)forget on the original"):
        derived.forget(users=[data.user_ids[0]])
    sisa.forget(users=[data.user_ids[0]])  # the original still forgets


@pytest.mark.parametrize(
    ("request_kwargs", "match"),
    [
        (dict(attribute="religion"), "no user attribute"),
        (dict(attribute="gender", labels=np.zeros(10)), "labels for"),
        (dict(attribute="gender", labels=np.zeros(400)), "fewer than two groups"),
    ],
)
def test_pot_au_bad_requests(data, model, request_kwargs, match):
    sisa_like = model if "labels" in request_kwargs else sisakit.SISA(
        n_shards=1, n_slices=1, epochs=1, progress=False, device="cpu",
        model_params={"factors": 4}).fit(data)
    with pytest.raises(sisakit.ValidationError, match=match):
        PotAU(steps=1, attackers=()).unlearn(sisa_like, sisakit.AttributeRequest(**request_kwargs))


def test_pot_au_needs_user_embeddings(data):
    pop = sisakit.models.Popularity().fit(data)
    with pytest.raises(sisakit.ValidationError, match="no user embeddings"):
        PotAU(steps=1, attackers=()).unlearn(
            pop, sisakit.AttributeRequest("gender", labels=data.user_attributes["gender"]))


def test_ncf_learns_forgets_exactly_and_supports_pot_au(data):
    cfg = dict(model="ncf", n_shards=2, n_slices=2, epochs=2, seed=0, progress=False,
               device="cpu", model_params={"factors": 4, "layers": [8], "batch_size": 512})
    train, test = sisakit.split.holdout(data, test_fraction=0.2, seed=0)
    sisa = sisakit.SISA(**cfg).fit(train)
    user = train.user_ids[5]
    sisa.forget(users=[user])
    ref = sisakit.SISA(**cfg).fit(train.without(users=[user]))
    assert parameters_equal(sisa, ref)[0]
    single = sisakit.models.NCF(factors=8, layers=(16,), device="cpu").fit(train, epochs=8)
    one_epoch = sisakit.metrics.evaluate(
        sisakit.models.NCF(factors=8, layers=(16,), device="cpu").fit(train, epochs=1),
        train, test)["ndcg@10"]
    trained = sisakit.metrics.evaluate(single, train, test)["ndcg@10"]
    assert trained > one_epoch
    assert single.user_embeddings().shape == (data.n_users, 16)
    res = PotAU(steps=20, attackers=()).unlearn(
        single, sisakit.AttributeRequest("gender", labels=data.user_attributes["gender"]))
    assert not torch.equal(res.model.user_embeddings(), single.user_embeddings())
    assert torch.equal(res.model.item_embeddings(), single.item_embeddings())


def test_adversarial_baseline_trains_and_hides_some_of_the_attribute(data):
    from sisakit.baselines import AdversarialBPR

    gender = data.user_attributes["gender"]
    plain = AdversarialBPR(factors=16, batch_size=512, adv_weight=0.0, device="cpu").fit(
        data, gender, epochs=10)
    adv = AdversarialBPR(factors=16, batch_size=512, adv_weight=5.0, device="cpu").fit(
        data, gender, epochs=10)
    auc_plain = quick_attacker().evaluate(plain.user_embeddings().numpy(), gender).auc
    auc_adv = quick_attacker().evaluate(adv.user_embeddings().numpy(), gender).auc
    assert auc_adv < auc_plain
    assert adv.scores(np.arange(3)).shape == (3, data.n_items)
    again = AdversarialBPR(factors=16, batch_size=512, adv_weight=5.0, device="cpu").fit(
        data, gender, epochs=10)
    assert torch.equal(again.user_embeddings(), adv.user_embeddings())
    with pytest.raises(sisakit.ValidationError, match="one entry per user"):
        AdversarialBPR(device="cpu").fit(data, gender[:5])


def test_pot_au_report_has_attacks_and_ranking(data):
    train, test = sisakit.split.holdout(data, test_fraction=0.2, seed=0)
    m = sisakit.models.BPRMF(factors=16, batch_size=512, device="cpu").fit(train, epochs=10)
    un = PotAU(steps=30, attackers=("xgboost-attribute",))
    res = un.unlearn(m, sisakit.AttributeRequest("gender", labels=data.user_attributes["gender"]),
                     eval_data=(train, test))
    rep = res.report
    assert set(rep["attack_before"]["xgboost-attribute"]) == {"auc", "accuracy"}
    assert rep["attack_before"]["xgboost-attribute"]["auc"] > rep["attack_after"][
        "xgboost-attribute"]["auc"]
    assert set(rep["ranking_before"]) == {"ndcg@10", "ndcg@20", "hr@10", "hr@20"}
    assert rep["ranking_before"]["ndcg@10"] == pytest.approx(
        sisakit.metrics.evaluate(m, train, test)["ndcg@10"])
    assert rep["seconds"] > 0
