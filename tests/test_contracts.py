"""Run the public contract suites (:mod:`sisakit.testing`) against every built-in component.

A new built-in sharder, model, aggregator, attacker, unlearner, influence measure or executor must
get a contract class here:
:func:`test_every_builtin_has_a_contract_class` fails until it does.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from typing import ClassVar

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import sisakit
from sisakit import plugins
from sisakit.testing import (
    AggregatorContract,
    AttackerContract,
    ExecutorContract,
    InfluenceContract,
    SharderContract,
    ShardModelContract,
    UnlearnerContract,
    make_attack_data,
    make_interactions,
)

# ---------------------------------------------------------------------------------- built-ins
# Each contract class names the registered component it covers in ``component``.


class TestRandomUserSharder(SharderContract):
    component = ("sharder", "random-user")

    def make_sharder(self):
        return plugins.get("sharder", "random-user")()


class TestRandomInteractionSharder(SharderContract):
    component = ("sharder", "random-interaction")

    def make_sharder(self):
        return plugins.get("sharder", "random-interaction")()


class TestBPRMF(ShardModelContract):
    component = ("model", "bpr-mf")

    def make_model(self):
        return plugins.get("model", "bpr-mf")(factors=8, batch_size=64, device="cpu")


class TestIALS(ShardModelContract):
    component = ("model", "ials")

    def make_model(self):
        return plugins.get("model", "ials")(factors=8, device="cpu")


class TestNCF(ShardModelContract):
    component = ("model", "ncf")

    def make_model(self):
        return plugins.get("model", "ncf")(factors=4, layers=(8,), batch_size=128, device="cpu")


class TestSASRec(ShardModelContract):
    component = ("model", "sasrec")

    def make_model(self):
        return plugins.get("model", "sasrec")(factors=8, n_heads=2, max_len=6, batch_size=16,
                                              device="cpu")


class TestT5Rec(ShardModelContract):
    component = ("model", "t5rec")

    def make_model(self):
        pytest.importorskip("transformers")
        return plugins.get("model", "t5rec")(factors=8, n_blocks=1, n_heads=2, max_len=6,
                                             batch_size=16, device="cpu")


class TestPopularity(ShardModelContract):
    component = ("model", "popularity")

    def make_model(self):
        return plugins.get("model", "popularity")()


class TestMeanAggregator(AggregatorContract):
    component = ("aggregator", "mean")

    def make_aggregator(self):
        return plugins.get("aggregator", "mean")()


class TestWeightedAggregator(AggregatorContract):
    component = ("aggregator", "weighted")

    def make_aggregator(self):
        return plugins.get("aggregator", "weighted")()


# ---------------------------------------------------------------------------------- test doubles
class LogRegAttacker(sisakit.Attacker):
    """A logistic-regression attacker (no built-in attacker exists yet)."""

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(self, features, labels):
        self._clf = LogisticRegression(C=self.C, max_iter=1000).fit(features, labels)
        self.classes_ = self._clf.classes_
        return self

    def predict_proba(self, features):
        return self._clf.predict_proba(features)


class TestLogRegAttacker(AttackerContract):
    def make_attacker(self):
        return LogRegAttacker()


class ShardSizeAggregator(sisakit.Aggregator):
    """A fitted aggregator: weights each shard by its share of the training records.

    Not registered; it exercises :meth:`AggregatorContract.prepare` for ``requires_fit``.
    """

    requires_fit = True

    def __init__(self) -> None:
        self._share: torch.Tensor | None = None

    def fit(self, ensemble, data):
        # The contract fits on popularity shards, whose state counts each shard's records.
        sizes = torch.stack([m.state_dict()["counts"].sum() for m in ensemble.shard_models])
        sizes = sizes.to(torch.float64)
        assert float(sizes.sum()) == len(data)
        self._share = sizes / sizes.sum()
        return self

    def weights(self, counts):
        if self._share is None:
            raise sisakit.ValidationError("fit the aggregator first")
        return (counts > 0).to(torch.float64) * self._share[:, None]

    def state_dict(self):
        return {} if self._share is None else {"share": self._share.clone()}

    def load_state_dict(self, state):
        self._share = state["share"].clone() if "share" in state else None


class TestShardSizeAggregator(AggregatorContract):
    def make_aggregator(self):
        return ShardSizeAggregator()

    def test_prepare_fits(self):
        agg = self.prepare(self.make_aggregator())
        share = agg.state_dict()["share"]
        assert share.shape == (self.n_shards,)
        assert torch.isclose(share.sum(), torch.tensor(1.0, dtype=share.dtype))


class TestXGBoostAttributeAttacker(AttackerContract):
    component = ("attacker", "xgboost-attribute")

    def make_attacker(self):
        return plugins.get("attacker", "xgboost-attribute")()


class TestMLPAttributeAttacker(AttackerContract):
    component = ("attacker", "mlp-attribute")

    def make_attacker(self):
        return plugins.get("attacker", "mlp-attribute")()


class TestSisaUnlearner(UnlearnerContract):
    component = ("unlearner", "sisa")
    config: ClassVar[dict] = dict(n_shards=2, n_slices=2, epochs=2, seed=0, progress=False,
                                  device="cpu", model_params={"factors": 4, "batch_size": 64})

    def data(self):
        return make_interactions(n_users=40, n_items=20, n=300, seed=1)

    def make_unlearner(self):
        return plugins.get("unlearner", "sisa")()

    def make_model(self):
        return sisakit.SISA(**self.config).fit(self.data())

    def make_request(self, model):
        return sisakit.ForgetRequest(users=[self.data().user_ids[3]])

    def reference(self, request):
        return sisakit.SISA(**self.config).fit(self.data().without(users=request.users))


class TestRetrainUnlearner(TestSisaUnlearner):
    """The gold ``retrain`` on a SISA run: the sisa unlearner's tests, and the same bits."""

    component = ("unlearner", "retrain")

    def make_unlearner(self):
        return plugins.get("unlearner", "retrain")()

    def test_input_run_is_left_unchanged(self):
        model = self.make_model()
        before = model.parameters()
        result = self.make_unlearner().unlearn(model, self.make_request(model))
        assert result.model is not model and result.report.method == "retrain"
        assert all(torch.equal(a[k], b[k]) for a, b in zip(before, model.parameters(),
                                                           strict=True) for k in a)
        assert not model.is_forgotten(self.make_request(model).users[0])


