"""DinoSR (jaxdisco.methods.dinosr): the codebook and teacher updates against a numpy
reference written from the paper / reference code, the update through the trainer's own step,
learning and resuming through the trainer, sharded == single device, the `dinosr` tokenizer
units, the TPU compile and the config checks. Tiny sizes only."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_run_config

from jaxdisco import methods
from jaxdisco.errors import ConfigError
from jaxdisco.objectives import dinosr as obj

HERE = pathlib.Path(__file__).resolve().parent


def tiny_dinosr(**objective):
  """configs/dinosr_demo.py at test size: 2 layers (both with a codebook), 8 codes."""
  c = tiny_run_config("dinosr_demo")
  c.objective.average_top_k_layers = 2
  c.objective.codebook_size = 8
  for k, v in objective.items():
    c.objective[k] = v
  return c


# --- (a) numpy reference -------------------------------------------------------------------


def _np_instance_norm(x, valid, eps=1e-5):
  """x [B, T, D]: per utterance and channel over valid frames (biased variance)."""
  out = np.zeros_like(x)
  for b in range(x.shape[0]):
    v = x[b, valid[b]]
    out[b, valid[b]] = (v - v.mean(0)) / np.sqrt(v.var(0) + eps)
  return out


def _np_assign_and_update(targets, valid, mask, sums, counts, decay):
  """The reference's forward + codebook move, one codebook at a time: targets of masked
  frames, nearest codeword of sums / counts by -(|t|^2 + |c|^2 - 2 t.c) argmax, then
  alpha = decay where the code got frames, 1 elsewhere."""
  codes, new_sums, new_counts = [], sums.copy(), counts.copy()
  for k in range(targets.shape[0]):
    t = _np_instance_norm(targets[k], valid)
    sel = t[mask & valid]  # [N, D]
    book = sums[k] / counts[k][:, None]
    neg = -((sel**2).sum(1, keepdims=True) + (book**2).sum(1) - 2 * sel @ book.T)
    idx = neg.argmax(-1)
    onehot = np.eye(book.shape[0])[idx]
    n, mem = onehot.sum(0), onehot.T @ sel
    alpha = np.where(n != 0, decay, 1.0)
    new_counts[k] = alpha * counts[k] + (1 - alpha) * n
    new_sums[k] = alpha[:, None] * sums[k] + (1 - alpha[:, None]) * mem
    codes.append(idx)
  return codes, new_sums, new_counts


def test_codebook_assignment_and_ema_equal_a_numpy_reference():
  rng = np.random.default_rng(0)
  k, b, t, d, v = 2, 3, 12, 4, 5
  targets = rng.normal(size=(k, b, t, d)).astype(np.float32) * 3 + 1
  valid = np.ones((b, t), bool)
  valid[1, 9:] = False
  mask = rng.random((b, t)) < 0.6
  sums = rng.normal(size=(k, v, d)).astype(np.float32)
  counts = rng.uniform(0.5, 2.0, size=(k, v)).astype(np.float32)
  ref_codes, ref_sums, ref_counts = _np_assign_and_update(
      targets, valid, mask, sums, counts, 0.9
  )
  normed, codes = obj.assign_targets(jnp.asarray(targets), valid, sums, counts)
  weight = jnp.asarray(mask & valid, jnp.float32)
  for i in range(k):
    np.testing.assert_array_equal(np.asarray(codes[i])[mask & valid], ref_codes[i])
  stats = obj.code_statistics(normed, codes, weight, v)
  new_sums, new_counts = obj.codebook_ema(sums, counts, stats, 0.9)
  np.testing.assert_allclose(new_counts, ref_counts, rtol=1e-6)
  np.testing.assert_allclose(new_sums, ref_sums, rtol=1e-5, atol=1e-5)
  # Padding does not enter the statistics (the reference's instance norm would count it).
  np.testing.assert_allclose(
      np.asarray(normed)[0, 1, :9].mean(0), 0.0, atol=1e-5
  )


def test_codebook_init_is_instance_normalised_over_codes():
  from jaxdisco.models.dinosr import codebook_init

  cb = np.asarray(codebook_init(jax.random.key(0), (2, 16, 6)))  # [K, V, D]
  assert cb.shape == (2, 16, 6)
  np.testing.assert_allclose(cb.mean(1), 0.0, atol=1e-5)  # Over V, per (k, d).
  np.testing.assert_allclose(cb.var(1), 1.0, rtol=1e-3)


def test_codebook_init_scale_multiplies_the_reference_init():
  from jaxdisco.models.dinosr import codebook_init

  ref = np.asarray(codebook_init(jax.random.key(0), (2, 16, 6)))
  np.testing.assert_allclose(
      np.asarray(codebook_init(jax.random.key(0), (2, 16, 6), scale=0.1)), 0.1 * ref, rtol=1e-6
  )


def _codes_used_per_update(scale, seed, *, dim=64, codes=50, updates=30):
  """Online codebook on synthetic features of few frames per update (4 x 60, 60% masked):
  slowly varying rank-6 signals plus noise, like a young network's layers. The codes the
  masked frames of each update take, counted over the updates."""
  from jaxdisco.models.dinosr import codebook_init
  from jaxdisco.objectives.dinosr import assign_targets, code_statistics, codebook_ema

  rng = np.random.default_rng(seed)
  basis = rng.normal(size=(6, dim))
  sums = codebook_init(jax.random.key(seed), (1, codes, dim), scale=scale)
  counts = jnp.ones((1, codes))
  used = []
  for _ in range(updates):
    x = (rng.normal(size=(4, 60, 6)).cumsum(1) * 0.3) @ basis + 0.3 * rng.normal(size=(4, 60, dim))
    valid = jnp.ones((4, 60), bool)
    normed, assigned = assign_targets(jnp.asarray(x, jnp.float32)[None], valid, sums, counts)
    stats = code_statistics(normed, assigned, jnp.asarray(rng.random((4, 60)) < 0.6, jnp.float32), codes)
    used.append(int((stats["counts"] > 0).sum()))
    sums, counts = codebook_ema(sums, counts, stats, 0.9)
  return np.asarray(used)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_small_codebook_init_keeps_codes_competing_with_few_frames_per_update(seed):
  """Why objective.codebook_init_scale exists (methods/dinosr.py): with ~150 frames per
  update, the reference's init (scale 1) settles on the first update's winners (12 of 50
  codes here), while codewords started near the origin keep ~30 in use."""
  reference = _codes_used_per_update(1.0, seed)[-5:].mean()
  small = _codes_used_per_update(0.1, seed)[-5:].mean()
  assert reference <= 15 and small >= 2 * reference, (reference, small)


def _np_annealed(start, end, n, total):  # fairseq's get_annealed_rate, written out.
  if n >= total:
    return end
  return end - (end - start) * (1 - n / total)


def test_teacher_decay_anneals_then_holds_then_freezes():
  o = tiny_dinosr(
      ema_decay=0.999, ema_end_decay=0.9999, ema_anneal_end_step=30_000,
      freeze_teacher_step=200_001,
  ).objective
  golden = {0: 0.999, 15_000: 0.99945, 29_999: 0.99989997, 30_000: 0.9999, 100_000: 0.9999,
            200_000: 0.9999, 200_001: 1.0, 300_000: 1.0}
  for n, want in golden.items():
    ref = 1.0 if n >= 200_001 else _np_annealed(0.999, 0.9999, n, 30_000)
    assert abs(ref - want) < 1e-7
    assert abs(float(obj.teacher_decay(jnp.int32(n), o)) - want) < 1e-7, n


def test_dead_codes_are_reseeded_from_the_most_used_code():
  sums = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
  counts = jnp.asarray([[1.0, 6.0, 2.0, 1.0], [3.0, 3.0, 3.0, 3.0]])
  idle = jnp.asarray([[0.0, 0.0, 5.0, 7.0], [0.0, 0.0, 0.0, 4.0]])
  s, c, i, any_dead = obj.reseed_dead_codes(
      sums, counts, idle, jax.random.key(0), patience=5, noise=0.0
  )
  np.testing.assert_array_equal(any_dead, [True, False])
  np.testing.assert_array_equal(c[0], [1.0, 3.0, 3.0, 1.0])  # Code 2 takes half of code 1.
  np.testing.assert_allclose(s[0, 2] / c[0, 2], sums[0, 1] / 6.0)  # noise 0: its codeword.
  np.testing.assert_allclose(s[0, 1] / c[0, 1], sums[0, 1] / 6.0)  # The donor's is kept.
  np.testing.assert_array_equal(i[0], [0.0, 0.0, 0.0, 7.0])  # One per codebook and update.
  np.testing.assert_array_equal(s[1], sums[1])
  off = obj.reseed_dead_codes(sums, counts, idle, jax.random.key(0), patience=0, noise=0.0)
  np.testing.assert_array_equal(off[1], counts)


# --- (b) through the trainer's step ------------------------------------------------------


def _setup(config, rows=4):
  from flax import linen as nn

  from jaxdisco.train.optimizer import learning_rate_schedule, make_optimizer
  from jaxdisco.train.state import TrainState
  from jaxdisco.train.step import make_train_step

  config.optim.warmup_steps = 0  # The warm-up starts at lr 0: the first update would be 0.
  method = methods.get_method("dinosr")
  mc = method.check(config)
  params = nn.meta.unbox(
      method.boxed_init_fn(mc, config, (rows, config.data.crop_samples), 0)()
  )
  optimizer = make_optimizer(config.optim, config.train.num_steps, method.frozen_params)
  state = TrainState.create(params, optimizer, jax.random.key(1))
  step = jax.jit(
      make_train_step(
          method.loss_fn(mc, config),
          optimizer,
          learning_rate_schedule(config.optim, config.train.num_steps),
          update_params=method.param_update_fn(mc, config),
      )
  )
  rng = np.random.default_rng(0)
  wav = rng.standard_normal((rows, config.data.crop_samples)).astype(np.float32)
  pad = np.zeros_like(wav, bool)
  pad[1, -4000:] = True
  return method, mc, state, step, {"waveform": wav, "padding_mask": pad}


def _leaves_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_teacher_and_codebooks_move_by_exactly_their_ema_then_freeze():
  """One compiled step, three updates (freeze_teacher_step = 2): update 1 moves the teacher by
  exactly the EMA (positional conv copied) and the codebooks by theirs; update 2 is the freeze
  step (teacher still); from update 3 the student's pre-encoder keeps its values too."""
  config = tiny_dinosr(ema_decay=0.9, ema_end_decay=0.99, ema_anneal_end_step=10,
                       dead_code_patience=0, freeze_teacher_step=2)
  method, mc, state, step, batch = _setup(config)
  p0 = jax.device_get(state.params["params"])
  assert _leaves_equal(p0["teacher"], p0["backbone"]["encoder"])  # Teacher = student at init.
  # The statistics the step's loss hands the update: same key as the step draws.
  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), 0)
  _, metrics = jax.jit(lambda p, b: method.loss_fn(mc, config)(p, b, key, 0, True))(
      state.params, batch
  )
  stats = jax.device_get(metrics[obj.STATS])
  s1, _ = step(state, batch)
  p1 = jax.device_get(s1.params["params"])
  assert not _leaves_equal(p1["backbone"]["encoder"], p0["backbone"]["encoder"])
  d = _np_annealed(0.9, 0.99, 1, 10)  # After update 1.
  for path, t1 in jax.tree_util.tree_leaves_with_path(p1["teacher"]):
    t0 = _get(p0["teacher"], path)
    s1_leaf = _get(p1["backbone"]["encoder"], path)
    want = s1_leaf if "pos_conv" in jax.tree_util.keystr(path) else d * t0 + (1 - d) * s1_leaf
    np.testing.assert_allclose(t1, want, rtol=1e-6, atol=1e-7, err_msg=str(path))
  n = stats["counts"]
  alpha = np.where(n > 0, 0.9, 1.0)
  np.testing.assert_allclose(
      p1["codebook_counts"], alpha * p0["codebook_counts"] + (1 - alpha) * n, rtol=1e-6
  )
  np.testing.assert_allclose(
      p1["codebooks"],
      alpha[..., None] * p0["codebooks"] + (1 - alpha[..., None]) * stats["sums"],
      rtol=1e-5, atol=1e-6,
  )
  np.testing.assert_array_equal(p1["codebook_idle"], np.where(n > 0, 0.0, 1.0))
  # No optimizer state for the frozen parameters: only backbone and heads have moments.
  mu = [x for x in jax.tree.leaves(s1.opt_state) if x.ndim]
  trained = [x for k, x in p1.items() if k not in method.frozen_params]
  assert sum(x.size for x in mu) == 2 * sum(x.size for x in jax.tree.leaves(trained))

  s2, _ = step(s1, batch)  # Update 2 = the freeze step: teacher still, student moves.
  s3, _ = step(s2, batch)  # Update 3: the pre-encoder keeps its values too.
  p2, p3 = (jax.device_get(s.params["params"]) for s in (s2, s3))
  assert _leaves_equal(p2["teacher"], p1["teacher"])
  assert _leaves_equal(p3["teacher"], p1["teacher"])
  assert not _leaves_equal(p2["backbone"]["feature_encoder"], p1["backbone"]["feature_encoder"])
  for name in ("feature_encoder", "feature_norm", "feature_projection"):
    assert _leaves_equal(p3["backbone"][name], p2["backbone"][name]), name
  assert not _leaves_equal(p3["backbone"]["encoder"], p2["backbone"]["encoder"])


