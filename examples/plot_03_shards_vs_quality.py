"""
How many shards? Quality against the cost of forgetting
========================================================

More shards make forgetting cheaper (a forget retrains one shard, a smaller share of the data),
but each shard model sees less data, so recommendation quality eventually drops. This example
fits SISA ensembles with S = 1, 2, 4 and 8 shards over three seeds and plots NDCG@10 (mean ±
standard deviation over the seeds) next to the share of the training work a single-user forget
redoes.
"""

# %%
# The sweep
# ---------
# Every ensemble trains each shard in 4 slices (S = 1 is one model on all the data, still sliced).
# The seed changes the shard and slice assignment and the model initialisation; the data split
# stays fixed. After fitting, each ensemble forgets the same user.

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

import sisakit

matplotlib.use("Agg")  # draw off-screen: running this file as a script opens no window

data = sisakit.datasets.synthetic(n_users=1200, n_items=400, seed=0)
train, test = sisakit.split.holdout(data, test_fraction=0.2, seed=0)
user = train.user_ids[0]

shard_counts = [1, 2, 4, 8]
seeds = [0, 1, 2]
ndcg = np.zeros((len(shard_counts), len(seeds)))
work = np.zeros_like(ndcg)
for i, n_shards in enumerate(shard_counts):
    for j, seed in enumerate(seeds):
        model = sisakit.SISA(n_shards=n_shards, n_slices=4, epochs=20, seed=seed, device="cpu",
                             progress=False)
        model.fit(train)
        ndcg[i, j] = sisakit.metrics.evaluate(model, train, test, k=10)["ndcg@10"]
        work[i, j] = model.forget(users=[user]).work_fraction
    print(f"S={n_shards}: NDCG@10 {ndcg[i].mean():.4f} ± {ndcg[i].std():.4f}, "
          f"forget work {work[i].mean():.1%}")

# %%
# The trade-off
# -------------
# The work fraction halves with every doubling of S; it also depends on which slice held the
# user's records, so it varies a little with the seed. Quality is measured on the full ranking of
# the 400 items: it falls slowly at first and then faster, as the shards get small (150 users
# each at S = 8). Where the knee lies depends on the data: see the MovieLens benchmarks in
# :doc:`/sharding` and :doc:`/aggregation` (an aggregator such as ``fold-in`` recovers much of the
# lost quality).

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
ax1.errorbar(shard_counts, ndcg.mean(axis=1), yerr=ndcg.std(axis=1), marker="o", capsize=4)
ax1.set_xscale("log", base=2)
ax1.set_xticks(shard_counts, [str(s) for s in shard_counts])
ax1.set_xlabel("shards S")
ax1.set_ylabel("NDCG@10")
ax1.set_title("Quality (mean ± std over 3 seeds)")
ax1.grid(alpha=0.3)
ax2.errorbar(shard_counts, 100 * work.mean(axis=1), yerr=100 * work.std(axis=1), marker="o",
             capsize=4, color="tab:green")
ax2.set_xscale("log", base=2)
ax2.set_xticks(shard_counts, [str(s) for s in shard_counts])
ax2.set_xlabel("shards S")
ax2.set_ylabel("% of the work of a full fit")
ax2.set_title("Cost of forgetting one user")
ax2.grid(alpha=0.3)
