"""Sharding on 8 simulated CPU devices: sharded == single-device loss and gradients, gradient
accumulation, remat and bf16, the layout report and replication check, restore onto another
mesh shape. The 8-device work runs once in a subprocess (XLA_FLAGS must be set before JAX
starts); the tests below check its results. Also: AOT lowering at pod scale (no devices)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent


def _run_worker(tmp_path, devices: int, task: str, timeout: int = 900) -> dict:
  env = dict(
      os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu"
  )
  out = tmp_path / f"{task}.json"
  proc = subprocess.run(
      [sys.executable, __file__, task, str(tmp_path), str(out)],
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
      cwd=HERE,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  return json.loads(out.read_text())


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
  return _run_worker(tmp_path_factory.mktemp("sharding"), 8, "eight")


@pytest.mark.parametrize(
    "case",
    # data x fsdp, data x tensor; every other method on all three axes at once.
    [
        "wav2vec2 2x4x1",
        "wav2vec2 4x1x2",
        "hubert 2x2x2",
        "wavlm 2x2x2",
        "vq_wav2vec 2x2x2",
        "best_rq 2x2x2",
    ],
)
def test_sharded_loss_and_grads_equal_single_device(eight_devices, case):
  r = eight_devices["equivalence"][case]
  assert r["num_devices_holding_batch"] == 8
  assert r["max_loss_diff"] < 1e-5, r
  assert r["max_grad_diff"] < 1e-5, r
  assert r["sharded_param_leaves"] > 0  # parameters really are split, not just replicated


def test_params_are_created_sharded_and_report_bytes(eight_devices):
  r = eight_devices["layout"]
  # fsdp=8: every device holds ~1/8 of the parameters (plus the small replicated ones).
  assert r["param_bytes_per_device"] <= r["param_bytes"] / 8 + r["replicated_bytes"]
  assert r["param_bytes_per_device"] < r["param_bytes"] / 4
  assert r["created_shard_shape"] == r["expected_shard_shape"]
  assert "Parameter layout on mesh" in r["report"]
  assert "parallel.max_replicated_fraction" in r["replication_error"]


def test_grad_accumulation_equals_one_big_batch(eight_devices):
  r = eight_devices["accumulation"]
  assert r["max_grad_diff"] < 1e-5 and r["loss_diff"] < 1e-5, r


def test_remat_policies_and_bf16(eight_devices):
  r = eight_devices["remat_bf16"]
  assert r["full"] < 1e-6, r  # remat changes no gradient (bf16 below runs dots_saveable)
  assert r["bf16_finite"] and abs(r["bf16_loss"] - r["fp32_loss"]) < 0.1 * abs(r["fp32_loss"])


def test_restore_onto_a_different_mesh(eight_devices, tmp_path):
  """Saved mid-run by 8 devices as data 2 x fsdp 4; resumed on 4 devices as data 2 x tensor 2:
  the remaining steps' losses match the uninterrupted 8-device run."""
  full = eight_devices["train"]["full_losses"]
  losses = _run_worker(pathlib.Path(eight_devices["train"]["tmp"]), 4, "resume4")["losses"]
  assert sorted(int(s) for s in losses) == [1, 2, 3, 4, 5, 6]
  for step in ("4", "5", "6"):
    np.testing.assert_allclose(losses[step], full[step], rtol=1e-5)


def test_aot_lowering_at_pod_scale_matches_fsdp_split():
  import conftest
  from jaxdisco.parallel import aot

  for name, devices in (("wav2vec2_base", 256), ("wav2vec2_large", 64)):
    config = conftest.load_config(name)
    config.parallel.data, config.parallel.fsdp, config.parallel.dcn_data = 1, -1, 1
    result = aot.lower_train_step(config, devices)
    layout = result.layout
    assert result.mesh_shape == {"data": 1, "fsdp": devices, "tensor": 1}
    ideal = layout.param_bytes / devices
    assert ideal <= layout.param_bytes_per_device <= ideal + layout.replicated_param_bytes
    assert layout.optimizer_bytes_per_device == pytest.approx(
        2 * layout.param_bytes_per_device, rel=1e-3
    )  # AdamW mu + nu
    assert layout.replicated_fraction < 0.01
    assert "sharding" in result.lowered.as_text()[:200_000]


