"""Gumbel quantizer and contrastive objective: golden values and gradient behaviour."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdisco.objectives.contrastive import NEG_IS_POS_LOGIT, contrastive_logits, wav2vec2_loss
from jaxdisco.quantizers.gumbel import gumbel_quantize, gumbel_temperature, perplexity


def test_temperature_schedule():
  assert float(gumbel_temperature(0, 2.0, 0.5, 0.999995)) == 2.0
  np.testing.assert_allclose(
      gumbel_temperature(100_000, 2.0, 0.5, 0.999995), 2.0 * 0.999995**100_000, rtol=1e-5
  )
  assert float(gumbel_temperature(10_000_000, 2.0, 0.5, 0.999995)) == 0.5


def test_perplexity_golden_values():
  uniform = jnp.full((10, 2, 4), 0.25)
  np.testing.assert_allclose(perplexity(uniform), 8.0, rtol=1e-5)  # G * V when uniform
  one_code = jax.nn.one_hot(jnp.zeros((10, 2), int), 4)
  np.testing.assert_allclose(perplexity(one_code), 2.0, rtol=1e-4)  # collapse value G
  weights = jnp.array([1.0] * 5 + [0.0] * 5)
  half = jnp.concatenate([one_code[:5], uniform[5:]])
  np.testing.assert_allclose(perplexity(half, weights), 2.0, rtol=1e-4)  # weighted-out rows ignored


def test_hard_gumbel_is_one_hot_forward_with_soft_gradients():
  logits = jax.random.normal(jax.random.key(0), (6, 2, 5))
  weights, codes = gumbel_quantize(logits, jax.random.key(1), 1.0)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(jnp.max(weights, -1), 1.0, atol=1e-6)
  grad = jax.grad(
      lambda l: jnp.sum(gumbel_quantize(l, jax.random.key(1), 1.0)[0] * jnp.arange(5.0))
  )(logits)
  assert float(jnp.abs(grad).sum()) > 0  # straight-through: gradient reaches the logits
  det, det_codes = gumbel_quantize(logits, None, 1.0)
  np.testing.assert_array_equal(det_codes, jnp.argmax(logits, -1))


def test_contrastive_logits_golden_and_neg_is_pos():
  context = jnp.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
  targets = jnp.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]]])
  codes = jnp.array([[[0], [0], [1]]])  # frames 0 and 1 share a code
  negatives = jnp.array([[[1, 2], [0, 2], [0, 1]]])
  logits = contrastive_logits(context, targets, codes, negatives, 0.5)
  s = 1 / np.sqrt(2)
  expected = np.array([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [s, s, s]]]) / 0.5
  expected[0, 0, 1] = NEG_IS_POS_LOGIT  # frame 1 has frame 0's code
  expected[0, 1, 1] = NEG_IS_POS_LOGIT
  np.testing.assert_allclose(logits, expected, rtol=1e-6)


def test_loss_terms_golden():
  logits = jnp.array([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
  weights = jnp.array([[True, True]])
  terms = wav2vec2_loss(
      logits,
      weights,
      jnp.float32(6.0),
      8,
      jnp.float32(0.5),
      diversity_weight=0.1,
      feature_penalty_weight=10.0,
  )
  ce = [np.log(np.exp(2) + 2) - 2, np.log(np.e + 2)]
  np.testing.assert_allclose(terms.contrastive_loss, sum(ce), rtol=1e-6)
  np.testing.assert_allclose(terms.diversity_loss, (8 - 6) / 8, rtol=1e-6)
  np.testing.assert_allclose(terms.loss, (sum(ce) + 2 * (0.1 * 0.25 + 10 * 0.5)) / 2, rtol=1e-6)
  np.testing.assert_allclose(terms.accuracy, 0.5)