def _get(tree, path):
  for p in path:
    tree = tree[p.key]
  return tree


# --- (c), (d), (f): the trainer, resuming, the tokenizer --------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One tiny run of 30 updates, and the same run stopped at 15 and resumed."""
  from jaxdisco.train.pretrain import train_and_evaluate

  tmp = tmp_path_factory.mktemp("dinosr")
  config = tiny_dinosr(dead_code_patience=5)
  config.optim.lr, config.optim.warmup_steps = 2e-3, 3
  config.train.num_steps = 30
  config.train.log_every, config.train.eval_every, config.train.checkpoint_every = 1, 30, 15
  train_and_evaluate(config, tmp / "full")
  train_and_evaluate(config, tmp / "resumed", stop_after=15)
  train_and_evaluate(config, tmp / "resumed")
  return tmp, config


def test_loss_falls_and_accuracy_rises_through_the_trainer(trained):
  from jaxdisco.train.metrics import read_metrics

  rows = [r for r in read_metrics(trained[0] / "full") if "loss" in r and "step" in r]
  # A weak check: at this size the targets themselves move (teacher and codebooks start
  # random), so 30 updates only move the loss off its start (~2.30, above ln 8) by ~0.1.
  first, last = rows[:2], rows[-10:]
  mean = lambda rs, k: float(np.mean([r[k] for r in rs]))
  assert mean(last, "loss") < mean(first, "loss") - 0.05, (first, last)
  assert mean(last, "accuracy") > mean(first, "accuracy") + 0.02, (first, last)


