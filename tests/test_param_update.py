"""Parameters the optimizer must not touch (`Method.frozen_params`) and the per-step update of
such state from loss statistics (`Method.param_update`), through the trainer's own step."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxdisco.objectives.update_stats import STATS
from jaxdisco.train.optimizer import make_optimizer
from jaxdisco.train.state import TrainState
from jaxdisco.train.step import make_eval_step, make_train_step


def _optim():
  o = ml_collections.ConfigDict()
  o.lr, o.end_lr, o.warmup_steps, o.decay_power = 0.1, 0.1, 0, 1.0
  o.b1, o.b2, o.eps, o.weight_decay, o.clip_norm = 0.9, 0.98, 1e-6, 0.5, 0.0
  return o


def _loss(params, batch, key, step, train):
  del key, step, train
  p = params["params"]
  x = batch["x"]  # [rows, 3]
  # The frozen codebook enters the loss (its gradient is not zero) but must still not move.
  pred = x @ p["w"] + jnp.sum(p["codebook"])
  loss = jnp.mean(jnp.square(pred - 1.0))
  stats = {"row_sum": jnp.sum(x, axis=0), "count": jnp.asarray(x.shape[0], jnp.float32)}
  return loss, {"masked_frames": jnp.asarray(x.shape[0], jnp.float32), STATS: stats}


def _update(new, old, stats, step):
  del old, step
  p = dict(new["params"])
  p["codebook"] = stats["row_sum"] / stats["count"]  # The batch mean: a pure function of stats.
  return {"params": p}


def _state(optimizer):
  params = {"params": {"w": jnp.ones((3,)), "codebook": jnp.full((3,), 2.0)}}
  return TrainState.create(params, optimizer, jax.random.key(0))


def test_frozen_parameters_get_no_update_and_no_optimizer_moments():
  optimizer = make_optimizer(_optim(), 10, frozen=("codebook",))
  state = _state(optimizer)
  moments = [x.shape for x in jax.tree.leaves(state.opt_state) if x.ndim]
  assert moments.count((3,)) == 2  # Adam's mu and nu of `w` only.
  step = jax.jit(make_train_step(_loss, optimizer, optax.constant_schedule(0.1)))
  batch = {"x": jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)}
  new, _ = step(state, batch)
  np.testing.assert_array_equal(new.params["params"]["codebook"], 2.0)  # No step, no decay.
  assert not np.allclose(new.params["params"]["w"], 1.0)


def test_update_reads_statistics_summed_over_micro_batches():
  optimizer = make_optimizer(_optim(), 10, frozen=("codebook",))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 3)), jnp.float32)
  results = {}
  for k in (1, 4):
    step = jax.jit(
        make_train_step(
            _loss, optimizer, optax.constant_schedule(0.1), grad_accum_steps=k, update_params=_update
        )
    )
    new, metrics = step(_state(optimizer), {"x": x})
    assert STATS not in metrics
    results[k] = new.params["params"]["codebook"]
  np.testing.assert_allclose(results[1], np.mean(np.asarray(x), axis=0), rtol=1e-6)
  np.testing.assert_allclose(results[4], results[1], rtol=1e-6)


def test_update_is_skipped_with_the_optimizer_on_a_nonfinite_step():
  optimizer = make_optimizer(_optim(), 10, frozen=("codebook",))
  step = jax.jit(
      make_train_step(_loss, optimizer, optax.constant_schedule(0.1), update_params=_update)
  )
  new, metrics = step(_state(optimizer), {"x": jnp.full((2, 3), jnp.nan)})
  assert float(metrics["skipped"]) == 1.0
  np.testing.assert_array_equal(new.params["params"]["codebook"], 2.0)


def test_eval_step_reports_no_statistics():
  metrics = make_eval_step(_loss)(_state(make_optimizer(_optim(), 10)).params, {"x": jnp.ones((2, 3))})
  assert STATS not in metrics and "masked_frames" in metrics
