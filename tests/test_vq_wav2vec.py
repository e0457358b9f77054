"""vq-wav2vec: model shapes, k-means VQ and future-prediction loss against numpy references,
the accuracy convention, discrete codes, both recipe configs training at tiny size, and both
demo configs learning on the demo corpus (accuracy up, no code collapse)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from conftest import load_config
from jaxdisco.models.vq_wav2vec_codes import codes_to_ids, vq_wav2vec_codes
from jaxdisco.models.vq_wav2vec_config import VqWav2VecConfig
from jaxdisco.models.wav2vec1 import VqWav2Vec
from jaxdisco.objectives.future_prediction import (
    binary_contrastive_loss,
    future_logits,
    target_weights,
)
from jaxdisco.quantizers.kmeans_vq import KmeansQuantizer, dead_code_fraction
from jaxdisco.train.checkpoint import load_pretrained_params
from jaxdisco.errors import ConfigError
from jaxdisco.methods import check_config
from jaxdisco.train.metrics import read_metrics
from jaxdisco.train.pretrain import train_and_evaluate

TINY_ENCODER = "[(32, 10, 5), (32, 8, 4), (32, 4, 2), (32, 4, 2), (32, 4, 2), (32, 1, 1)]"
TINY_AGGREGATOR = "[(32, 2, 1), (32, 3, 1), (32, 4, 1)]"


def tiny_model(vq_type: str, **overrides) -> VqWav2VecConfig:
  values = dict(
      encoder_layers=TINY_ENCODER,
      aggregator_layers=TINY_AGGREGATOR,
      vq_type=vq_type,
      vq_vars=16,
      prediction_steps=4,
  )
  return VqWav2VecConfig(**{**values, **overrides})


def test_published_sizes():
  cfg = VqWav2VecConfig()
  assert (cfg.frame_stride, cfg.receptive_field, cfg.prediction_offset) == (160, 465, 3)
  assert cfg.num_frames(16000) == 98
  params = jax.eval_shape(lambda: VqWav2Vec(cfg).init(jax.random.key(0), jnp.zeros((1, 4000))))
  # Encoder 8 x 512 convs, 12 causal aggregator convs with bias, gumbel MLP 512-1024-640,
  # 320 x 256 shared codebook, 12 step projections 512 x 512.
  assert sum(x.size for x in jax.tree.leaves(params)) == 34_063_488


@pytest.mark.parametrize("vq_type", ["gumbel", "kmeans"])
def test_shapes_codes_and_padding(vq_type):
  cfg = tiny_model(vq_type)
  model = VqWav2Vec(cfg)
  wav = jax.random.normal(jax.random.key(0), (2, 8000))
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(1), wav))
  out = jax.jit(functools.partial(model.apply, temperature=2.0))(
      params, wav, None, gumbel_key=jax.random.key(2)
  )
  frames = cfg.num_frames(8000)
  assert out.predictions.shape == (2, frames, 4, 32)
  assert out.targets.shape == (2, frames, 32)
  assert out.codes.shape == (2, frames, 2) and out.codes.dtype == jnp.int32
  assert 2.0 <= float(out.code_perplexity) <= 32.0
  codes_fn = jax.jit(functools.partial(vq_wav2vec_codes, cfg))
  codes = codes_fn(params, wav, None)
  assert codes.shape == (2, frames, 2) and int(codes.max()) < 16
  # Padding the second row (with garbage) changes nothing in its valid frames.
  padded = jnp.concatenate([wav, jnp.zeros((2, 1600))], axis=1).at[1, 8000:].set(5.0)
  pad_mask = jnp.arange(9600)[None] >= jnp.array([[9600], [8000]])
  codes_padded = codes_fn(params, padded, pad_mask)
  np.testing.assert_array_equal(codes_padded[1, :frames], codes[1])


def test_codes_to_ids():
  codes = np.array([[[0, 0], [0, 319], [1, 0], [319, 319]]])
  np.testing.assert_array_equal(codes_to_ids(codes, 320), [[0, 319, 320, 320 * 320 - 1]])
  ids = codes_to_ids(jnp.asarray(codes, jnp.int32), 320)
  np.testing.assert_array_equal(ids, [[0, 319, 320, 102399]])


def test_kmeans_vq_straight_through_and_loss_terms():
  """Against a hand-computed numpy reference: nearest codes, z_q, both loss terms, and the
  gradients (straight-through to z_e, codebook pulled toward z_e, commitment toward z_q)."""
  quantizer = KmeansQuantizer(num_vars=4, num_groups=2, combine_groups=True, gamma=0.25)
  x = jax.random.normal(jax.random.key(0), (2, 5, 6))
  weights = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  p = nn.meta.unbox(quantizer.init(jax.random.key(1), x, weights))["params"]
  codebook = np.asarray(jax.random.normal(jax.random.key(2), (1, 4, 3)))
  p = {**p, "codebook": jnp.asarray(codebook)}
  out = quantizer.apply({"params": p}, x, weights)

  # Reference z_e: grouped projection, then group norm over (group channels x valid frames).
  xn, w = np.asarray(x, np.float64), np.asarray(weights)
  kernel = np.asarray(p["projection"], np.float64)
  z = np.einsum("btgi,gio->btgo", xn.reshape(2, 5, 2, 3), kernel)
  for b in range(2):
    for g in range(2):
      vals = z[b, w[b], g]
      z[b, :, g] = (z[b, :, g] - vals.mean()) / np.sqrt(vals.var() + 1e-5)
  z = z * np.asarray(p["norm"]["scale"]).reshape(2, 3) + np.asarray(p["norm"]["bias"]).reshape(2, 3)
  dist = ((z[:, :, :, None, :] - codebook[0][None, None, None]) ** 2).sum(-1)
  codes = dist.argmin(-1)
  np.testing.assert_array_equal(out.codes, codes)
  z_q = codebook[0][codes]  # [b, t, g, 3]
  np.testing.assert_allclose(out.quantized, z_q.reshape(2, 5, 6), atol=1e-5)
  mse = ((z_q - z) ** 2).sum((-1, -2))[w].sum() / (w.sum() * 6)
  np.testing.assert_allclose(out.codebook_loss, mse, rtol=1e-4)
  np.testing.assert_allclose(out.commitment_loss, mse, rtol=1e-4)
  np.testing.assert_allclose(out.loss, 1.25 * mse, rtol=1e-4)
  used = {(g, c) for g in range(2) for c in codes[..., g][w]}
  np.testing.assert_allclose(out.dead_code_fraction, 1 - len(used) / 8)

  # Gradients through a probe on the output: straight-through means d/dz_e = probe.
  probe = jax.random.normal(jax.random.key(3), (2, 5, 6))

  def through_output(codebook_param):
    q = quantizer.apply({"params": {**p, "codebook": codebook_param}}, x, weights)
    return jnp.sum(q.quantized * probe), q

  grad_out = jax.grad(lambda c: through_output(c)[0])(p["codebook"])
  np.testing.assert_allclose(grad_out, 0.0, atol=1e-6)  # Forward z_q: no codebook gradient.

  def through_norm_bias(bias):  # z_e = normalised * scale + bias: d/dbias = sum of d/dz_e.
    params = {**p, "norm": {**p["norm"], "bias": bias}}
    return jnp.sum(quantizer.apply({"params": params}, x, weights).quantized * probe)

  ze_grad = jax.grad(through_norm_bias)(p["norm"]["bias"])
  np.testing.assert_allclose(ze_grad, np.asarray(probe).sum((0, 1)), rtol=1e-5)
  # Codebook loss gradient: 2 (z_q - z_e) / N summed over the frames that picked each entry.
  grad_codebook = jax.grad(
      lambda c: quantizer.apply({"params": {**p, "codebook": c}}, x, weights).codebook_loss
  )(p["codebook"])
  expected = np.zeros((4, 3))
  for b, t, g in zip(*np.nonzero(np.broadcast_to(w[:, :, None], codes.shape))):
    expected[codes[b, t, g]] += 2 * (z_q[b, t, g] - z[b, t, g]) / (w.sum() * 6)
  np.testing.assert_allclose(grad_codebook[0], expected, atol=1e-5)
  # The commitment term reaches z_e only: the codebook gets no gradient from it.
  grad_commit = jax.grad(
      lambda c: quantizer.apply({"params": {**p, "codebook": c}}, x, weights).commitment_loss
  )(p["codebook"])
  np.testing.assert_allclose(grad_commit, 0.0, atol=1e-7)


def test_dead_code_fraction():
  codes = jnp.array([[[0, 1], [0, 2], [3, 1]]])
  np.testing.assert_allclose(dead_code_fraction(codes, 4), 1 - 4 / 8)  # {0, 3} and {1, 2}
  weights = jnp.array([[True, True, False]])
  np.testing.assert_allclose(dead_code_fraction(codes, 4, weights), 1 - 3 / 8)


def _numpy_future_loss(pred, targets, negatives, lengths, offset):
  """Direct transcription of the reference's loop: BCE over every (step, frame) pair."""
  b, t, steps, _ = pred.shape
  total, pairs, correct = 0.0, 0, 0
  softplus = lambda v: np.log1p(np.exp(-abs(v))) + max(v, 0.0)
  for i in range(b):
    for s in range(steps):
      for ctx in range(t):
        u = ctx + offset + s
        if u >= lengths[i]:
          continue
        pos = pred[i, ctx, s] @ targets[i, u]
        negs = [pred[i, ctx, s] @ targets[i, j] for j in negatives[i, u]]
        total += softplus(-pos) + sum(softplus(n) for n in negs)
        pairs += 1
        correct += pos >= max(negs) and pos > min(negs)  # The reference's argmax/argmin.
  return total / pairs, pairs, correct / pairs


