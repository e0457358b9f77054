"""The jitted train and eval steps (method-agnostic: the loss function is a parameter)."""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from jaxdisco.models.transformer import remat_policy
from jaxdisco.objectives.update_stats import STATS
from jaxdisco.train.state import TrainState

# loss_fn(params, batch, key, step, train) -> (loss, metrics dict of scalars)
LossFn = Callable

# The metric that weights micro-batches when gradients are accumulated: a loss normalised by
# masked frames is averaged over micro-batches weighted by their masked frames, as fairseq's
# update_freq does, so for losses that are sums over frames k micro-batches equal one batch.
WEIGHT_METRIC = "masked_frames"


def _all_finite(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _split_micro_batches(batch, k: int, sharding: Optional[NamedSharding]):
  """[B, ...] -> [k, B/k, ...], micro-batch j = rows j, j+k, j+2k, ...

  Strided rather than contiguous: each device's rows are split k ways, so every micro-batch
  stays spread over all devices and no data moves between them.
  """

  def split(x):
    y = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
    if sharding is not None:
      spec = PartitionSpec(None, *sharding.spec)
      y = jax.lax.with_sharding_constraint(y, NamedSharding(sharding.mesh, spec))
    return y

  return jax.tree.map(split, batch)


def accumulate_gradients(
    loss_fn: LossFn,
    params,
    batch,
    key,
    step,
    *,
    grad_accum_steps: int = 1,
    batch_sharding: Optional[NamedSharding] = None,
):
  """(loss, metrics, grads) of one update; over `grad_accum_steps` micro-batches if > 1.

  Micro-batch j uses `fold_in(key, j)`; gradients and metrics are averaged weighted by each
  micro-batch's WEIGHT_METRIC (1 if the loss reports none); that metric itself is summed, and
  so is `metrics[STATS]` (the sums a method's parameter update reads).
  """
  grad_fn = jax.value_and_grad(lambda p, b, k: loss_fn(p, b, k, step, True), has_aux=True)
  if grad_accum_steps == 1:
    (loss, metrics), grads = grad_fn(params, batch, key)
    return loss, metrics, grads

  micro = _split_micro_batches(batch, grad_accum_steps, batch_sharding)

  def body(carry, xs):
    index, micro_batch = xs
    (loss, metrics), grads = grad_fn(params, micro_batch, jax.random.fold_in(key, index))
    weight = jax.lax.stop_gradient(metrics.get(WEIGHT_METRIC, jnp.ones((), jnp.float32)))
    weight = weight.astype(jnp.float32)
    metrics = dict(metrics, loss=loss)
    stats = metrics.pop(STATS, {})
    grad_sum, metric_sum, stats_sum, weight_sum = carry
    grad_sum = jax.tree.map(lambda s, g: s + weight * g.astype(jnp.float32), grad_sum, grads)
    metric_sum = jax.tree.map(lambda s, m: s + weight * m.astype(jnp.float32), metric_sum, metrics)
    stats_sum = jax.tree.map(lambda s, m: s + m.astype(jnp.float32), stats_sum, stats)
    return (grad_sum, metric_sum, stats_sum, weight_sum + weight), None

  zeros = lambda tree: jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), tree)
  first = jax.tree.map(lambda x: x[0], micro)
  metric_shapes = jax.eval_shape(
      lambda: dict(grad_fn(params, first, key)[0][1], loss=jnp.zeros(()))
  )
  stats_shapes = metric_shapes.pop(STATS, {})
  init = (zeros(params), zeros(metric_shapes), zeros(stats_shapes), jnp.zeros((), jnp.float32))
  (grad_sum, metric_sum, stats_sum, weight_sum), _ = jax.lax.scan(
      body, init, (jnp.arange(grad_accum_steps), micro)
  )
  grads = jax.tree.map(lambda g, p: (g / weight_sum).astype(p.dtype), grad_sum, params)
  metrics = {k: v / weight_sum for k, v in metric_sum.items()}
  if WEIGHT_METRIC in metrics:
    metrics[WEIGHT_METRIC] = weight_sum
  if stats_shapes:
    metrics[STATS] = stats_sum
  return metrics.pop("loss"), metrics, grads


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    grad_accum_steps: int = 1,
    batch_sharding: Optional[NamedSharding] = None,
    remat: str = "none",
    update_params: Optional[Callable] = None,
):
  """Returns step(state, batch) -> (state, metrics).

  A step whose loss or gradients are not finite leaves params and optimizer state unchanged
  and is counted (`nonfinite_in_a_row`, `nonfinite_total`); the caller decides when to stop.
  `batch_sharding` constrains the batch (and micro-batches) to the batch mesh axes; `remat`
  names a policy of `models.transformer.REMAT_POLICIES`. `update_params(new, old, stats, step)`
  (a method's `param_update`) runs after the optimizer, on the loss's `metrics[STATS]`.
  """

  def step(state: TrainState, batch):
    if batch_sharding is not None:
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    with remat_policy(remat):
      loss, metrics, grads = accumulate_gradients(
          loss_fn,
          state.params,
          batch,
          key,
          state.step,
          grad_accum_steps=grad_accum_steps,
          batch_sharding=batch_sharding,
      )
    stats = metrics.pop(STATS, None)
    finite = jnp.isfinite(loss) & _all_finite(grads)
    updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    if update_params is not None:
      new_params = update_params(new_params, state.params, stats, state.step)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state.replace(
        step=state.step + finite.astype(jnp.int32),
        params=keep(new_params, state.params),
        opt_state=keep(new_opt_state, state.opt_state),
        nonfinite_in_a_row=jnp.where(finite, 0, state.nonfinite_in_a_row + 1),
        nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32),
    )
    metrics = dict(
        metrics,
        loss=loss,
        grad_norm=optax.tree.norm(grads),
        learning_rate=schedule(state.step),
        skipped=(~finite).astype(jnp.float32),
    )
    return new_state, metrics

  return step


def make_eval_step(loss_fn: LossFn, seed: int = 0):
  """Returns eval(params, batch) -> metrics, with a fixed key so evals are comparable."""

  def evaluate(params, batch):
    _, metrics = loss_fn(params, batch, jax.random.key(seed), jnp.zeros((), jnp.int32), False)
    metrics.pop(STATS, None)
    return metrics

  return evaluate


def jit_steps(
    loss_fn: LossFn,
    optimizer,
    schedule,
    train,
    state_sharding,
    batch_sharding,
    update_params: Optional[Callable] = None,
):
  """(train_step, eval_step) jitted as every run compiles them: the state sharded and donated
  (the new state is written in place), the batch sharded, `train.grad_accum_steps` and
  `train.remat` applied. The trainer runs these; `parallel.plan` and `parallel.aot` compile
  them for TPU, so what they measure is what runs."""
  train_step = jax.jit(
      make_train_step(
          loss_fn,
          optimizer,
          schedule,
          grad_accum_steps=train.grad_accum_steps,
          batch_sharding=batch_sharding,
          remat=train.remat,
          update_params=update_params,
      ),
      in_shardings=(state_sharding, batch_sharding),
      out_shardings=(state_sharding, None),
      donate_argnums=0,
  )
  eval_step = jax.jit(make_eval_step(loss_fn), in_shardings=(state_sharding.params, batch_sharding))
  return train_step, eval_step
