"""HF `FlaxWav2Vec2ForPreTraining` train-step worker, run in the HF Flax virtualenv.

    python hf_flax_worker.py '{"hf_config": {...}, "batch": 4, "samples": 32000, "frames": 99}'

Runs in transformers 4.57's own environment (old jax/flax), so it imports nothing from
jaxdisco. It builds the model, compiles one jitted step (contrastive + diversity loss as in the
transformers Flax pretraining example, optax AdamW), runs it once and prints one JSON line of
versions and compile time. Then, for each line "N" read from stdin, it runs N steps (masks and
negatives drawn on the host with transformers' numpy helpers, as that example's collator does)
and prints {"times": [seconds per step, ...]}. EOF on stdin ends it.
"""

import json
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import transformers
from transformers import FlaxWav2Vec2ForPreTraining, Wav2Vec2Config
from transformers.models.wav2vec2 import modeling_flax_wav2vec2 as hf

NUM_NEGATIVES = 100
LOGIT_TEMPERATURE = 0.1
DIVERSITY_WEIGHT = 0.1


def contrastive_loss(context, quantized, negative_indices, mask):
  """context, quantized: [batch, frames, dim]; negative_indices: [batch, frames * K] into the
  flattened batch; mask: [batch, frames]. Cross-entropy of the positive among 1 + K cosine
  logits, summed over masked frames; negatives equal to the positive are excluded."""
  b, t, d = quantized.shape
  negatives = quantized.reshape(b * t, d)[negative_indices.reshape(-1)]
  negatives = negatives.reshape(b, t, NUM_NEGATIVES, d).transpose(2, 0, 1, 3)  # [K, b, t, d]
  targets = jnp.concatenate([quantized[None], negatives], axis=0)  # [1 + K, b, t, d]
  unit = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-8)
  logits = jnp.sum(unit(context)[None] * unit(targets), axis=-1) / LOGIT_TEMPERATURE
  same = jnp.all(negatives == quantized[None], axis=-1)
  logits = logits.at[1:].set(jnp.where(same, -1e9, logits[1:]))
  logits = logits.transpose(1, 2, 0)  # [b, t, 1 + K]
  nll = jax.nn.logsumexp(logits, axis=-1) - logits[..., 0]
  return jnp.sum(nll * mask)


def main():
  spec = json.loads(sys.argv[1])
  cfg = Wav2Vec2Config(**spec["hf_config"])
  batch, samples, frames = spec["batch"], spec["samples"], spec["frames"]
  model = FlaxWav2Vec2ForPreTraining(cfg, input_shape=(1, samples), seed=0)
  gv = cfg.num_codevector_groups * cfg.num_codevectors_per_group
  tx = optax.adamw(1e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01)

  def step(params, opt_state, wav, mask, negatives, key):
    dropout_key, gumbel_key = jax.random.split(key)

    def loss_fn(p):
      out = model(
          wav,
          mask_time_indices=mask,
          gumbel_temperature=2.0,
          params=p,
          dropout_rng=dropout_key,
          gumbel_rng=gumbel_key,
          train=True,
      )
      contrastive = contrastive_loss(
          out.projected_states, out.projected_quantized_states, negatives, mask
      )
      diversity = (gv - out.codevector_perplexity) / gv
      n = jnp.maximum(mask.sum(), 1)
      return (contrastive + DIVERSITY_WEIGHT * diversity * n) / n

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jax.jit(step, donate_argnums=(0, 1))
  rng = np.random.default_rng(0)
  wav = jnp.asarray(rng.standard_normal((batch, samples), dtype=np.float32))
  state = {"params": model.params, "opt": tx.init(model.params), "i": 0}

  def run_one():
    mask = hf._compute_mask_indices((batch, frames), cfg.mask_time_prob, 10, min_masks=2)
    negatives = hf._sample_negative_indices((batch, frames, 1), NUM_NEGATIVES)
    state["params"], state["opt"], loss = step(
        state["params"],
        state["opt"],
        wav,
        jnp.asarray(mask),
        jnp.asarray(negatives),
        jax.random.PRNGKey(state["i"]),
    )
    state["i"] += 1
    return float(loss)  # Blocks until the step is done.

  t0 = time.perf_counter()
  loss = run_one()
  print(
      json.dumps(
          dict(
              transformers=transformers.__version__,
              jax=jax.__version__,
              flax=flax.__version__,
              compile_s=round(time.perf_counter() - t0, 1),
              first_loss=round(loss, 4),
          )
      ),
      flush=True,
  )
  for line in sys.stdin:
    times = []
    for _ in range(int(line)):
      t0 = time.perf_counter()
      run_one()
      times.append(time.perf_counter() - t0)
    print(json.dumps({"times": times}), flush=True)


if __name__ == "__main__":
  main()
