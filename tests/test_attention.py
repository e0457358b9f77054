"""Self-attention kernels: XLA's against a float64 reference, cuDNN's against XLA's (GPU only),
the `model.attention` setting's checks, and tokenizer programs that stay backend-neutral."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxdisco.export import tokenizer, unit_kinds
from jaxdisco.models.config import ModelConfig
from jaxdisco.models.transformer import SelfAttention, attention_implementation
from jaxdisco.models.wav2vec2 import Wav2Vec2Backbone

from conftest import tiny_model_config

CUDNN_CALL = "cudnn$fmha"  # Custom-call target of cuDNN's fused attention.
on_gpu = pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU")


def _inputs(batch: int, frames: int, dim: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, frames, dim)).astype(np.float32)
  lengths = np.array([frames] + [frames - 3 - i for i in range(batch - 1)])
  key_valid = np.arange(frames)[None] < lengths[:, None]
  return x, key_valid


def _reference(params, x, key_valid, num_heads):
  """float64 softmax(QK^T / sqrt(d)) V over the valid keys, then the output projection."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  b, t, dim = x.shape
  proj = lambda name: (x @ p[name]["kernel"] + p[name]["bias"]).reshape(b, t, num_heads, -1)
  q, k, v = proj("query"), proj("key"), proj("value")
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dim // num_heads)
  logits = np.where(key_valid[:, None, None, :], logits, -np.inf)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  out = np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, dim)
  return out @ p["out"]["kernel"] + p["out"]["bias"]


@pytest.mark.parametrize("dropout, deterministic", [(0.0, False), (0.1, True)])
def test_xla_attention_matches_float64_reference_with_padding(dropout, deterministic):
  x, key_valid = _inputs(3, 11, 16)
  module = SelfAttention(num_heads=2, dropout=dropout, implementation="xla")
  params = nn.meta.unbox(module.init(jax.random.key(0), x, key_valid, True)["params"])
  with jax.default_matmul_precision("highest"):  # GPUs default to reduced-precision f32 dots.
    out = module.apply({"params": params}, x, key_valid, deterministic)
  want = _reference(params, x.astype(np.float64), key_valid, 2)
  np.testing.assert_allclose(np.asarray(out), want, rtol=2e-5, atol=2e-5)


def test_auto_picks_cudnn_only_where_it_runs():
  gpu = jax.default_backend() == "gpu"
  assert attention_implementation("auto", jnp.bfloat16, False) == ("cudnn" if gpu else "xla")
  assert attention_implementation("auto", jnp.float32, False) == "xla"
  assert attention_implementation("auto", jnp.bfloat16, True) == "xla"  # Dropout on probs.
  assert attention_implementation("xla", jnp.bfloat16, False) == "xla"


def test_attention_setting_is_checked():
  with pytest.raises(ValueError, match="model.attention: expected 'auto', 'xla', 'cudnn' or 'pallas'"):
    ModelConfig(attention="flash")
  with pytest.raises(ValueError, match="model.attention='cudnn' needs model.dtype='bfloat16'"):
    ModelConfig(attention="cudnn", attention_dropout=0.0)
  with pytest.raises(ValueError, match="attention_dropout=0"):
    ModelConfig(attention="cudnn", dtype="bfloat16")


def test_tokenizer_program_uses_xla_attention_whatever_the_model_config():
  """A bf16 model set to cuDNN attention still exports a program any backend runs: tracing
  the cuDNN kernel for this (CPU) backend would fail."""
  cfg = tiny_model_config(dtype="bfloat16", attention="cudnn", attention_dropout=0.0)
  init_cfg = dataclasses.replace(cfg, attention="xla")  # Parameters do not depend on it.
  backbone = Wav2Vec2Backbone(init_cfg).init(jax.random.key(0), np.zeros((1, 4000), np.float32))
  backbone = nn.meta.unbox(backbone)
  spec = unit_kinds.TokenizerSpec(kind="kmeans", config=cfg, layer=1, normalize=True)
  weights = {
      "encoder": unit_kinds.flatten(backbone["params"]),
      "quantizer": {"centroids": np.eye(4, cfg.embed_dim, dtype=np.float32)},
  }
  program = jax.export.deserialize(tokenizer.serialize_program(spec, weights, 4000))
  assert CUDNN_CALL not in program.mlir_module()
  wav = np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32)
  ids = program.call(weights, wav, np.zeros_like(wav, bool))
  assert ids.shape == (2, cfg.num_frames(4000)) and int(ids.min()) >= 0


