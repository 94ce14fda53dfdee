"""
Audit forgetting with membership inference
==========================================

Can an attacker still tell that a forgotten user was in the training data? The user-level
membership-inference attack of :mod:`sisakit.membership` (Zhang et al., CCS 2021) compares a
user's history with the recommendations served to them; a shadow model trained by the attacker
on other users teaches it what members look like. :func:`sisakit.membership.unlearning_audit`
attacks the forgotten users three times: on the original model, after forgetting them, and on a
model retrained from scratch without them (the "gold" standard).
"""

# %%
# Run the audit
# -------------
# The users are split into four activity-matched groups: target members and non-members, shadow
# members and non-members. 150 target members are forgotten; the target non-members serve as
# the negatives throughout. The model is given as :class:`sisakit.SISA` arguments: the audit
# fits the target, shadow and gold models itself.

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

import sisakit
from sisakit import membership

matplotlib.use("Agg")  # draw off-screen: running this file as a script opens no window

data = sisakit.datasets.synthetic(n_users=2000, n_items=500, seed=0)
config = dict(n_shards=4, n_slices=2, epochs=20, seed=0, device="cpu", progress=False)
audit = membership.unlearning_audit(data, config, n_forget=150, seed=0)

print("split:", audit.details["split"])
print(f"attack AUC on the shadow model's users: {audit.details['shadow_auc']:.3f}")
for name, result in audit.results.items():
    print(f"{name:>9}: AUC {result.auc:.3f}, accuracy {result.accuracy:.3f}, "
          f"advantage {result.advantage:+.3f}")
print("unlearned features identical to gold:", audit.identical)

# %%
# Reading the result
# ------------------
# Before forgetting, the attack recognises the users as members (AUC well above 0.5). After the
# forget, SISA serves them what it serves any user it has no data about, and the attack does no
# better than on the gold model: exact unlearning gives *identical* features, so the two AUCs are
# equal, not merely close. The forgotten users and the non-members now get the same popularity
# lists, so what is left above 0.5 comes from their histories alone (a finite sample of users
# who never were in the model): it is the attack's noise level, not a leak.

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
names = list(audit.results)
ax1.bar(names, [audit.results[n].auc for n in names],
        color=["tab:red", "tab:green", "tab:gray"])
ax1.axhline(0.5, color="black", linestyle="--", linewidth=1, label="chance")
ax1.set_ylim(0, 1)
ax1.set_ylabel("attack AUC on the forgotten users")
ax1.set_title("Membership inference before and after forgetting")
ax1.legend(loc="lower right")
bins = np.linspace(0, 1, 21)
for name, color in (("original", "tab:red"), ("unlearned", "tab:green")):
    ax2.hist(audit.member_probability[name], bins=bins, alpha=0.6, color=color, label=name)
ax2.set_xlabel("attack's member probability")
ax2.set_ylabel("forgotten users")
ax2.set_title("The forgotten users, as the attacker sees them")
ax2.legend()
