"""wav2vec 2.0 objective: contrastive loss over masked frames + diversity + feature penalty."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

Array = jax.Array

# The reference fills logits of negatives identical to the positive with -inf; on XLA it uses
# this large finite value so that no NaN can appear in the softmax or its gradient.
NEG_IS_POS_LOGIT = -float(2**30)


def _unit(x: Array, eps: float = 1e-8) -> Array:
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def contrastive_logits(
    context: Array,
    targets: Array,
    codes: Array,
    negatives: Array,
    temperature: float,
    cross_negatives: Optional[Array] = None,
) -> Array:
  """Cosine-similarity logits [batch, frames, 1 + K] with the positive at index 0.

  context, targets: [batch, frames, dim]; codes: [batch, frames, groups] (a negative whose
  codes equal the positive's is the positive's vector and gets NEG_IS_POS_LOGIT);
  negatives: [batch, frames, K] frame indices within the same utterance;
  cross_negatives: optional [batch, frames, Kc] indices into the flattened batch.

  Within-utterance negatives are read from the [batch, frames, frames] similarity matrix, a
  dense matmul, instead of gathering K target vectors per frame.
  """
  c, q = _unit(context), _unit(targets)
  sim = jnp.einsum("btd,bsd->bts", c, q)  # [batch, frames, frames]
  positive = jnp.diagonal(sim, axis1=1, axis2=2)[..., None]
  negative = jnp.take_along_axis(sim, negatives, axis=-1)
  neg_codes = jnp.take_along_axis(codes[:, None, :, :], negatives[..., None], axis=2)
  neg_is_pos = jnp.all(neg_codes == codes[:, :, None, :], axis=-1)
  if cross_negatives is not None:
    b, t, g = codes.shape
    cross_q = q.reshape(b * t, -1)[cross_negatives]  # [batch, frames, Kc, dim]
    negative = jnp.concatenate([negative, jnp.einsum("btd,btkd->btk", c, cross_q)], axis=-1)
    cross_codes = codes.reshape(b * t, g)[cross_negatives]
    neg_is_pos = jnp.concatenate(
        [neg_is_pos, jnp.all(cross_codes == codes[:, :, None, :], axis=-1)], axis=-1
    )
  logits = jnp.concatenate([positive, negative], axis=-1) / temperature
  return logits.at[..., 1:].set(jnp.where(neg_is_pos, NEG_IS_POS_LOGIT, logits[..., 1:]))


class Wav2Vec2LossTerms(NamedTuple):
  loss: Array  # per masked frame: (contrastive_sum + weighted extra terms * n) / n
  contrastive_loss: Array  # summed over masked frames (nats)
  diversity_loss: Array  # (G*V - prob_perplexity) / (G*V), per frame
  feature_penalty: Array
  num_masked: Array
  accuracy: Array
  logits: Array


def wav2vec2_loss(
    logits: Array,
    weights: Array,
    prob_perplexity: Array,
    num_codevectors: int,
    feature_penalty: Array,
    *,
    diversity_weight: float = 0.1,
    feature_penalty_weight: float = 10.0,
) -> Wav2Vec2LossTerms:
  """The reference's pretraining loss.

  logits: [batch, frames, 1 + K]; weights: [batch, frames] masked and non-padded frames.
  Loss = sum of cross-entropies (target 0) + n * (w_div * diversity + w_fp * feature_penalty),
  n = number of masked frames; the returned `loss` is divided by n, which is how the reference
  normalises gradients (it divides by the sample size).
  """
  logits = logits.astype(jnp.float32)
  w = weights.astype(jnp.float32)
  n = jnp.maximum(w.sum(), 1.0)
  nll = jax.nn.logsumexp(logits, axis=-1) - logits[..., 0]
  contrastive = jnp.sum(nll * w)
  diversity = (num_codevectors - prob_perplexity) / num_codevectors
  total = contrastive + n * (
      diversity_weight * diversity + feature_penalty_weight * feature_penalty
  )
  # Accuracy as the reference counts it: argmax is the positive, and not all logits tied.
  best, worst = jnp.argmax(logits, -1), jnp.argmin(logits, -1)
  correct = (best == 0) & (best != worst)
  accuracy = jnp.sum(correct * w) / n
  return Wav2Vec2LossTerms(
      total / n, contrastive, diversity, feature_penalty, w.sum(), accuracy, logits
  )