def test_mesh_sizes_fill_and_explain_errors():
  from jaxdisco.parallel.mesh import MeshError, fill_shape

  assert fill_shape([-1, 4, 1], 8, "m") == (2, 4, 1)
  assert fill_shape([2, 2, 2], 8, "m") == (2, 2, 2)
  with pytest.raises(MeshError, match="not a multiple of 3"):
    fill_shape([-1, 3, 1], 8, "m")
  with pytest.raises(MeshError, match="at most one -1"):
    fill_shape([-1, -1, 1], 8, "m")
  with pytest.raises(MeshError, match="use 4 devices but there are 8"):
    fill_shape([2, 2, 1], 8, "m")


def test_rules_keep_uneven_dimensions_whole():
  from jax.sharding import AbstractMesh, PartitionSpec as P
  from jaxdisco.parallel.rules import DEFAULT_RULES, mesh_spec

  mesh = AbstractMesh((1, 8, 2), ("data", "fsdp", "tensor"))
  assert mesh_spec(P("embed", "mlp"), (768, 3072), mesh, DEFAULT_RULES) == P("fsdp", "tensor")
  assert mesh_spec(P("embed", "mlp"), (12, 3072), mesh, DEFAULT_RULES) == P(None, "tensor")
  # One mesh axis per array: the projection from conv features splits only one dimension.
  assert mesh_spec(P("conv_out", "embed"), (512, 768), mesh, DEFAULT_RULES) == P(None, "fsdp")


# ------------------------------------------------------------------------------------------
# Subprocess side.


def _tiny_config(name="demo"):
  sys.path.insert(0, str(HERE))
  from conftest import tiny_run_config

  return tiny_run_config(name)


# The demo config of each method, for the sharded == single-device check.
_METHOD_CONFIGS = {
    "wav2vec2": "demo",
    "hubert": "hubert_demo",
    "wavlm": "wavlm_demo",
    "vq_wav2vec": "vq_wav2vec_demo_gumbel",
    "best_rq": "best_rq_demo",
}


def _set_mesh(config, data, fsdp, tensor):
  config.parallel.data, config.parallel.fsdp, config.parallel.tensor = data, fsdp, tensor
  return config


def _loss_fn(config, train=True):
  import functools
  from jaxdisco.models.config import ModelConfig
  from jaxdisco.objectives.wav2vec2 import pretraining_loss

  model_config = ModelConfig.from_dict(config.model.to_dict())
  f = functools.partial(pretraining_loss, model_config=model_config, objective=config.objective)
  return lambda p, b, k, s, t=train: f(p, b, k, s, train=t), model_config


