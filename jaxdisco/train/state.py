"""Training state: everything a resumed run needs besides the data iterator position, and its
creation directly in its sharded layout."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct

from jaxdisco.parallel import rules as rules_lib


@struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: number of updates applied (skipped non-finite ones excluded)
  params: Any
  opt_state: Any
  rng: jax.Array  # uint32[2] raw key data, so it checkpoints as a plain array
  nonfinite_in_a_row: jax.Array  # int32 scalar
  nonfinite_total: jax.Array  # int32 scalar

  @classmethod
  def create(cls, params, optimizer, seed_key: jax.Array) -> "TrainState":
    return cls(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        rng=jax.random.key_data(seed_key),
        nonfinite_in_a_row=jnp.zeros((), jnp.int32),
        nonfinite_total=jnp.zeros((), jnp.int32),
    )


def sharded_state_factory(
    init_boxed: Callable[[], Any], optimizer, seed_key_fn, mesh, rules
) -> tuple[Callable[[], TrainState], TrainState, TrainState]:
  """(create, abstract state, shardings) for a state that is born sharded.

  `init_boxed()` returns {'params': ...} with logically partitioned (boxed) leaves. The
  optimizer state mirrors the boxes (optax maps over them), so one `nn.get_partition_spec`
  covers params and optimizer moments alike. `create()` runs under jit with those
  out_shardings: no device ever holds the whole unsharded state.
  """
  build = lambda: TrainState.create(init_boxed(), optimizer, seed_key_fn())
  boxed = jax.eval_shape(build)
  shardings = rules_lib.tree_shardings(boxed, mesh, rules)
  abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      rules_lib.unbox_shapes(boxed),
      shardings,
  )
  create = jax.jit(lambda: nn.meta.unbox(build()), out_shardings=shardings)
  return create, abstract, shardings


def run_state_factory(config, method, model_config, mesh, rules):
  """(optimizer, schedule, create, abstract state, shardings) of a run of `config`: what the
  trainer trains and `parallel.plan` compiles, from one place so that the two cannot drift
  (same init shapes, seeds, optimizer). Call under `jax.set_mesh(mesh)` and the rules."""
  # pylint: disable-next=g-import-not-at-top
  from jaxdisco.train.optimizer import learning_rate_schedule, make_optimizer

  data, train = config.data, config.train
  optimizer = make_optimizer(config.optim, train.num_steps, method.frozen_params)
  schedule = learning_rate_schedule(config.optim, train.num_steps)
  create, abstract, sharding = sharded_state_factory(
      method.boxed_init_fn(model_config, config, (data.batch_size, data.crop_samples), train.seed),
      optimizer,
      lambda: jax.random.key(train.seed + 2),
      mesh,
      rules,
  )
  return optimizer, schedule, create, abstract, sharding
