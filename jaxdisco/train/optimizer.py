"""AdamW with the reference's warm-up + polynomial decay schedule and optional clipping."""

from __future__ import annotations

import jax
import optax


def learning_rate_schedule(optim, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to `lr` over `warmup_steps`, then polynomial decay (power
  `decay_power`, 1 = linear) to `end_lr` at `total_steps` (fairseq's polynomial_decay)."""
  warmup = optax.linear_schedule(0.0, optim.lr, max(optim.warmup_steps, 1))
  decay = optax.polynomial_schedule(
      optim.lr, optim.end_lr, optim.decay_power, max(total_steps - optim.warmup_steps, 1)
  )
  return optax.join_schedules([warmup, decay], [optim.warmup_steps])


def make_optimizer(
    optim, total_steps: int, frozen: tuple[str, ...] = ()
) -> optax.GradientTransformation:
  """AdamW (after optional clipping) on every parameter but the top-level ones named in
  `frozen` (a method's `frozen_params`), which get zero updates and keep no optimizer state.
  Without frozen parameters the optimizer state is the plain chain's (older checkpoints)."""
  schedule = learning_rate_schedule(optim, total_steps)
  chain = []
  if optim.clip_norm > 0:
    chain.append(optax.clip_by_global_norm(optim.clip_norm))
  chain.append(
      optax.adamw(
          schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay
      )
  )
  trained = optax.chain(*chain)
  if not frozen:
    return trained
  frozen = frozenset(frozen)

  def labels(params):
    # {'params': {top-level name: subtree}}: each leaf labelled by its top-level name.
    return {
        collection: {
            name: jax.tree.map(lambda _, n=name: "frozen" if n in frozen else "trained", tree)
            for name, tree in top.items()
        }
        for collection, top in params.items()
    }

  return optax.multi_transform({"trained": trained, "frozen": optax.set_to_zero()}, labels)
