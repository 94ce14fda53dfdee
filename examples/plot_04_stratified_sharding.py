"""
Random or activity-stratified sharding: who pays for sharding?
==============================================================

``random-user`` sharding puts each user in a random shard, so by chance a shard may get more or
fewer heavy users than another. ``activity-stratified`` deals users out by activity, so every
shard gets the same mix of light and heavy users. This example compares the two with
:func:`sisakit.fairness.group_metrics`: NDCG@10 per activity quartile (``q1`` = the least active
users) and per shard (:func:`sisakit.fairness.per_shard_metrics`).
"""

# %%
# Fit both ensembles
# ------------------
# Same data, seed, model and aggregator; only the sharder differs.

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

import sisakit
from sisakit import fairness

matplotlib.use("Agg")  # draw off-screen: running this file as a script opens no window

data = sisakit.datasets.synthetic(n_users=2000, n_items=500, seed=0)
train, test = sisakit.split.holdout(data, test_fraction=0.2, seed=0)

sharders = ["random-user", "activity-stratified"]
groups, shards = {}, {}
for sharder in sharders:
    model = sisakit.SISA(sharder=sharder, n_shards=8, n_slices=2, epochs=20, seed=0, device="cpu",
                         progress=False)
    model.fit(train)
    groups[sharder] = fairness.group_metrics(model, train, test, by="activity", k=10, n_groups=4)
    shards[sharder] = fairness.per_shard_metrics(model, train, test, k=10)
    print(f"{sharder:>20}: NDCG@10 {groups[sharder].overall['ndcg@10']:.4f}")

# %%
# Per activity group
# ------------------
# Heavy users have more test items, so their NDCG@10 is higher under either sharder; what matters
# is how each group fares under the two sharders. (With data and models this small, expect
# differences of a few thousandths to a hundredth, and check them over several seeds before
# reading much into them.)

labels = groups[sharders[0]].groups.tolist()
for sharder in sharders:
    values = groups[sharder].values["ndcg@10"]
    print(f"{sharder:>20}: " + ", ".join(f"{g} {v:.4f}" for g, v in zip(labels, values,
                                                                          strict=True)))

# %%
# Per shard
# ---------
# :func:`~sisakit.fairness.per_shard_metrics` gives NDCG@10 per (shard, activity group) and the
# number of users behind each value. The counts show what stratification does: every shard gets
# nearly the same number of users of each activity group, where random sharding lets the mix
# drift from shard to shard.

per_shard = {}
for sharder in sharders:
    m = shards[sharder]
    per_shard[sharder] = np.nansum(m.values * m.n_users, axis=1) / m.n_users.sum(axis=1)
    print(f"{sharder:>20}: NDCG@10 per shard {np.round(per_shard[sharder], 3).tolist()}")
    print(f"{'':>20}  users per shard and group (q1..q4):\n{m.n_users}")

# %%
# The figure
# ----------

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
x = np.arange(len(labels))
width = 0.38
for i, sharder in enumerate(sharders):
    ax1.bar(x + (i - 0.5) * width, groups[sharder].values["ndcg@10"], width, label=sharder)
ax1.set_xticks(x, [f"{g}\n({n} users)" for g, n in zip(labels, groups[sharders[0]].n_users,
                                                          strict=True)])
ax1.set_xlabel("activity quartile (q1 = least active)")
ax1.set_ylabel("NDCG@10")
ax1.set_title("Quality per activity group")
ax1.legend()
ax1.grid(alpha=0.3, axis="y")
for i, sharder in enumerate(sharders):
    q1_users = shards[sharder].n_users[:, 0]
    ax2.bar(np.arange(len(q1_users)) + (i - 0.5) * width, q1_users, width, label=sharder)
ax2.set_xlabel("shard")
ax2.set_ylabel("users of q1 (least active)")
ax2.set_title("Least active users per shard")
ax2.legend(loc="lower right")