def test_resumed_run_equals_the_uninterrupted_one(trained):
  from jaxdisco.train.checkpoint import load_pretrained_params

  full = load_pretrained_params(trained[0] / "full", for_inference=False)
  resumed = load_pretrained_params(trained[0] / "resumed", for_inference=False)
  assert full.step == resumed.step == 30
  for name in ("teacher", "codebooks", "codebook_counts", "codebook_idle", "backbone", "heads"):
    a, b = full.params["params"][name], resumed.params["params"][name]
    assert _leaves_equal(a, b), name


def test_dinosr_tokenizer_equals_the_training_targets(trained, tmp_path):
  from jaxdisco.export.tokenizer import export_tokenizer
  from jaxdisco.errors import TokenizerError
  from jaxdisco.models.dinosr import DinoSRForPretraining
  from jaxdisco.tokenizer import Tokenizer
  from jaxdisco.train.checkpoint import load_pretrained_params

  run, config = trained[0] / "full", trained[1]
  out = export_tokenizer(
      run, tmp_path / "tok", units="dinosr", layer=2, export_lengths=(16000,), progress=None
  )
  assert not (out / "hf").exists()  # No transformers counterpart.
  tok = Tokenizer.load(out)
  assert tok.vocab_size == 8 and tok.manifest["model_type"] == "dinosr"
  rng = np.random.default_rng(1)
  wav = rng.standard_normal((2, 16000)).astype(np.float32) * 0.1
  pad = np.zeros_like(wav, bool)
  pad[1, 11000:] = True
  ids = tok.encode_batch(wav, pad)
  np.testing.assert_array_equal(tok.encode_batch(wav, pad, backend="stablehlo"), ids)
  # The library function: the trained model's own targets of the top layer (codebook K-1).
  loaded = load_pretrained_params(run, for_inference=False)
  mc = methods.get_method("dinosr").check(config)
  from jaxdisco.export.unit_kinds import normalize_rows

  norm_wav = normalize_rows(jnp.asarray(wav), jnp.asarray(pad))  # The run's data.normalize.
  o = DinoSRForPretraining(mc, 2, 8).apply(loaded.params, norm_wav, pad, None)
  p = loaded.params["params"]
  _, codes = obj.assign_targets(o.targets, o.frame_valid, p["codebooks"], p["codebook_counts"])
  want = np.where(o.frame_valid, codes[-1], -1)
  np.testing.assert_array_equal(ids, want)
  assert (ids[1] == -1).any() and (ids[0] >= 0).all()
  with pytest.raises(TokenizerError, match="hidden_states 1..2"):
    export_tokenizer(run, tmp_path / "bad", units="dinosr", layer=0, export_lengths=(),
                     progress=None)


