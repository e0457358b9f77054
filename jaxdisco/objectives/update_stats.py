"""Where a loss hands statistics to its method's parameter update (`Method.param_update`).

A loss whose method keeps state that gradients do not train (online codebooks, an EMA teacher)
returns, besides scalar metrics, `metrics[STATS]`: a tree of *sums* over the batch (per-code
feature sums and counts, say). The train step sums it over micro-batches, hands it to the
update after the optimizer step and reports nothing of it; the eval step drops it. Sums, not
means, so that k micro-batches give exactly the statistics of one batch.
"""

STATS = "param_update_stats"
