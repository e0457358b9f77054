"""BEST-RQ objective: cross-entropy of the frozen random-projection quantizer's ids at masked
frames (Chiu et al. 2022, Sec. 3).

Per codebook g, the softmax head's logits at every masked valid frame are scored against the
quantizer's id of that frame, computed from the unmasked audio; the loss is the summed
cross-entropy over masked frames divided by their number, averaged over codebooks (the
multi-softmax variant weighs its codebooks equally). Unmasked frames carry no loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def code_usage(targets: Array, weights: Array, vocab: int):
  """(perplexity, codes used) of the targets at weighted frames, averaged over codebooks.
  targets [batch, frames, G] int; weights [batch, frames] float."""
  onehot = jax.nn.one_hot(targets, vocab, dtype=jnp.float32)  # [b, t, G, V]
  counts = jnp.einsum("btgv,bt->gv", onehot, weights)
  probs = counts / jnp.maximum(counts.sum(-1, keepdims=True), 1.0)
  entropy = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.maximum(probs, 1e-30)), 0.0), -1)
  return jnp.mean(jnp.exp(entropy)), jnp.mean(jnp.sum(counts > 0, -1).astype(jnp.float32))


def best_rq_loss(logits: Array, targets: Array, mask: Array, frame_valid: Array):
  """logits [batch, frames, G, V]; targets [batch, frames, G]; mask, frame_valid [batch,
  frames] -> (loss, accuracy, unmasked accuracy, masked frames)."""
  logits = logits.astype(jnp.float32)
  nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  masked = (mask & frame_valid).astype(jnp.float32)
  unmasked = (~mask & frame_valid).astype(jnp.float32)
  n_masked = masked.sum()
  groups = logits.shape[2]
  denom = jnp.maximum(n_masked, 1.0) * groups
  loss = jnp.sum(nll * masked[..., None]) / denom
  accuracy = jnp.sum(correct * masked[..., None]) / denom
  unmasked_acc = jnp.sum(correct * unmasked[..., None]) / (jnp.maximum(unmasked.sum(), 1.0) * groups)
  return loss, accuracy, unmasked_acc, n_masked


def pretraining_loss(
    params,
    batch,
    key,
    step,
    *,
    model_config,
    objective,
    vocab: int,
    code_dim: int,
    num_codebooks: int,
    stack_frames: int,
    train: bool,
):
  """BEST-RQ task: (params, batch, key) -> (loss, metrics).

  `batch` holds waveform and padding_mask, optionally `mask` (else drawn from `key` with the
  span masking of `objective.mask_prob` / `mask_length` / `min_masks` at encoder frames). The
  noise of noise masking (`model.mask_noise_std`) is drawn from its own split of `key`.
  """
  from jaxdisco.models.best_rq import BestRqForPretraining
  from jaxdisco.objectives.masking import batch_or_span_mask

  del step
  model = BestRqForPretraining(model_config, vocab, code_dim, num_codebooks, stack_frames)
  mask_key, noise_key, dropout_key = jax.random.split(key, 3)
  mask = batch_or_span_mask(mask_key, batch, model_config, objective)
  out = model.apply(
      params,
      batch["waveform"],
      batch["padding_mask"],
      mask,
      deterministic=not train,
      noise_key=noise_key,
      rngs={"dropout": dropout_key},
  )
  loss, accuracy, unmasked_accuracy, n_masked = best_rq_loss(
      out.logits, out.targets, mask, out.frame_valid
  )
  perplexity, used = code_usage(out.targets, out.frame_valid.astype(jnp.float32), vocab)
  metrics = {
      "loss": loss,
      "accuracy": accuracy,
      "unmasked_accuracy": unmasked_accuracy,
      "target_perplexity": perplexity,  # exp(entropy) of the targets at valid frames.
      "target_codes_used": used,  # Distinct target ids in the batch (per codebook).
      "masked_frames": n_masked,  # The trainer's weight for micro-batches and eval batches.
  }
  return loss, metrics