# --- (e) sharded == single device ------------------------------------------------------


def _sharded_worker(out_file):
  from flax import linen as nn

  from jaxdisco.parallel import mesh as mesh_lib, rules as rules_lib
  from jaxdisco.train.optimizer import learning_rate_schedule, make_optimizer
  from jaxdisco.train.state import TrainState
  from jaxdisco.train.step import make_train_step
  from test_sharding import _batch, _max_diff, _set_mesh

  config = tiny_dinosr()
  method = methods.get_method("dinosr")
  mc = method.check(config)
  init = method.boxed_init_fn(mc, config, (1, config.data.crop_samples), 0)
  optimizer = make_optimizer(config.optim, 10, method.frozen_params)
  schedule = learning_rate_schedule(config.optim, 10)
  make_step = lambda: make_train_step(
      method.loss_fn(mc, config), optimizer, schedule,
      update_params=method.param_update_fn(mc, config),
  )
  state = TrainState.create(nn.meta.unbox(jax.jit(init)()), optimizer, jax.random.key(2))
  batch = _batch(config)
  ref, ref_metrics = jax.jit(make_step())(state, batch)
  _set_mesh(config, 2, 2, 2)
  mesh = mesh_lib.make_mesh(config.parallel)
  rules = rules_lib.rules_from_config(config.parallel)
  boxed_state = jax.eval_shape(lambda: TrainState.create(init(), optimizer, jax.random.key(2)))
  shardings = rules_lib.tree_shardings(boxed_state, mesh, rules)
  batch_sharding = rules_lib.batch_sharding(mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    new, metrics = jax.jit(
        make_step(), in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None)
    )(jax.device_put(state, shardings), jax.device_put(batch, batch_sharding))
  p, q = jax.device_get(new.params["params"]), jax.device_get(ref.params["params"])
  split = [
      s for s in jax.tree.leaves(shardings.params, is_leaf=lambda s: hasattr(s, "spec"))
      if any(a is not None for a in s.spec)
  ]
  out_file.write_text(json.dumps({
      "loss_diff": abs(float(metrics["loss"]) - float(ref_metrics["loss"])),
      "diffs": {k: _max_diff(p[k], q[k]) for k in p},
      "sharded_leaves": len(split),
  }))