class TestRetrainPlainModel(UnlearnerContract):
    """``retrain`` of a plain shard model: trains a clone on ``context.data`` minus the request."""

    def make_unlearner(self):
        return plugins.get("unlearner", "retrain")()

    def make_model(self):
        self._data = make_interactions(n_users=40, n_items=20, n=300, seed=2)
        return sisakit.models.BPRMF(factors=4, device="cpu").fit(self._data, epochs=2)

    def make_request(self, model):
        return sisakit.ForgetRequest(users=[self._data.user_ids[5]])

    def make_context(self, model):
        return sisakit.UnlearnContext(data=self._data, epochs=2, seed=0)

    def test_result_is_a_fresh_fit_without_the_user(self):
        model = self.make_model()
        request = self.make_request(model)
        a = self.make_unlearner().unlearn(model, request, context=self.make_context(model))
        b = self.make_unlearner().unlearn(model, request, context=self.make_context(model))
        assert all(torch.equal(a.model.state_dict()[k], b.model.state_dict()[k])
                   for k in a.model.state_dict())  # deterministic for a seed
        assert a.report.exact and a.report["records_left"] == len(
            self._data.without(users=request.users))

    def test_needs_data_and_epochs(self):
        model = self.make_model()
        with pytest.raises(sisakit.ValidationError, match="UnlearnContext"):
            self.make_unlearner().unlearn(model, self.make_request(model))


