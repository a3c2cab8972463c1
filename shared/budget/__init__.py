"""The budget layer of admission control: token buckets in Redis, the tree of them a job's path
touches, and the pre-flight estimates that say what a job costs.

    store = BudgetStore(client, keys)
    tree = BudgetTree(settings, keys)
    est = estimate(request, deployment_cfg, tree.provider_kind(name), calibration=calib.ratio(model))
    buckets = tree.buckets_for(deployment=name, lane=lane, tenant=t, feature=f, estimate=est)
    admission = store.try_reserve(f"{job_id}:{attempt}", buckets, ttl_s=tree.reservation_ttl(name))
    ...
    store.settle(rid, tree.settle_costs(deployment=name, lane=lane, tenant=t, feature=f,
                                        reserved=est, used=Estimate(prompt, completion)))
"""

from shared.budget.buckets import Admission, Bucket, BudgetStore, Reservation
from shared.budget.estimate import Calibrator, Estimate, estimate, output_cap, prompt_tokens
from shared.budget.tree import BudgetTree, Fit, Meter

__all__ = [
    "Admission", "Bucket", "BudgetStore", "BudgetTree", "Calibrator", "Estimate", "Fit", "Meter",
    "Reservation", "estimate", "output_cap", "prompt_tokens",
]
