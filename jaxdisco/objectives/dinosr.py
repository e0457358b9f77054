"""DinoSR objective (Liu et al., arXiv 2305.10005): masked prediction of online-clustered
teacher codes, and the per-update moves of the teacher and the codebooks.

Per update:
  1. the student sees span-masked input (`mask_spans`, HuBERT's masking: mask_prob 0.8, span 10,
     `require_same_masks`); the teacher (an EMA of the student's Transformer) sees the same
     utterances unmasked, under `stop_gradient`, in eval mode;
  2. each of the teacher's top K layer outputs is instance-normalised per utterance and channel
     over the utterance's *valid* frames (`instance_norm_valid`);
  3. every masked valid frame takes, per layer k, the index of the nearest codeword (L2) of
     codebook k (codeword = sums / counts); head k of the student predicts it: cross-entropy
     averaged over the K codebooks, summed over masked frames and divided by their number;
  4. after the optimizer step (`make_param_update`), codebook k moves towards the mean of the
     features assigned to each code (EMA of sums and counts, decay 0.9, codes without a frame
     this update unchanged), dead codes are re-seeded, and the teacher moves towards the
     student (EMA decay annealed 0.999 -> 0.9999 over 30k updates; frozen from
     `freeze_teacher_step`).

Departures from the reference (github.com/Alexander-H-Liu/dinosr, models/dinosr.py), and why:
  * Targets are the teacher's `hidden_states` of its top K layers, i.e. each layer's output
    (the residual stream after the FFN block; for pre-LN models before the final LayerNorm).
    The reference takes each layer's FFN output *before* the residual is added (fairseq's
    `layer_results[i][2]`). jaxdisco's Transformer exposes layer outputs only, and those are
    what every other consumer (feature dumps, k-means, the tokenizer, Hugging Face parity)
    reads; the per-channel instance norm removes the residual stream's per-channel offset and
    scale, which is most of what distinguishes the two.
  * Instance norm counts valid frames only; the reference's `F.instance_norm` over the padded
    batch counts padding frames too, which makes a padded utterance's targets depend on how
    much padding its batch gave it.
  * Codebooks move once per update from statistics summed over micro-batches (and devices);
    the reference moves them in every forward, i.e. once per micro-batch with `update_freq`.
    With one micro-batch (the recipe) the two are the same.
  * After `freeze_teacher_step` the teacher decay is exactly 1 (the reference sets its end
    decay to 1, which is the same once the anneal has ended, as in the recipe).
  * Dead codes (the reference has no rule): a code assigned no frame for
    `dead_code_patience` updates in a row is re-seeded by splitting the most used code of its
    codebook (see `reseed_dead_codes`). A code that is never assigned keeps its random init
    forever in the reference (its EMA only moves on updates that assign it frames), wasting a
    class of the head and a tokenizer unit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdisco.objectives.update_stats import STATS

Array = jax.Array

INSTANCE_NORM_EPS = 1e-5  # F.instance_norm's default, as the reference uses it.


def instance_norm_valid(x: Array, frame_valid: Array, eps: float = INSTANCE_NORM_EPS) -> Array:
  """x [..., batch, frames, dim] normalised per utterance and channel to zero mean and unit
  (biased) variance over the utterance's valid frames (frame_valid [batch, frames]); padding
  frames come out 0."""
  w = frame_valid[..., None].astype(jnp.float32)
  n = jnp.maximum(w.sum(-2, keepdims=True), 1.0)
  x = x.astype(jnp.float32)
  mean = (x * w).sum(-2, keepdims=True) / n
  var = (jnp.square(x - mean) * w).sum(-2, keepdims=True) / n
  return (x - mean) * jax.lax.rsqrt(var + eps) * w


def codewords(sums: Array, counts: Array) -> Array:
  """[..., V, D] sums and [..., V] counts -> codewords sums / counts."""
  return sums / counts[..., None]


def nearest_codes(x: Array, codebook: Array) -> Array:
  """x [..., D], codebook [V, D] -> int32 [...] index of the nearest codeword in L2
  (|x|^2 + |c|^2 - 2 x.c, first index on ties), in full fp32 precision."""
  x = x.astype(jnp.float32)
  dot = jnp.einsum("...d,vd->...v", x, codebook, precision=jax.lax.Precision.HIGHEST)
  dist = jnp.sum(jnp.square(x), -1, keepdims=True) + jnp.sum(jnp.square(codebook), -1) - 2 * dot
  return jnp.argmin(dist, axis=-1).astype(jnp.int32)


def assign_targets(targets: Array, frame_valid: Array, sums: Array, counts: Array) -> Array:
  """Raw teacher layers [K, batch, frames, D] -> (normalised targets, codes [K, batch, frames])
  against codebooks `sums` [K, V, D], `counts` [K, V]."""
  normed = instance_norm_valid(targets, frame_valid)
  words = codewords(sums, counts)
  codes = jax.vmap(nearest_codes)(normed, words)
  return normed, codes


def code_statistics(normed: Array, codes: Array, weight: Array, codebook_size: int) -> dict:
  """Sums over frames with `weight` [batch, frames] (masked valid frames): per-code counts
  [K, V] and per-code feature sums [K, V, D] (what `codebook_ema` reads)."""
  onehot = jax.nn.one_hot(codes, codebook_size, dtype=jnp.float32) * weight[None, ..., None]
  counts = onehot.sum((1, 2))
  sums = jnp.einsum("kbtv,kbtd->kvd", onehot, normed, precision=jax.lax.Precision.HIGHEST)
  return {"counts": counts, "sums": sums}


def pretraining_loss(
    params,
    batch,
    key,
    step,
    *,
    model_config,
    objective,
    train: bool,
    num_codebooks: int,
    codebook_size: int,
):
  """DinoSR task: (params, batch, key) -> (loss, metrics). `batch`: waveform, padding_mask,
  optionally `mask` (else drawn from `key` with the reference's span masking). In training,
  `metrics[STATS]` holds the per-code counts and feature sums of the masked valid frames."""
  from jaxdisco.models.dinosr import DinoSRForPretraining
  from jaxdisco.objectives.masking import batch_or_span_mask

  del step  # No schedule inside the loss: the EMA schedules live in the parameter update.
  model = DinoSRForPretraining(model_config, num_codebooks, codebook_size)
  mask_key, dropout_key = jax.random.split(key)
  mask = batch_or_span_mask(mask_key, batch, model_config, objective)
  out = model.apply(
      params,
      batch["waveform"],
      batch["padding_mask"],
      mask,
      deterministic=not train,
      rngs={"dropout": dropout_key},
  )
  p = jax.lax.stop_gradient(params["params"])
  normed, codes = assign_targets(
      out.targets, out.frame_valid, p["codebooks"], p["codebook_counts"]
  )
  weight = (mask & out.frame_valid).astype(jnp.float32)  # [batch, frames]
  n_masked = weight.sum()
  denom = jnp.maximum(n_masked, 1.0)
  logits = out.logits  # [K, batch, frames, V]
  nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, codes[..., None], -1)[..., 0]
  loss = jnp.sum(nll.mean(0) * weight) / denom
  correct = (jnp.argmax(logits, -1) == codes).astype(jnp.float32)

  onehot_counts = jnp.sum(
      jax.nn.one_hot(codes, codebook_size, dtype=jnp.float32) * weight[None, ..., None], (1, 2)
  )  # [K, V]
  share = onehot_counts / denom
  entropy = -jnp.sum(jnp.where(share > 0, share * jnp.log(jnp.maximum(share, 1e-30)), 0.0), -1)
  probs = jax.nn.softmax(logits, -1)
  pred_share = jnp.sum(probs * weight[None, ..., None], (1, 2)) / denom
  pred_entropy = -jnp.sum(pred_share * jnp.log(jnp.maximum(pred_share, 1e-30)), -1)
  idle = p["codebook_idle"]
  metrics = {
      "loss": loss,
      "accuracy": jnp.sum(correct.mean(0) * weight) / denom,
      # exp(entropy) of the batch's code distribution at masked frames, averaged over
      # codebooks (the reference's target_ppl), and of the heads' mean prediction (pred_ppl).
      "target_perplexity": jnp.exp(entropy).mean(),
      "prediction_perplexity": jnp.exp(pred_entropy).mean(),
      # Codes assigned at least one masked frame of this batch, per codebook (mean over K).
      "code_usage": jnp.sum(onehot_counts > 0, -1).astype(jnp.float32).mean(),
      # Codes idle for at least the dead-code patience (before this update's re-seeding).
      "dead_codes": jnp.sum(
          idle >= max(int(objective.dead_code_patience), 1), -1
      ).astype(jnp.float32).mean(),
      # The trainer's weight for micro-batches and eval batches: masked valid frames.
      "masked_frames": n_masked,
  }
  if train:
    metrics[STATS] = code_statistics(normed, codes, weight, codebook_size)
  return loss, metrics


# --- The parameter update: codebooks, dead codes, teacher. ---------------------------------


def annealed_rate(start: float, end: float, num_updates, total: int):
  """fairseq's get_annealed_rate: linear from `start` at 0 to `end` at `total` updates, and
  `end` from then on (total <= 0: `end` at once)."""
  if total <= 0:
    return jnp.asarray(end, jnp.float32)
  n = jnp.asarray(num_updates, jnp.float32)
  rate = end - (end - start) * (1.0 - n / total)
  return jnp.where(n >= total, end, rate).astype(jnp.float32)


def teacher_decay(num_updates, objective):
  """EMA decay of the teacher after `num_updates` updates: annealed from `ema_decay` to
  `ema_end_decay` over `ema_anneal_end_step`, then constant; exactly 1 (the teacher stops)
  from `freeze_teacher_step` on (<= 0: never)."""
  decay = annealed_rate(
      objective.ema_decay, objective.ema_end_decay, num_updates, int(objective.ema_anneal_end_step)
  )
  if int(objective.freeze_teacher_step) > 0:
    decay = jnp.where(num_updates >= int(objective.freeze_teacher_step), 1.0, decay)
  return decay


def codebook_ema(sums: Array, counts: Array, stats: dict, decay: float):
  """The reference's codebook move: alpha = decay for codes assigned frames this update, 1
  (unchanged) for the others; counts <- alpha counts + (1 - alpha) n, sums <- alpha sums +
  (1 - alpha) feature sums."""
  n, m = stats["counts"], stats["sums"]
  alpha = jnp.where(n > 0, decay, 1.0)
  new_counts = alpha * counts + (1.0 - alpha) * n
  new_sums = alpha[..., None] * sums + (1.0 - alpha[..., None]) * m
  return new_sums, new_counts


def reseed_dead_codes(sums, counts, idle, key, *, patience: int, noise: float):
  """At most one dead code per codebook and update: the lowest-index code idle for at least
  `patience` updates takes half the mass of the codebook's most used code (largest count):
  donor and new code each get half its count, the donor keeps its codeword, the new one gets
  it perturbed by `noise` x the codeword's RMS x N(0, 1). The next assignments split the
  donor's cluster between the two. Its idle count restarts at 0. `patience` <= 0: off.

  sums [K, V, D], counts [K, V], idle [K, V] -> (sums, counts, idle, re-seeded [K] bool)."""
  k, v, d = sums.shape
  if patience <= 0:
    return sums, counts, idle, jnp.zeros((k,), bool)
  dead = idle >= patience
  any_dead = dead.any(-1)  # [K]
  target = jnp.argmax(dead, -1)  # first dead code
  donor = jnp.argmax(counts, -1)
  rows = jnp.arange(k)
  donor_count = counts[rows, donor]
  word = sums[rows, donor] / donor_count[:, None]  # [K, D]
  rms = jnp.sqrt(jnp.mean(jnp.square(word), -1, keepdims=True))
  new_word = word + noise * rms * jax.random.normal(key, (k, d), jnp.float32)
  half = donor_count / 2.0
  sel_target = jax.nn.one_hot(target, v, dtype=bool) & any_dead[:, None]
  sel_donor = jax.nn.one_hot(donor, v, dtype=bool) & any_dead[:, None]
  counts = jnp.where(sel_target | sel_donor, half[:, None], counts)
  sums = jnp.where(sel_donor[..., None], (word * half[:, None])[:, None], sums)
  sums = jnp.where(sel_target[..., None], (new_word * half[:, None])[:, None], sums)
  idle = jnp.where(sel_target, 0.0, idle)
  return sums, counts, idle, any_dead


def make_param_update(model_config, config):
  """`Method.param_update`: update(new_params, old_params, stats, step) -> params, after each
  finite optimizer update (`step` = updates before this one, so this is update step + 1, the
  count fairseq's `set_num_updates` hands the model after the optimizer step).

  In order: the codebooks move (`codebook_ema`) and idle counts tick, dead codes are re-seeded
  (key: fold_in(key(train.seed + 3), step)); the teacher's encoder moves towards the updated
  student's, teacher <- d teacher + (1 - d) student with d = `teacher_decay(step + 1)`, except
  its positional conv, which is copied from the student (the reference's `ema_layers_only`);
  at and after `freeze_teacher_step` the teacher stays put and, from the update after it, the
  student's pre-encoder modules (conv encoder, feature LayerNorm, projection) keep their values
  (the reference's `freeze_pre_enc_modules`, which restores them after every update).
  """
  del model_config
  obj = config.objective
  decay_cb = float(obj.codebook_decay)
  patience = int(obj.dead_code_patience)
  noise = float(obj.dead_code_noise)
  freeze_step = int(obj.freeze_teacher_step)
  seed = int(config.train.seed)

  def update(new_params, old_params, stats, step):
    from jaxdisco.models.dinosr import PRE_ENCODER_MODULES

    p = dict(new_params["params"])
    old = old_params["params"]
    num_updates = step + 1
    # Codebooks.
    sums, counts = codebook_ema(old["codebooks"], old["codebook_counts"], stats, decay_cb)
    idle = jnp.where(stats["counts"] > 0, 0.0, old["codebook_idle"] + 1.0)
    key = jax.random.fold_in(jax.random.key(seed + 3), step)
    sums, counts, idle, _ = reseed_dead_codes(
        sums, counts, idle, key, patience=patience, noise=noise
    )
    p["codebooks"], p["codebook_counts"], p["codebook_idle"] = sums, counts, idle
    # Teacher.
    d = teacher_decay(num_updates, obj)
    student = p["backbone"]["encoder"]
    teacher = {
        name: (
            jax.tree.map(lambda s, t: jnp.where(d < 1.0, s, t), student[name], sub)
            if name == "pos_conv"
            else jax.tree.map(lambda s, t: d * t + (1.0 - d) * s, student[name], sub)
        )
        for name, sub in old["teacher"].items()
    }
    p["teacher"] = teacher
    # The student's pre-encoder after the freeze.
    if freeze_step > 0:
      frozen = num_updates > freeze_step
      backbone = dict(p["backbone"])
      for name in PRE_ENCODER_MODULES:
        if name in backbone:
          backbone[name] = jax.tree.map(
              lambda n, o: jnp.where(frozen, o, n), backbone[name], old["backbone"][name]
          )
      p["backbone"] = backbone
    return {**new_params, "params": p}

  return update