class TestFineTuneUnlearner(UnlearnerContract):
    component = ("unlearner", "finetune")

    def make_unlearner(self):
        return plugins.get("unlearner", "finetune")(epochs=1)

    def make_model(self):
        self._data = make_interactions(n_users=40, n_items=20, n=300, seed=3)
        return sisakit.models.BPRMF(factors=4, device="cpu").fit(self._data, epochs=2)

    def make_request(self, model):
        return sisakit.ForgetRequest(users=[self._data.user_ids[4]])

    def make_context(self, model):
        return sisakit.UnlearnContext(data=self._data, seed=0)

    def test_trains_on_the_retained_data_only_and_is_deterministic(self):
        model = self.make_model()
        request, ctx = self.make_request(model), self.make_context(model)
        a = self.make_unlearner().unlearn(model, request, context=ctx)
        b = self.make_unlearner().unlearn(model, request, context=ctx)
        assert all(torch.equal(a.model.state_dict()[k], b.model.state_dict()[k])
                   for k in a.model.state_dict())
        assert any(not torch.equal(a.model.state_dict()[k], model.state_dict()[k])
                   for k in a.model.state_dict()), "finetune must change the model"
        retain = self._data.without(users=request.users)
        assert a.report["retained_records"] == len(retain)
        assert a.report.removed == {"records": len(self._data) - len(retain)}

    def test_refuses_unsupported_models_and_missing_data(self):
        model = self.make_model()
        with pytest.raises(sisakit.ValidationError, match="UnlearnContext"):
            self.make_unlearner().unlearn(model, self.make_request(model))
        run = sisakit.SISA(**TestSisaUnlearner.config).fit(self._data)
        with pytest.raises(sisakit.ValidationError, match="bpr-mf, ials, ncf"):
            self.make_unlearner().unlearn(run, self.make_request(model),
                                          context=self.make_context(model))


class TestPotAUContract(UnlearnerContract):
    component = ("unlearner", "pot-au")
    cfg: ClassVar[dict] = {"factors": 8, "batch_size": 256, "device": "cpu"}

    def make_unlearner(self):
        return plugins.get("unlearner", "pot-au")(steps=5, attackers=())

    def make_model(self):
        d = sisakit.datasets.synthetic(n_users=120, n_items=40, seed=4)
        self._labels = d.user_attributes["gender"]
        return sisakit.models.BPRMF(**self.cfg).fit(d, epochs=2)

    def make_request(self, model):
        return sisakit.AttributeRequest("gender", labels=self._labels)


class TestDualMemoryContract(UnlearnerContract):
    component = ("unlearner", "dual-memory")

    def make_unlearner(self):
        return plugins.get("unlearner", "dual-memory")(epochs=2, router_epochs=5, progress=False)

    def make_model(self):
        d = sisakit.datasets.synthetic(n_users=60, n_items=30, seed=4)
        model = sisakit.models.SASRec(factors=8, max_len=6, device="cpu").fit(d, epochs=1)
        model.data = d  # dual-memory reads the training data from ``model.data`` if not given
        return model

    def make_request(self, model):
        return sisakit.ForgetRequest(users=[model.data.user_ids[3]])


def _with_group(data):
    """Attach a seeded 3-valued user attribute ``group`` (for attribute-stratified)."""
    labels = np.random.default_rng(7).integers(0, 3, data.n_users)
    return data.with_user_attributes(data.user_ids, group=labels)


class TestActivityStratifiedSharder(SharderContract):
    component = ("sharder", "activity-stratified")

    def make_sharder(self):
        return plugins.get("sharder", "activity-stratified")(n_bins=3)


class TestAttributeStratifiedSharder(SharderContract):
    component = ("sharder", "attribute-stratified")

    def make_sharder(self):
        return plugins.get("sharder", "attribute-stratified")(attribute="group")

    def make_data(self):
        return _with_group(make_interactions())

    def make_string_data(self):
        return _with_group(make_interactions(str_ids=True))


_RECERASER: dict = {"model_params": {"factors": 8, "batch_size": 256, "device": "cpu"},
                    "epochs": 2, "max_iter": 5}


