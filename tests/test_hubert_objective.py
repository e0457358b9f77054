"""HuBERT model heads and objective against the reference's formulation (written in torch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxdisco.models.hubert import HubertForPretraining
from jaxdisco.objectives.hubert import (
    check_label_length,
    cosine_logits,
    frame_labels,
    hubert_loss,
)

from conftest import tiny_model_config


def _reference_masked_loss(proj, embeddings, labels, weights, temperature):
  """The reference's construction: [positive; all classes with the positive at -inf],
  cross-entropy with target 0, summed over weighted frames."""
  torch = pytest.importorskip("torch")
  x = torch.tensor(np.asarray(proj)).reshape(-1, proj.shape[-1])
  y = torch.tensor(np.asarray(labels)).reshape(-1)
  keep = torch.tensor(np.asarray(weights)).reshape(-1).bool()
  x, y = x[keep], y[keep]
  embs = torch.tensor(np.asarray(embeddings))
  pos = embs[y]
  negs = embs.unsqueeze(1).expand(-1, x.shape[0], -1)
  neg_is_pos = (pos == negs).all(-1)
  targets = torch.cat([pos.unsqueeze(0), negs], 0)
  logits = torch.cosine_similarity(x.float(), targets.float(), dim=-1) / temperature
  logits[1:][neg_is_pos] = float("-inf")
  logits = logits.transpose(0, 1)
  return float(
      torch.nn.functional.cross_entropy(
          logits, torch.zeros(len(x), dtype=torch.long), reduction="sum"
      )
  )


def test_masked_prediction_loss_equals_reference_construction():
  k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
  proj = jax.random.normal(k1, (2, 30, 16))
  embeddings = jax.random.uniform(k2, (12, 16))
  labels = jax.random.randint(k3, (2, 30), 0, 12)
  mask = jax.random.bernoulli(k4, 0.5, (2, 30))
  valid = jnp.arange(30)[None] < jnp.array([[30], [22]])
  logits = cosine_logits(proj, embeddings, 0.1)[None]
  terms = hubert_loss(
      logits, labels[None], mask, valid, jnp.float32(0.3), feature_penalty_weight=10.0
  )
  expected = _reference_masked_loss(proj, embeddings, labels, mask & valid, 0.1)
  np.testing.assert_allclose(terms.masked_loss, expected, rtol=1e-5)
  n = float((mask & valid).sum())
  np.testing.assert_allclose(terms.loss, (expected + 10.0 * 0.3 * n) / n, rtol=1e-5)
  unmasked = _reference_masked_loss(proj, embeddings, labels, ~mask & valid, 0.1)
  np.testing.assert_allclose(terms.unmasked_loss, unmasked, rtol=1e-5)


def test_labels_align_to_frames():
  labels = jnp.arange(20)[None]
  np.testing.assert_array_equal(frame_labels(labels, 10, 100.0), jnp.arange(0, 20, 2)[None])
  np.testing.assert_array_equal(frame_labels(labels, 20, 50.0), labels)
  check_label_length(99, 49, 100.0)  # one frame of slack either way
  with pytest.raises(ValueError, match="audio and label duration differ"):
    check_label_length(60, 49, 100.0, where="train.km:3")


def test_untied_heads_per_label_set():
  cfg = tiny_model_config(num_layers=1, final_dim=8)
  model = HubertForPretraining(cfg, num_classes=(5, 7))
  wav = jnp.zeros((2, 4000))
  frames = cfg.num_frames(4000)
  variables = model.init({"params": jax.random.key(0)}, wav, None, jnp.zeros((2, frames), bool))
  params = nn.meta.unbox(variables)
  assert params["params"]["label_embeddings"].shape == (12, 8)
  assert params["params"]["final_proj"]["kernel"].shape == (16, 16)
  # Under jit too: the split points of the label embeddings must be static.
  out = jax.jit(model.apply)(params, wav, None, jnp.zeros((2, frames), bool))
  assert [p.shape for p in out.projections] == [(2, frames, 8)] * 2
  assert [e.shape for e in out.label_embeddings] == [(5, 8), (7, 8)]