def test_future_prediction_loss_matches_numpy_reference():
  rng = np.random.default_rng(0)
  b, t, steps, dim, k, offset = 2, 11, 3, 5, 4, 2
  pred = rng.standard_normal((b, t, steps, dim)).astype(np.float32)
  targets = rng.standard_normal((b, t, dim)).astype(np.float32)
  negatives = rng.integers(0, t, (b, t, k)).astype(np.int32)
  lengths = np.array([11, 8])
  valid = np.arange(t)[None] < lengths[:, None]
  logits, in_range = future_logits(jnp.asarray(pred), jnp.asarray(targets), negatives, offset)
  assert logits.shape == (b, steps, t, 1 + k)
  weights = target_weights(jnp.asarray(valid), steps, offset)
  assert bool(jnp.all(weights <= in_range))
  terms = binary_contrastive_loss(logits, weights)
  loss, pairs, accuracy = _numpy_future_loss(pred, targets, negatives, lengths, offset)
  assert float(terms.num_pairs) == pairs == (9 + 8 + 7) + (6 + 5 + 4)
  np.testing.assert_allclose(terms.loss, loss, rtol=1e-5)
  np.testing.assert_allclose(terms.accuracy, accuracy, rtol=1e-6)


def test_accuracy_counts_ties_as_the_reference_does():
  """Repeated codes give distractors the positive's exact logit: a tie is a hit (the
  reference's argmax == 0), unless every candidate ties; `distinct_accuracy` ignores the tied
  distractors and skips pairs that have no other."""
  logits = jnp.array([[1.0, 1.0, 0.0, 0.5], [2.0, 2.0, 2.0, 2.0], [0.0, 1.0, 0.0, 0.0]])
  terms = binary_contrastive_loss(logits, jnp.ones(3))
  np.testing.assert_allclose(terms.accuracy, 1 / 3)
  np.testing.assert_allclose(terms.distinct_accuracy, 1 / 2)
  # InfoNCE: cross-entropy of the positive; a shift shared by all candidates changes nothing.
  infonce = binary_contrastive_loss(logits, jnp.ones(3), infonce=True)
  shifted = binary_contrastive_loss(logits + 5.0, jnp.ones(3), infonce=True)
  expected = -np.mean([np.log(np.exp(r[0]) / np.exp(r).sum()) for r in np.asarray(logits)])
  np.testing.assert_allclose(infonce.loss, expected, rtol=1e-6)
  np.testing.assert_allclose(shifted.loss, expected, rtol=1e-6)