class TestRecEraserUserSharder(SharderContract):
    component = ("sharder", "receraser-user")

    def make_sharder(self):
        return plugins.get("sharder", "receraser-user")(**_RECERASER)


class TestRecEraserItemSharder(SharderContract):
    component = ("sharder", "receraser-item")

    def make_sharder(self):
        return plugins.get("sharder", "receraser-item")(**_RECERASER)


class TestRecEraserInteractionSharder(SharderContract):
    component = ("sharder", "receraser-interaction")

    def make_sharder(self):
        return plugins.get("sharder", "receraser-interaction")(**_RECERASER)


class TestClassDominantSharder(SharderContract):
    component = ("sharder", "class-dominant")

    def make_sharder(self):
        return plugins.get("sharder", "class-dominant")(leakage="high", leak_fraction=0.2)


class TestClassDominantLowSharder(TestClassDominantSharder):
    def make_sharder(self):
        return plugins.get("sharder", "class-dominant")(leakage="low", leak_fraction=0.2)


class TestMLPClassifier(ShardModelContract):
    component = ("model", "mlp-classifier")

    def make_model(self):
        return plugins.get("model", "mlp-classifier")(hidden=(8,), batch_size=16, device="cpu")

    def make_data(self):
        # Labelled samples: user = sample, item = class, features attached per sample.
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 3, 60)
        features = rng.normal(size=(60, 6)) + labels[:, None]
        return sisakit.classification.from_samples(features, labels, sample_ids=100 + np.arange(60))


class TestWeightedValidationAggregator(AggregatorContract):
    component = ("aggregator", "weighted")

    def make_aggregator(self):
        return plugins.get("aggregator", "weighted")(by="validation", validation_fraction=0.2)


class TestAttentionAggregator(AggregatorContract):
    """Score mode: the contract's ensemble has popularity shards (no embeddings)."""

    component = ("aggregator", "attention")

    def make_aggregator(self):
        return plugins.get("aggregator", "attention")(epochs=2, batch_size=256, device="cpu")

    def test_prepare_used_score_mode(self):
        assert not self.prepare(self.make_aggregator()).uses_embeddings


class _EmbeddingEnsembleContract(AggregatorContract):
    """Fits on bpr-mf shards (embedding aggregators) and passes the batch's user indices."""

    def prepare(self, aggregator):
        data = self.make_data()
        ensemble = sisakit.SISA(model="bpr-mf", n_shards=self.n_shards, n_slices=1, epochs=2,
                                sharder="random-interaction", seed=0, progress=False, device="cpu",
                                model_params={"factors": 4, "batch_size": 128})
        return aggregator.fit(ensemble.fit(data), data)

    def _aggregate(self, agg, scores, mask, counts):
        return agg.aggregate(scores, mask, counts, user_idx=torch.arange(scores.shape[1]))


class TestAttentionAggregatorEmbeddings(_EmbeddingEnsembleContract):
    """Embedding mode scores with its own learned embeddings, not a mean of the shard scores, so
    the identical-shards property is replaced by: the output is that learned dot product."""

    component = ("aggregator", "attention")

    def make_aggregator(self):
        return plugins.get("aggregator", "attention")(dim=4, epochs=2, batch_size=256,
                                                      device="cpu")

    def test_identical_shards_give_their_scores(self):
        agg = self.prepare(self.make_aggregator())
        assert agg.uses_embeddings
        scores, mask, counts = self._inputs(5)
        out, scored = self._aggregate(agg, scores[:1].expand_as(scores), mask, counts)
        st = agg.state_dict()
        expected = (st["user_emb"][: self.batch] @ st["item_emb"].T).to(out.dtype)
        assert torch.equal(out, expected) and bool(scored.any())