@on_gpu
def test_cudnn_attention_matches_xla_in_bfloat16():
  x, key_valid = _inputs(4, 390, 128, seed=1)
  outs, grads = {}, {}
  for kernel in ("xla", "cudnn"):
    module = SelfAttention(num_heads=2, dtype=jnp.bfloat16, implementation=kernel)
    params = nn.meta.unbox(module.init(jax.random.key(0), x, key_valid, True)["params"])

    def loss(params, x):
      y = module.apply({"params": params}, x, key_valid, True).astype(jnp.float32)
      return jnp.sum(jnp.where(key_valid[..., None], y, 0.0) ** 2), y

    (_, outs[kernel]), grads[kernel] = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(
        params, x
    )
    text = jax.jit(loss).lower(params, x).as_text()
    assert (CUDNN_CALL in text) == (kernel == "cudnn")
  rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
  valid = key_valid[..., None]
  assert rel(jnp.where(valid, outs["cudnn"], 0), jnp.where(valid, outs["xla"], 0)) < 1e-2
  # All gradients as one vector: the key bias's is 0 in exact arithmetic (softmax ignores a
  # per-query constant), so alone it is rounding noise of either kernel.
  flat = lambda g: jnp.concatenate([a.astype(jnp.float32).ravel() for a in jax.tree.leaves(g)])
  assert rel(flat(grads["cudnn"]), flat(grads["xla"])) < 2e-2
  assert rel(grads["cudnn"][1], grads["xla"][1]) < 2e-2  # Input gradient.


@on_gpu
def test_bfloat16_backbone_with_cudnn_matches_xla():
  cfg = tiny_model_config(embed_dim=128, dtype="bfloat16", attention_dropout=0.0)
  wav = np.random.default_rng(2).standard_normal((2, 16000)).astype(np.float32)
  pad = np.zeros_like(wav, bool)
  pad[1, 11000:] = True
  variables = Wav2Vec2Backbone(dataclasses.replace(cfg, attention="xla")).init(
      jax.random.key(0), wav
  )
  out = {}
  for kernel in ("xla", "cudnn"):
    model = Wav2Vec2Backbone(dataclasses.replace(cfg, attention=kernel))
    out[kernel] = jax.jit(lambda v, w, p: model.apply(v, w, p).hidden_states[-1])(
        variables, wav, pad
    ).astype(jnp.float32)
  frames = out["xla"].shape[1]
  valid = np.arange(frames)[None] < np.array([[frames], [cfg.num_frames(11000)]])
  a, b = np.where(valid[..., None], out["cudnn"], 0), np.where(valid[..., None], out["xla"], 0)
  assert np.linalg.norm(a - b) / np.linalg.norm(b) < 2e-2


def test_cudnn_padding_and_lengths_match_the_mask(monkeypatch):
  """`cudnn_attention`'s frame padding and key lengths, run through XLA's kernel (which takes
  the same lengths) on CPU, equal masked attention on the unpadded frames."""
  from jaxdisco.models import transformer

  real = jax.nn.dot_product_attention
  monkeypatch.setattr(
      transformer.jax.nn,
      "dot_product_attention",
      lambda *a, implementation=None, **kw: real(*a, implementation="xla", **kw),
  )
  rng = np.random.default_rng(3)
  q, k, v = (rng.standard_normal((3, 70, 2, 8)).astype(np.float32) for _ in range(3))
  _, key_valid = _inputs(3, 70, 1)
  with jax.default_matmul_precision("highest"):
    got = transformer.cudnn_attention(q, k, v, key_valid)
    want = real(q, k, v, mask=key_valid[:, None, None, :], implementation="xla")
  assert got.shape == want.shape == (3, 70, 2, 8)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_checkpoints_resume_across_the_attention_kernel():
  """`model.attention` changes no parameter: a checkpoint written with another kernel, or before
  the field existed, still resumes; a field that changes the model is still refused."""
  from jaxdisco.train.checkpoint import CheckpointMismatchError, check_compatible

  current = {"model": ModelConfig(attention="xla").to_dict()}
  before_the_field = {"model": {k: v for k, v in current["model"].items() if k != "attention"}}
  check_compatible(before_the_field, current, "ckpt")
  check_compatible({"model": ModelConfig(attention="auto").to_dict()}, current, "ckpt")
  with pytest.raises(CheckpointMismatchError, match="model.ffn_dim"):
    check_compatible({"model": ModelConfig(ffn_dim=1024).to_dict()}, current, "ckpt")
