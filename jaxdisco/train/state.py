"""Training state: everything a resumed run needs besides the data iterator position."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


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
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
               rng=jax.random.key_data(seed_key), nonfinite_in_a_row=jnp.zeros((), jnp.int32),
               nonfinite_total=jnp.zeros((), jnp.int32))
