"""Ahead-of-time lowering of the train step at pod scale, on any machine.

The mesh is a `jax.sharding.AbstractMesh` (no devices), the state and batch are
`jax.ShapeDtypeStruct`s carrying shardings, and the step is traced and lowered exactly as the
trainer jits it. A sharding mistake (an uneven split, an axis used twice, a constraint that
cannot hold) fails here rather than on a reserved pod; the layout gives per-device parameter
and optimizer bytes for the memory table (`benchmarks/memory_table.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from flax import linen as nn

from jaxdisco import methods
from jaxdisco.parallel import layout as layout_lib
from jaxdisco.parallel import mesh as mesh_lib
from jaxdisco.parallel import rules as rules_lib
from jaxdisco.train.optimizer import learning_rate_schedule, make_optimizer
from jaxdisco.train.step import jit_steps


@dataclasses.dataclass
class AotResult:
  num_devices: int
  mesh_shape: dict
  layout: layout_lib.Layout
  lowered: Any  # jax.stages.Lowered, or None with lower=False

  @property
  def expected_fsdp_bytes(self) -> float:
    """Parameter bytes per device if everything were split over fsdp alone."""
    return self.layout.param_bytes / self.mesh_shape["fsdp"]


def lower_train_step(
    config,
    num_devices: int,
    *,
    per_device_batch: int = 1,
    lower: bool = True,
    platform: str = "tpu",
) -> AotResult:
  """Lowers the train step of `config`'s method (its `jaxdisco.methods` declaration: model,
  loss, batch fields) on an abstract mesh of `num_devices`.

  `config.parallel` gives the mesh sizes (-1 fills). The batch is `per_device_batch` rows per
  batch-parallel device (per micro-batch) at the config's crop length.
  """
  amesh = mesh_lib.abstract_mesh(config.parallel, num_devices)
  rules = rules_lib.rules_from_config(config.parallel)
  batch_ways = mesh_lib.batch_parallelism(amesh, rules)
  batch_size = batch_ways * per_device_batch * config.train.grad_accum_steps
  config = config.copy_and_resolve_references()
  config.data.batch_size = batch_size  # The config's own batch need not divide a pod's mesh.
  model_config = methods.check_config(config, num_devices)
  method = methods.get_method(config.get("method", "wav2vec2"))
  optimizer = make_optimizer(config.optim, config.train.num_steps, method.frozen_params)
  schedule = learning_rate_schedule(config.optim, config.train.num_steps)
  crop = config.data.crop_samples

  from jaxdisco.train.state import TrainState  # Avoid an import cycle at module load.

  init = method.boxed_init_fn(model_config, config, (1, crop), config.train.seed)
  boxed = jax.eval_shape(lambda: TrainState.create(init(), optimizer, jax.random.key(0)))
  shardings = rules_lib.tree_shardings(boxed, amesh, rules)
  state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      rules_lib.unbox_shapes(boxed),
      shardings,
  )
  layout = layout_lib.state_layout(state, shardings)
  lowered = None
  if lower:
    batch_sharding = rules_lib.batch_sharding(amesh, rules)
    batch = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
        for k, v in method.example_batch(config, batch_size, crop).items()
    }
    loss_fn = method.loss_fn(model_config, config)
    step, _ = jit_steps(
        loss_fn,
        optimizer,
        schedule,
        config.train,
        shardings,
        batch_sharding,
        method.param_update_fn(model_config, config),
    )
    with jax.sharding.use_abstract_mesh(amesh), nn.logical_axis_rules(rules):
      # Lowering for TPU needs no TPU: only compiling does.
      lowered = step.trace(state, batch).lower(lowering_platforms=(platform,))
  return AotResult(num_devices, dict(amesh.shape), layout, lowered)