def test_bad_config_names_the_field():
  config = load_config("vq_wav2vec_kmeans")
  config.model.vq_type = "lloyd"
  with pytest.raises(ConfigError, match=r"model\.vq_type"):
    check_config(config)
  config = load_config("vq_wav2vec_gumbel")
  config.data.min_samples = 400
  with pytest.raises(ConfigError, match=r"data\.min_samples"):
    check_config(config)


def shrink_vq_for_tests(config):
  """Tiny model and short run on the demo corpus (what `shrink_for_tests` is for wav2vec 2.0)."""
  demo = load_config("demo")
  m = config.model
  m.encoder_layers, m.aggregator_layers = TINY_ENCODER, TINY_AGGREGATOR
  m.vq_vars, m.prediction_steps = 16, 4
  d = config.data
  d.train_manifest, d.valid_manifest = demo.data.train_manifest, demo.data.valid_manifest
  d.crop_samples = d.min_samples = 8000
  d.batch_size, d.normalize = 4, True
  config.objective.gumbel_temperature = (2.0, 0.5, 0.99)
  config.optim.lr, config.optim.warmup_steps = 2e-3, 10
  config.train.log_every = 25
  config.train.checkpoint_every = config.train.eval_every = 10_000
  return config


REQUIRED_METRICS = ("loss", "accuracy", "code_perplexity", "dead_code_fraction", "prediction_loss")


