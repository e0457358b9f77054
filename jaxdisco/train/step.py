"""The jitted train and eval steps (method-agnostic: the loss function is a parameter)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxdisco.train.state import TrainState

# loss_fn(params, batch, key, step, train) -> (loss, metrics dict of scalars)
LossFn = Callable


def _all_finite(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule):
  """Returns step(state, batch) -> (state, metrics).

  A step whose loss or gradients are not finite leaves params and optimizer state unchanged
  and is counted (`nonfinite_in_a_row`, `nonfinite_total`); the caller decides when to stop.
  """

  def step(state: TrainState, batch):
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    grad_fn = jax.value_and_grad(lambda p: loss_fn(p, batch, key, state.step, True), has_aux=True)
    (loss, metrics), grads = grad_fn(state.params)
    finite = jnp.isfinite(loss) & _all_finite(grads)
    updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state.replace(
        step=state.step + finite.astype(jnp.int32),
        params=keep(new_params, state.params),
        opt_state=keep(new_opt_state, state.opt_state),
        nonfinite_in_a_row=jnp.where(finite, 0, state.nonfinite_in_a_row + 1),
        nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32))
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads),
                   learning_rate=schedule(state.step), skipped=(~finite).astype(jnp.float32))
    return new_state, metrics

  return step


def make_eval_step(loss_fn: LossFn, seed: int = 0):
  """Returns eval(params, batch) -> metrics, with a fixed key so evals are comparable."""

  def evaluate(params, batch):
    _, metrics = loss_fn(params, batch, jax.random.key(seed), jnp.zeros((), jnp.int32), False)
    return metrics

  return evaluate
