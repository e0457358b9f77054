"""The Pallas flash-attention path for TPU (`models/tpu_attention.py`): values and gradients
against XLA's attention in Pallas' TPU interpret mode on CPU, with padding; `auto` choosing it
when compiling for a TPU; a backbone's forward and backward compiling for a TPU slice with the
kernel partitioned over the batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from conftest import tiny_model_config
from jaxdisco.models.transformer import SelfAttention, attention_implementation
from jaxdisco.parallel import tpu


def _require_libtpu():
  if not tpu.libtpu_available():
    pytest.skip("libtpu is not installed (pip install 'jaxdisco[tpu]')")


def test_pallas_attention_matches_xla_values_and_gradients_with_padding():
  from jax.experimental.pallas import tpu as pltpu

  rng = np.random.default_rng(0)
  b, t, dim, heads = 2, 200, 32, 2  # 200 frames: padded to two 128-frame blocks.
  x = jnp.asarray(rng.standard_normal((b, t, dim)), jnp.float32)
  key_valid = jnp.arange(t)[None] < jnp.asarray([t, 137])[:, None]
  xla = SelfAttention(num_heads=heads, implementation="xla")
  pallas = SelfAttention(num_heads=heads, implementation="pallas")
  params = nn.meta.unbox(xla.init(jax.random.key(0), x, key_valid, True))
  weights = jnp.asarray(rng.standard_normal((b, t, dim)), jnp.float32) * key_valid[..., None]

  def loss(module):
    return lambda p, x: jnp.sum(module.apply(p, x, key_valid, True) * weights)

  with jax.default_matmul_precision("highest"):
    want = xla.apply(params, x, key_valid, True)
    want_grads = jax.grad(loss(xla), argnums=(0, 1))(params, x)
    with pltpu.force_tpu_interpret_mode():
      got = jax.jit(lambda p, x: pallas.apply(p, x, key_valid, True))(params, x)
      got_grads = jax.jit(jax.grad(loss(pallas), argnums=(0, 1)))(params, x)
  valid = np.asarray(key_valid)[..., None]
  np.testing.assert_allclose(np.asarray(got) * valid, np.asarray(want) * valid, atol=2e-5)
  for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=2e-5)


def _mesh(topology):
  devices = np.asarray(topology.devices()).reshape(topology.num_chips, 1, 1)
  return jax.sharding.Mesh(devices, ("data", "fsdp", "tensor"))


def test_auto_takes_pallas_when_compiling_for_tpu_and_xla_with_dropout():
  _require_libtpu()
  assert attention_implementation("auto", jnp.float32, False) == "xla"  # This CPU machine.
  with jax.set_mesh(_mesh(tpu.topology("v5e-4"))):
    assert attention_implementation("auto", jnp.float32, False) == "pallas"
    assert attention_implementation("auto", jnp.bfloat16, True) == "xla"  # Dropout on probs.


def test_backbone_forward_and_backward_compile_for_tpu_with_the_kernel():
  _require_libtpu()
  from jax.sharding import NamedSharding, PartitionSpec

  from jaxdisco.models.wav2vec2 import Wav2Vec2Backbone
  from jaxdisco.parallel.rules import DEFAULT_RULES

  topology = tpu.topology("v5e-4")
  mesh = _mesh(topology)
  cfg = tiny_model_config(attention="auto", attention_dropout=0.0, dtype="bfloat16")
  model = Wav2Vec2Backbone(cfg)
  wav = jax.ShapeDtypeStruct((8, 16000), jnp.float32)
  with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
    params = jax.eval_shape(lambda: nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, 16000)))))

    def loss(p, w, pad):
      out = model.apply(p, w, pad, None, deterministic=True)
      return jnp.sum(out.last_hidden_state.astype(jnp.float32) ** 2)

    rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    step = jax.jit(jax.value_and_grad(loss), in_shardings=(None, rows, rows))
    compiled = step.lower(params, wav, jax.ShapeDtypeStruct((8, 16000), jnp.bool_)).compile()
  text = compiled.as_text()
  assert "tpu_custom_call" in text  # The Mosaic kernel, forward and backward, per shard.