@pytest.mark.parametrize("name", ["vq_wav2vec_gumbel", "vq_wav2vec_kmeans"])
def test_config_trains_on_demo_corpus(name, tmp_path):
  """Both shipped configs at tiny size through the trainer: metrics, checkpoint, codes."""
  config = shrink_vq_for_tests(load_config(name))
  config.train.num_steps = 50
  if name == "vq_wav2vec_gumbel":
    config.objective.quantizer_weight = 0.1  # See the README: tiny runs need the penalty.
  summary = train_and_evaluate(config, tmp_path)
  assert summary["step"] == 50
  rows = read_metrics(tmp_path)
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == [25, 50]
  for key in REQUIRED_METRICS:
    assert all(np.isfinite(r[key]) for r in train_rows), key
  assert all(0.0 <= r["dead_code_fraction"] <= 1.0 for r in train_rows)
  # Loss falls from chance, where every logit is 0: (1 + K) ln 2 = 7.62 nats.
  assert train_rows[-1]["prediction_loss"] < 0.6 * 11 * np.log(2), train_rows
  valid = [r for r in rows if "valid_loss" in r]
  assert valid and np.isfinite(valid[-1]["valid_code_perplexity"])
  if name == "vq_wav2vec_gumbel":  # Argmax codes stay far from collapse (2).
    assert all(r["code_perplexity"] > 4.0 for r in train_rows), train_rows
  method, model_config, params, step = load_pretrained_params(tmp_path)
  assert method == "vq_wav2vec" and step == 50 and model_config.vq_type == config.model.vq_type
  wav = np.random.default_rng(0).standard_normal((1, 8000)).astype(np.float32)
  codes = jax.jit(functools.partial(vq_wav2vec_codes, model_config))(params, wav, None)
  assert codes.shape == (1, model_config.num_frames(8000), 2)
  # The codes need only the encoder and quantizer (what a tokenizer export stores).
  parts = {"params": {k: params["params"][k] for k in ("encoder", "quantizer")}}
  np.testing.assert_array_equal(vq_wav2vec_codes(model_config, parts, wav), codes)


@pytest.mark.parametrize(
    "name, steps", [("vq_wav2vec_demo_kmeans", 150), ("vq_wav2vec_demo_gumbel", 250)]
)
def test_demo_config_learns(name, steps, tmp_path):
  """The shipped demo configs at their own size (0.2M parameters, batch 8 x 1 s), cut to the
  first 150 / 250 of their 1500 updates (the gumbel run starts learning once its temperature
  is below ~0.6, after ~140 updates): accuracy rises well above its first value and chance
  (1/11), the loss falls, and the codes stay clear of collapse (perplexity 2). With the
  recipe's binary loss these runs stay at accuracy 0.095 and the loss plateau 3.35."""
  config = load_config(name)
  config.train.num_steps = steps
  config.train.log_every = 25
  config.train.eval_every = config.train.checkpoint_every = steps
  train_and_evaluate(config, tmp_path)
  rows = read_metrics(tmp_path)
  train = {r["step"]: r for r in rows if "accuracy" in r}
  first, last = train[25], train[steps]
  assert last["distinct_accuracy"] > first["distinct_accuracy"] + 0.05, (first, last)
  assert last["distinct_accuracy"] > 1.8 / 11, last
  assert last["prediction_loss"] < first["prediction_loss"] - 0.05, (first, last)
  assert min(r["code_perplexity"] for r in train.values()) > 3.0, train
  assert last["code_perplexity"] > 4.0, last
  valid = [r for r in rows if "valid_accuracy" in r][-1]
  assert valid["valid_distinct_accuracy"] > 1.8 / 11 and valid["valid_code_perplexity"] > 4.0