def test_sharded_train_step_equals_single_device(tmp_path):
  out = tmp_path / "sharded.json"
  env = dict(
      os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
  )
  proc = subprocess.run(
      [sys.executable, __file__, "sharded", str(out)],
      env=env, capture_output=True, text=True, timeout=600, cwd=HERE,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  r = json.loads(out.read_text())
  assert r["loss_diff"] < 1e-5, r
  assert r["sharded_leaves"] > 0
  for name, diff in r["diffs"].items():  # Teacher, codebooks, student, heads after one step.
    assert diff < 1e-5, (name, r)


# --- (g) TPU compile, (h) config checks ---------------------------------------------------


def test_train_step_compiles_for_tpu():
  from test_tpu_plan import _require_libtpu

  _require_libtpu()
  from jaxdisco.parallel import plan as plan_lib
  from jaxdisco.parallel import tpu

  p = plan_lib.make_plan(tiny_dinosr(), tpu.topology("v5p-8"), programs=("train",), say=None)
  assert p.method == "dinosr" and p.mesh_shape["data"] == 4
  assert p.train.compiled and p.train.temporaries > 0 and p.fits


@pytest.mark.parametrize(
    "field, value",
    [
        ("average_top_k_layers", 3),  # The tiny model has 2 layers.
        ("average_top_k_layers", 0),
        ("codebook_size", 1),
        ("codebook_decay", 0.0),
        ("ema_decay", 1.5),
        ("ema_end_decay", 0.0),
        ("dead_code_patience", -1),
        ("codebook_init_scale", 0.0),
    ],
)
def test_config_checks_name_the_field(field, value):
  with pytest.raises(ConfigError, match=f"objective.{field}"):
    methods.check_config(tiny_dinosr(**{field: value}))


def test_method_declaration():
  m = methods.get_method("dinosr")
  assert m.unit_kinds == ("dinosr", "kmeans") and m.hf_model_type is None
  assert set(m.frozen_params) >= {"teacher", "codebooks", "codebook_counts"}
  methods.check_config(tiny_dinosr())


if __name__ == "__main__":
  sys.path.insert(0, str(HERE))
  import conftest  # noqa: F401,E402  (shared compilation cache)

  if sys.argv[1] == "sharded":
    _sharded_worker(pathlib.Path(sys.argv[2]))