def _batch(config, rows=8):
  from jaxdisco.methods import get_method

  rng = np.random.default_rng(0)
  wav = rng.standard_normal((rows, config.data.crop_samples)).astype(np.float32)
  pad = np.zeros_like(wav, dtype=bool)
  pad[1, config.data.crop_samples * 3 // 4 :] = True  # one padded utterance
  batch = {"waveform": wav, "padding_mask": pad}
  shapes = get_method(config.method).example_batch(config, rows, config.data.crop_samples)
  if "labels" in shapes:
    batch["labels"] = rng.integers(0, config.labels.num_classes, shapes["labels"].shape)
    batch["labels"] = batch["labels"].astype(np.int32)
  return batch


def _max_diff(a, b):
  import jax

  return max(
      float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def _equivalence(out):
  import jax
  from flax import linen as nn
  from jaxdisco import methods
  from jaxdisco.parallel import mesh as mesh_lib, rules as rules_lib

  cases = [("wav2vec2", (2, 4, 1)), ("wav2vec2", (4, 1, 2))]
  cases += [(m, (2, 2, 2)) for m in ("hubert", "wavlm", "vq_wav2vec", "best_rq")]
  results = {}
  for method_name, sizes in cases:
    config = _tiny_config(_METHOD_CONFIGS[method_name])
    method = methods.get_method(config.method)
    model_config = method.check(config)
    loss_fn = method.loss_fn(model_config, config)
    init = method.boxed_init_fn(model_config, config, (1, config.data.crop_samples), 0)
    params = nn.meta.unbox(jax.jit(init)())
    batch = _batch(config)
    key = jax.random.key(3)
    grad = lambda p, b, f=loss_fn: jax.value_and_grad(
        lambda q: f(q, b, key, 0, True), has_aux=True
    )(p)
    (ref_loss, _), ref_grads = jax.jit(grad)(params, batch)
    _set_mesh(config, *sizes)
    mesh = mesh_lib.make_mesh(config.parallel)
    rules = rules_lib.rules_from_config(config.parallel)
    shardings = rules_lib.tree_shardings(jax.eval_shape(init), mesh, rules)
    batch_sharding = rules_lib.batch_sharding(mesh, rules)
    p = jax.device_put(params, shardings)
    b = jax.device_put(batch, batch_sharding)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      (loss, _), grads = jax.jit(
          grad, in_shardings=(shardings, batch_sharding), out_shardings=(None, shardings)
      )(p, b)
    sharded = sum(
        any(a is not None for a in s.spec)
        for s in jax.tree.leaves(
            shardings, is_leaf=lambda s: isinstance(s, jax.sharding.NamedSharding)
        )
    )
    results[f"{method_name} {'x'.join(map(str, sizes))}"] = {
        "max_loss_diff": abs(float(loss) - float(ref_loss)),
        "max_grad_diff": _max_diff(grads, ref_grads),
        "sharded_param_leaves": sharded,
        "num_devices_holding_batch": len(b["waveform"].sharding.device_set),
    }
  out["equivalence"] = results


def _layout(out):
  import jax
  from flax import linen as nn
  from jaxdisco.parallel import layout as layout_lib, mesh as mesh_lib, rules as rules_lib
  from jaxdisco.train.optimizer import make_optimizer
  from jaxdisco.train.pretrain import boxed_init_fn
  from jaxdisco.train.state import sharded_state_factory

  config = _set_mesh(_tiny_config(), 1, 8, 1)
  _, model_config = _loss_fn(config)
  mesh = mesh_lib.make_mesh(config.parallel)
  rules = rules_lib.rules_from_config(config.parallel)
  optimizer = make_optimizer(config.optim, 10)
  init = boxed_init_fn(model_config, (8, config.data.crop_samples), 0)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    create, abstract, shardings = sharded_state_factory(
        init, optimizer, lambda: jax.random.key(0), mesh, rules
    )
    state = create()
  layout = layout_lib.state_layout(abstract, shardings)
  kernel = state.params["params"]["backbone"]["encoder"]["layer_0"]["ffn_in"]["kernel"]
  result = {
      "param_bytes": layout.param_bytes,
      "param_bytes_per_device": layout.param_bytes_per_device,
      "replicated_bytes": layout.replicated_param_bytes,
      "report": layout.report(),
      "created_shard_shape": list(kernel.addressable_shards[0].data.shape),
      "expected_shard_shape": [kernel.shape[0] // 8, kernel.shape[1]],
  }
  # A table that maps nothing to fsdp leaves everything replicated under fsdp=8.
  bad_rules = tuple((k, None if v == "fsdp" else v) for k, v in rules)
  bad = rules_lib.tree_shardings(
      jax.eval_shape(
          lambda: __import__("jaxdisco.train.state", fromlist=["x"]).TrainState.create(
              init(), optimizer, jax.random.key(0)
          )
      ),
      mesh,
      bad_rules,
  )
  try:
    layout_lib.check_replication(layout_lib.state_layout(abstract, bad), 0.1)
    result["replication_error"] = ""
  except layout_lib.ReplicationError as e:
    result["replication_error"] = str(e)
  out["layout"] = result


def _accumulation(out):
  import jax
  from flax import linen as nn
  from jaxdisco.objectives.wav2vec2 import draw_masks_and_negatives
  from jaxdisco.parallel import mesh as mesh_lib, rules as rules_lib
  from jaxdisco.train.pretrain import boxed_init_fn
  from jaxdisco.train.step import accumulate_gradients

  config = _set_mesh(_tiny_config(), 2, 4, 1)
  # A loss that is a sum over frames: deterministic (no dropout, argmax codes), masks given,
  # no batch-level perplexity or feature-penalty terms.
  config.objective.diversity_weight = 0.0
  config.objective.feature_penalty_weight = 0.0
  loss_fn, model_config = _loss_fn(config, train=False)
  loss_fn = lambda p, b, k, s, t: _loss_fn(config, train=False)[0](p, b, k, s)
  init = boxed_init_fn(model_config, (1, config.data.crop_samples), 0)
  params = nn.meta.unbox(jax.jit(init)())
  batch = _batch(config, rows=16)
  batch.update(
      jax.device_get(
          draw_masks_and_negatives(
              jax.random.key(5), batch["padding_mask"], model_config.conv_spec, config.objective
          )
      )
  )
  mesh = mesh_lib.make_mesh(config.parallel)
  rules = rules_lib.rules_from_config(config.parallel)
  batch_sharding = rules_lib.batch_sharding(mesh, rules)
  b = jax.device_put(batch, batch_sharding)
  results = {}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    for k in (1, 2):
      f = jax.jit(
          lambda p, x, k=k: accumulate_gradients(
              loss_fn, p, x, jax.random.key(0), 0, grad_accum_steps=k, batch_sharding=batch_sharding
          )
      )
      results[k] = f(params, b)
  out["accumulation"] = {
      "loss_diff": abs(float(results[1][0]) - float(results[2][0])),
      "max_grad_diff": _max_diff(results[1][2], results[2][2]),
  }


def _remat_bf16(out):
  import jax
  from flax import linen as nn
  from jaxdisco.models.transformer import remat_policy
  from jaxdisco.train.pretrain import boxed_init_fn

  config = _tiny_config()
  loss_fn, model_config = _loss_fn(config)
  params = nn.meta.unbox(jax.jit(boxed_init_fn(model_config, (1, 16000), 0))())
  batch = _batch(config, rows=2)
  device = jax.devices()[0]
  params, batch = jax.device_put((params, batch), device)

  def grads(policy, fn=loss_fn):
    def g(p, b):
      with remat_policy(policy):
        return jax.value_and_grad(lambda q: fn(q, b, jax.random.key(1), 0), has_aux=True)(p)

    return jax.jit(g)(params, batch)

  (ref_loss, _), ref = grads("none")
  result = {"full": _max_diff(grads("full")[1], ref)}
  config.model.dtype = "bfloat16"
  bf16_fn, _ = _loss_fn(config)
  (loss, _), g = grads("dots_saveable", bf16_fn)
  result.update(
      bf16_loss=float(loss),
      fp32_loss=float(ref_loss),
      bf16_finite=bool(
          np.isfinite(float(loss))
          and all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g))
      ),
  )
  out["remat_bf16"] = result


def _train(out, tmp):
  from jaxdisco.train.metrics import read_metrics
  from jaxdisco.train.pretrain import train_and_evaluate

  losses = lambda d: {r["step"]: r["loss"] for r in read_metrics(d) if "loss" in r}
  config = _set_mesh(_tiny_config(), 2, 4, 1)
  train_and_evaluate(config, tmp / "full")
  train_and_evaluate(config, tmp / "stopped", stop_after=3)
  out["train"] = {"full_losses": losses(tmp / "full"), "tmp": str(tmp)}


def _resume4(out, tmp):
  from jaxdisco.train.metrics import read_metrics
  from jaxdisco.train.pretrain import train_and_evaluate
  import jax

  assert jax.device_count() == 4
  train_and_evaluate(_set_mesh(_tiny_config(), 2, 1, 2), tmp / "stopped")
  out["losses"] = {r["step"]: r["loss"] for r in read_metrics(tmp / "stopped") if "loss" in r}


if __name__ == "__main__":
  task, tmp, out_file = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
  sys.path.insert(0, str(HERE))
  import conftest  # noqa: F401  (shared compilation cache)

  results = {}
  if task == "eight":
    _equivalence(results)
    _layout(results)
    _accumulation(results)
    _remat_bf16(results)
    _train(results, tmp)
  elif task == "resume4":
    _resume4(results, tmp)
  out_file.write_text(json.dumps(results))
