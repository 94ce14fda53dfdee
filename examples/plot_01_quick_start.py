"""
Quick start: fit, recommend, forget, check
==========================================

Train a SISA ensemble on the built-in synthetic data, recommend, forget one user and check the
promise of exact unlearning: after :meth:`~sisakit.SISA.forget`, every shard's parameters equal,
bit for bit, those of an ensemble trained from scratch without the user
(:func:`sisakit.sisa.parameters_equal`).
"""

# %%
# Data
# ----
# :func:`sisakit.datasets.synthetic` draws seeded interactions with latent-factor structure (no
# download); :func:`sisakit.split.holdout` keeps 20 % of every user's records for testing.

import time

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

import sisakit
from sisakit.sisa import parameters_equal

matplotlib.use("Agg")  # draw off-screen: running this file as a script opens no window

data = sisakit.datasets.synthetic(n_users=2000, n_items=500, seed=0)
train, test = sisakit.split.holdout(data, test_fraction=0.2, seed=0)
print(f"{train.n_users} users, {train.n_items} items, {len(train)} training records")

# %%
# Fit
# ---
# Five shards, each trained in four slices with a checkpoint after every slice. Without a
# ``workdir`` the run lives in a temporary directory that is removed with the object.
# ``device="cpu"``: models this small train fastest on the CPU.

config = dict(model="bpr-mf", sharder="random-user", aggregator="mean", n_shards=5, n_slices=4,
              epochs=20, seed=0, device="cpu", progress=False)
model = sisakit.SISA(**config)
t0 = time.perf_counter()
model.fit(train)
fit_seconds = time.perf_counter() - t0
print(model)
print(f"fit: {fit_seconds:.2f} s")
quality = sisakit.metrics.evaluate(model, train, test, k=(10, 20))
print({name: round(value, 4) for name, value in quality.items()})

# %%
# Recommend
# ---------
# Top-K lists for raw user ids, best first; a user's training items are left out.

print(model.recommend(train.user_ids[:3], k=10))

# %%
# Forget
# ------
# Forget one user. Only the shard holding the user is retrained, from the checkpoint taken before
# the user's slice; the report says what that cost.

user = train.user_ids[0]
records_per_shard = model.shard_counts()[0].sum(dim=1).numpy()
report = model.forget(users=[user])
print(f"forgot user {user}: {report.records_removed} records, shards retrained "
      f"{report.shards_retrained}, {report.slices_retrained} slice(s), "
      f"{report.work_fraction:.1%} of the work of a full fit, {report.seconds:.2f} s")
print("forgotten:", model.is_forgotten(user))

# %%
# Check exactness
# ---------------
# Train the same configuration from scratch on ``train.without(users=[user])`` and compare every
# tensor of every shard.

t0 = time.perf_counter()
scratch = sisakit.SISA(**config).fit(train.without(users=[user]))
scratch_seconds = time.perf_counter() - t0
equal, n_tensors = parameters_equal(model, scratch)
print(f"bit-identical to the scratch fit: {equal} ({n_tensors} tensors compared)")
assert equal
assert np.array_equal(model.recommend(train.user_ids[:50], k=10),
                      scratch.recommend(train.user_ids[:50], k=10))

# %%
# What it cost
# ------------
# The forget retrained one shard of five, starting from the user's slice; a scratch fit trains
# every shard from the start. (On data this small fixed costs dominate the wall time; the work
# fraction is the better guide to the saving on real data.)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
ax1.bar(["forget 1 user", "retrain from scratch"], [report.seconds, scratch_seconds],
        color=["tab:green", "tab:gray"])
ax1.set_ylabel("seconds")
ax1.set_title(f"Forget: {report.work_fraction:.0%} of the training work")
colors = ["tab:green" if s in report.shards_retrained else "tab:blue"
          for s in range(model.n_shards)]
ax2.bar(np.arange(model.n_shards), records_per_shard, color=colors)
ax2.set_xlabel("shard")
ax2.set_ylabel("training records")
ax2.set_title("The retrained shard (green)")
