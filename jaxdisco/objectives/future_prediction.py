"""wav2vec 1.0 / vq-wav2vec objective: binary contrastive prediction of K future frames.

For step k = 0..K-1, the context frame t scores the target frame t + offset + k against
distractors by dot products (no normalisation, no temperature), and the loss is binary
cross-entropy: the positive labelled 1, every distractor 0, each with weight 1 (the reference's
`balanced_classes` is off). The sum runs over every (step, frame) pair whose target lies inside
the utterance; the returned loss is divided by the number of such pairs, which is how the
reference normalises (`sample_size` = number of positives). Distractors of target frame u are
frames of the same utterance other than u, drawn once per target frame and shared by every step
that predicts u, as the reference means to draw them. (Its `sample_negatives` shifts each draw
past the frame it was drawn for, then reshapes the draws in another order, so a distractor of u
is uniform over all frames, u itself included with probability ~1/frames:
tests/test_fairseq_parity.py measures it.)

With `infonce` (the reference's `--infonce`, which its wav2vec 1.0 model and criterion support)
each pair's loss is the cross-entropy of picking the positive among the 1 + K candidates
instead. Its gradient ignores a logit shift shared by all candidates, which the binary loss
does not: see `methods/vq_wav2vec.py` for why the demo configs use it.

Accuracy is counted as the reference's criterion does (`argmax == 0` and not `argmin == 0`):
the positive scores at least as high as every distractor, and not all candidates tie.
Quantized targets repeat, so a distractor with the positive's code has the positive's logit
exactly; counting that tie as wrong pins the accuracy of a model
with few codes in use near zero whatever it learns. Counted as the reference does, a tied
distractor is no competitor, so the chance level rises as fewer codes are in use (1/2 with two
equally used codes): read accuracy next to the code perplexity. `distinct_accuracy` is the same
count over the pairs that have at least one distractor with another logit (another code); a
pair whose candidates all tie (a collapsed codebook) is left out instead of counted wrong.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


def future_logits(
    predictions: Array, targets: Array, negatives: Array, offset: int
) -> tuple[Array, Array]:
  """Scores of every (frame, step) pair against its target and distractors.

  predictions: [batch, frames, steps, dim] (the context's per-step projections);
  targets: [batch, frames, dim]; negatives: [batch, frames, K] frame indices (distractors of
  each *target* frame). Returns (logits [batch, steps, frames, 1 + K] with the positive at 0,
  in_range [batch, steps, frames] bool: t + offset + step < frames). Context frames whose
  target falls past the end get logits 0; callers weight them out.
  """
  b, t, steps, _ = predictions.shape
  # candidates[:, u] = [target u; its distractors]: [batch, frames, 1 + K, dim].
  distractors = jax.vmap(lambda y, idx: y[idx])(targets, negatives)
  candidates = jnp.concatenate([targets[:, :, None], distractors], axis=2)
  rows = []
  for step in range(steps):  # Static: one slice per step, the reference's loop.
    shift = offset + step
    if shift >= t:
      rows.append(jnp.zeros((b, t, candidates.shape[2]), jnp.float32))
      continue
    scores = jnp.einsum(
        "btd,btkd->btk", predictions[:, : t - shift, step], candidates[:, shift:]
    ).astype(jnp.float32)
    rows.append(jnp.pad(scores, ((0, 0), (0, shift), (0, 0))))
  logits = jnp.stack(rows, axis=1)
  in_range = jnp.arange(t)[None, :] + offset + jnp.arange(steps)[:, None] < t
  return logits, jnp.broadcast_to(in_range[None], (b, steps, t))


def target_weights(frame_valid: Array, steps: int, offset: int) -> Array:
  """frame_valid [batch, frames] (valid frames first) -> [batch, steps, frames] float32: 1 where
  the target frame t + offset + step is a valid frame of the utterance."""
  lengths = frame_valid.sum(-1).astype(jnp.int32)
  t = frame_valid.shape[1]
  target = jnp.arange(t)[None, None, :] + offset + jnp.arange(steps)[None, :, None]
  return (target < lengths[:, None, None]).astype(jnp.float32)


class FuturePredictionTerms(NamedTuple):
  loss: Array  # summed BCE / number of scored pairs
  bce_sum: Array  # summed over scored pairs (and candidates, for BCE), nats
  num_pairs: Array  # scored (frame, step) pairs = positives
  accuracy: Array  # positive >= every distractor, not all tied (the reference's count)
  distinct_accuracy: Array  # the same, over pairs with some distractor of another code


def reference_accuracy_hits(logits: Array) -> Array:
  """[..., 1 + K] positive first -> [...] bool: the reference's `argmax == 0 & ~(argmin == 0)`
  (argmax/argmin return the first extreme, so a tie with the positive counts as a hit unless
  every candidate ties)."""
  top = jnp.max(logits[..., 1:], axis=-1)
  bottom = jnp.min(logits[..., 1:], axis=-1)
  return (logits[..., 0] >= top) & ~(logits[..., 0] <= bottom)


def binary_contrastive_loss(
    logits: Array, weights: Array, infonce: bool = False
) -> FuturePredictionTerms:
  """logits: [..., 1 + K] positive first; weights: [...] (0 drops a pair).

  BCE with logits x and label y is softplus(x) - y x: softplus(-x_0) for the positive,
  softplus(x_k) for each distractor. `infonce`: -log softmax(x)_0 instead.
  """
  logits = logits.astype(jnp.float32)
  w = weights.astype(jnp.float32)
  if infonce:
    per_pair = -jax.nn.log_softmax(logits, axis=-1)[..., 0]
  else:
    per_pair = jax.nn.softplus(-logits[..., 0]) + jnp.sum(jax.nn.softplus(logits[..., 1:]), -1)
  bce_sum = jnp.sum(per_pair * w)
  n = jnp.maximum(w.sum(), 1.0)
  correct = reference_accuracy_hits(logits)
  positive, distractors = logits[..., :1], logits[..., 1:]
  other = distractors != positive  # Same target vector (code) <=> the very same logit.
  beaten = jnp.all(~other | (positive > distractors), axis=-1)
  w_distinct = w * jnp.any(other, axis=-1)
  distinct = jnp.sum(beaten * w_distinct) / jnp.maximum(w_distinct.sum(), 1.0)
  return FuturePredictionTerms(bce_sum / n, bce_sum, w.sum(), jnp.sum(correct * w) / n, distinct)