class TestProtoAggregator(_EmbeddingEnsembleContract):
    """Proto adds a per-shard correction, so identical shard scores give their scores only with
    ``shrinkage=0`` (no shrinkage: the mean)."""

    component = ("aggregator", "proto")

    def make_aggregator(self):
        return plugins.get("aggregator", "proto")(n_prototypes=3, device="cpu")

    def test_identical_shards_give_their_scores(self):
        original = self.make_aggregator
        self.make_aggregator = lambda: original().clone(shrinkage=0.0)
        try:
            super().test_identical_shards_give_their_scores()
        finally:
            del self.make_aggregator


class TestFoldInAggregator(_EmbeddingEnsembleContract):
    """Fold-in scores from the shards' item factors and the user's own history, never from the
    stacked shard scores, so the identical-shards property is replaced by: the stacked scores
    have no influence at all."""

    component = ("aggregator", "fold-in")

    def make_aggregator(self):
        return plugins.get("aggregator", "fold-in")(batch_size=4)

    def test_scored_only_where_some_shard_scored(self):
        """Replaced: fold-in lets every shard score every user from the user's own history, so a
        pair is scored exactly where the user has history and some shard trained on the item."""
        agg = self.prepare(self.make_aggregator())
        scores, mask, counts = self._inputs(1)
        _, scored = self._aggregate(agg, scores, mask, counts)
        st = agg.state_dict()
        has = (st["indptr"][1:] - st["indptr"][:-1])[: self.batch] > 0
        assert torch.equal(scored, has[:, None] & st["seen"].any(0)[None, :])

    def test_identical_shards_give_their_scores(self):
        agg = self.prepare(self.make_aggregator())
        scores, mask, counts = self._inputs(5)
        out1, sc1 = self._aggregate(agg, scores, mask, counts)
        out2, sc2 = self._aggregate(agg, scores[:1].expand_as(scores), mask, counts)
        assert bool(sc1.any()) and torch.equal(sc1, sc2) and torch.equal(out1, out2)


class TestMembershipAttacker(AttackerContract):
    component = ("attacker", "membership")

    def make_attacker(self):
        return plugins.get("attacker", "membership")()


class TestInteractionMembershipAttacker(AttackerContract):
    component = ("attacker", "membership-interaction")

    def make_attacker(self):
        return plugins.get("attacker", "membership-interaction")()


class TestJaccardInfluence(InfluenceContract):
    component = ("influence", "jaccard")

    def make_measure(self):
        return plugins.get("influence", "jaccard")()


class TestRankChangeInfluence(InfluenceContract):
    component = ("influence", "rank-change")

    def make_measure(self):
        return plugins.get("influence", "rank-change")()


class TestNDCGDeltaInfluence(InfluenceContract):
    component = ("influence", "ndcg-delta")

    def make_measure(self):
        return plugins.get("influence", "ndcg-delta")()


class TestSerialExecutor(ExecutorContract):
    component = ("executor", "serial")

    def make_executor(self):
        return plugins.get("executor", "serial")()


class TestJoblibExecutor(ExecutorContract):
    component = ("executor", "joblib")

    def make_executor(self):
        return plugins.get("executor", "joblib")(n_jobs=2)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
class TestRayExecutor(ExecutorContract):
    component = ("executor", "ray")

    def make_executor(self):
        return plugins.get("executor", "ray")(num_cpus=2)


# ---------------------------------------------------------------------------------- registry
ALL_COMPONENTS = [(kind, name) for kind in plugins.KINDS for name in plugins.names(kind)]
BASES = {
    "sharder": sisakit.Sharder,
    "model": sisakit.ShardModel,
    "aggregator": sisakit.Aggregator,
    "unlearner": sisakit.Unlearner,
    "attacker": sisakit.Attacker,
    "influence": sisakit.InfluenceMeasure,
    "executor": sisakit.Executor,
}
CONTRACT_KINDS = {
    SharderContract: "sharder",
    ShardModelContract: "model",
    AggregatorContract: "aggregator",
    AttackerContract: "attacker",
    UnlearnerContract: "unlearner",
    InfluenceContract: "influence",
    ExecutorContract: "executor",
}


@pytest.mark.parametrize(("kind", "name"), ALL_COMPONENTS,
                         ids=[f"{k}:{n}" for k, n in ALL_COMPONENTS])
