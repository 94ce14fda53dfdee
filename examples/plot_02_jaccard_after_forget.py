"""
Forget a user and measure how recommendations changed
=====================================================

Exact unlearning removes a user's data, but whose recommendations does that change? Keep a copy
of the ensemble before the forget (:meth:`sisakit.SISA.copy`) and compare every user's top-10
list before and after with :func:`sisakit.influence.compare`: Jaccard@10 is 1 when a list kept
the same items and 0 when it kept none.
"""

# %%
# Fit, keep a copy, forget
# ------------------------
# We forget the most active user, whose data weighs most on the shard that held it.

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

import sisakit
from sisakit import influence

matplotlib.use("Agg")  # draw off-screen: running this file as a script opens no window

data = sisakit.datasets.synthetic(n_users=2000, n_items=500, seed=0)
train, test = sisakit.split.holdout(data, test_fraction=0.2, seed=0)
model = sisakit.SISA(n_shards=5, n_slices=4, epochs=20, seed=0, device="cpu", progress=False)
model.fit(train)

before = model.copy()  # an independent run in a temporary directory
user = train.user_ids[np.argmax(train.user_counts())]
report = model.forget(users=[user])
print(f"forgot user {user} ({report.records_removed} records); retrained shard(s) "
      f"{report.shards_retrained}")

# %%
# Compare the top-10 lists
# ------------------------
# By default every user of the training data is compared, the forgotten one included (it now
# gets the popularity fallback).

res = influence.compare(before, model, k=10)
summary = res.summary()
print(f"mean Jaccard@10: {res.jaccard.mean():.3f}")
print(f"users whose list changed at all: {summary['fraction_changed']:.1%}")
print(f"users with Jaccard@10 < 0.5: {summary['fraction_below_jaccard_threshold']:.1%}")
print(f"the forgotten user's Jaccard@10: {res.jaccard[res.users == user][0]:.2f}")

# %%
# Who changed?
# ------------
# The ``mean`` aggregator averages the scores of the shards that trained on a user; with
# ``random-user`` sharding that is a single shard. So only the users who shared the retrained
# shard with the forgotten user can see different lists: everyone else keeps theirs exactly.

shard_of_user = before.shard_counts()[0].numpy().argmax(axis=0)  # one shard per user
user_idx = train.user_map.index(res.users, "user")
others = res.users != user
same_shard = others & np.isin(shard_of_user[user_idx], report.shards_retrained)
other_shards = others & ~same_shard
for label, mask in (("in the retrained shard", same_shard), ("in other shards", other_shards)):
    print(f"{label:>24}: {mask.sum():4d} users, mean Jaccard@10 {res.jaccard[mask].mean():.3f}, "
          f"changed {res.changed[mask].mean():.1%}")

# %%
# The distribution
# ----------------
# A Jaccard@10 can only take the values ``h / (20 - h)`` for ``h`` shared items, so the bins
# are centred on them.

k = res.k
overlaps = np.arange(k + 1)
possible = overlaps / (2.0 * k - overlaps)
edges = np.concatenate(([-0.01], (possible[1:] + possible[:-1]) / 2, [1.01]))
fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
ax.hist([res.jaccard[same_shard], res.jaccard[other_shards]], bins=edges, stacked=True,
        label=["users in the retrained shard", "users in other shards"])
ax.set_yscale("log")
ax.set_xlabel("Jaccard@10 of the top-10 lists before / after the forget")
ax.set_ylabel("users")
ax.set_title("Forgetting one user changes only the lists of its shard")
ax.legend()