def test_registered_component_builds_with_defaults(kind, name):
    assert set(BASES) == set(plugins.KINDS)
    cls = plugins.get(kind, name)
    obj = cls()
    assert isinstance(obj, BASES[kind])
    assert plugins.name_of(kind, obj) == name
    assert isinstance(plugins.build(kind, name), cls)


def _contract_classes():
    found = {}
    for obj in globals().values():
        if isinstance(obj, type) and hasattr(obj, "component"):
            for base, kind in CONTRACT_KINDS.items():
                if issubclass(obj, base):
                    assert obj.component[0] == kind, f"{obj.__name__} covers a {kind}"
                    found[obj.component] = obj
    return found


def test_every_builtin_has_a_contract_class():
    covered = _contract_classes()
    builtins = [
        (reg.kind, reg.name)
        for reg in plugins.list_components()
        if reg.plugin.startswith("sisakit:") and reg.kind in CONTRACT_KINDS.values()
    ]
    assert ("sharder", "random-user") in builtins  # the check itself sees the built-ins
    missing = sorted(set(builtins) - set(covered))
    assert not missing, (
        f"built-in components without a contract test class in {__file__}: {missing}"
    )


@pytest.mark.parametrize("component", sorted(_contract_classes()), ids=str)
def test_contract_class_builds_its_component(component):
    cls = _contract_classes()[component]
    factory = next(getattr(cls(), m) for m in ("make_unlearner", "make_sharder", "make_model",
                                               "make_aggregator", "make_attacker",
                                               "make_measure", "make_executor")
                   if hasattr(cls, m))
    assert type(factory()) is plugins.get(*component)


# ---------------------------------------------------------------------------------- helpers
def test_make_interactions_is_seeded_and_well_formed():
    a = make_interactions()
    b = make_interactions()
    assert (len(a), a.n_users, a.n_items) == (800, 60, 40)
    assert np.array_equal(a.user_idx, b.user_idx) and np.array_equal(a.item_idx, b.item_idx)
    assert (a.user_counts() > 0).all()
    keys = a.user_idx * a.n_items + a.item_idx
    assert len(np.unique(keys)) == len(a)
    c = make_interactions(seed=1)
    assert not np.array_equal(a.item_idx, c.item_idx)
    s = make_interactions(n_users=5, n_items=4, n=20, str_ids=True)
    assert len(s) == 20 and s.user_ids.dtype.kind == "U"
    with pytest.raises(sisakit.ValidationError):
        make_interactions(n_users=5, n_items=4, n=21)


def test_make_attack_data_plants_signal():
    x, y, xt, _ = make_attack_data()
    assert x.shape == (400, 8) and xt.shape == (400, 8)
    assert set(np.unique(y)) == {0, 1}
    gap = x[y == 1, :4].mean() - x[y == 0, :4].mean()
    noise = x[y == 1, 4:].mean() - x[y == 0, 4:].mean()
    assert gap > 0.7 and abs(noise) < 0.2


class _BrokenSharder(sisakit.Sharder):
    """Assigns by position: breaks stability under deletion."""

    unit = "record"

    def __init__(self) -> None:
        pass

    def assign(self, data, n_shards, *, seed):
        self._check(data, n_shards)
        return np.arange(len(data), dtype=np.int64) % n_shards


def test_sharder_contract_catches_positional_sharder():
    contract = SharderContract()
    contract.make_sharder = _BrokenSharder
    contract.test_ids_in_range_one_per_record()  # valid ids...
    with pytest.raises(AssertionError, match="changed shard"):
        contract.test_stable_when_users_deleted()  # ...but not stable


def test_importing_sisakit_does_not_import_pytest():
    code = ("import sys, sisakit; "
            "assert 'pytest' not in sys.modules, 'pytest imported'; "
            "assert 'sisakit.testing' not in sys.modules, 'sisakit.testing imported'")
    env = {**os.environ, "SISAKIT_DISABLE_PLUGINS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
