"""HuBERT (arXiv 2106.07447): masked prediction of offline k-means pseudo-labels, iterated
(MFCC k-means, then k-means of a layer of the previous iteration's model: `jaxdisco
hubert-iterate`). BASE iteration-1 defaults."""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import config_dict

from jaxdisco.methods import checks
from jaxdisco.methods.base import Method
from jaxdisco.methods.wav2vec2 import wav2vec2_defaults
from jaxdisco.models.config import ModelConfig
from jaxdisco.models.hubert import HubertForPretraining
from jaxdisco.objectives import hubert


def hubert_defaults() -> ml_collections.ConfigDict:
  c = wav2vec2_defaults()
  c.method = "hubert"
  # HuBERT has no quantizer: drop wav2vec 2.0's heads and loss terms from the config.
  for field in ("latent_vars", "latent_groups", "latent_dim", "quantizer_init_std"):
    if field in c.model:
      del c.model[field]
  for field in (
      "num_negatives",
      "cross_sample_negatives",
      "diversity_weight",
      "gumbel_temperature",
  ):
    del c.objective[field]
  c.objective.mask_prob = 0.8
  c.objective.label_rate = 100.0  # Labels per second: 100 for MFCC targets, 50 for model units.
  c.objective.masked_weight = 1.0  # Loss weight of masked frames...
  c.objective.unmasked_weight = 0.0  # ...and of unmasked ones (the reference: 0).
  c.objective.untie_final_proj = True

  c.labels = ml_collections.ConfigDict()
  c.labels.train = ""  # .km file, one line per train manifest entry (or labels in prepared shards).
  c.labels.valid = ""
  c.labels.num_classes = 100  # K of the k-means that wrote the labels.

  # The reference crops to 250k samples; 249,920 = 781 frames of 320 samples keeps 50 Hz and
  # 100 Hz labels whole (the label check refuses a crop that splits a label).
  c.data.crop_samples = 249_920
  c.data.batch_size = 176  # ~1.4M samples x 32 GPUs of the reference / 250k crop.
  c.optim.clip_norm = 10.0
  c.train.num_steps = 250_000  # Iteration 1; iteration 2 runs 400k.
  c.loop = hubert_loop_defaults()
  return c


def hubert_loop_defaults() -> ml_collections.ConfigDict:
  """Fields of `jaxdisco hubert-iterate` (`jaxdisco.train.hubert_loop`), BASE values.

  The loop trains each iteration with the rest of the config, overriding only
  `train.num_steps`, `labels.*` and `objective.label_rate` per iteration.
  """
  loop = ml_collections.ConfigDict()
  loop.mfcc_k = 100  # K of the k-means of 39-d MFCCs: iteration-1 targets.
  loop.layer_k = 500  # K of the k-means of model layers: iteration-2 targets (and it. 2 units).
  # hidden_states index clustered (output of Transformer layer `layer`, 1-based), or "auto":
  # each iteration's model is probed first (`evaluation.layer_probe` on loop.probe_utterances
  # train utterances with loop.train_alignments) and its best layer is clustered; without
  # alignments "auto" takes half the depth (BASE's 6 of 12).
  loop.layer = config_dict.FieldReference(6, field_type=object)  # An int or "auto".
  loop.probe_utterances = 256  # Train utterances the "auto" probe scores layers on.
  # How "auto" ranks layers. False: by PNMI of k-means at loop.layer_k, the quantity the next
  # iteration's targets are (k-means units carrying phone information). True: by ABX of the
  # continuous features first (`probe-layers`' default rule). ABX is not the default because
  # it judges the features, not their k-means units: on the demo corpus it put the Transformer
  # input (layer 0) first for both iterations, whose k-means units have the lowest PNMI
  # (0.419 against 0.425 at layer 2, iteration 1; README, "Choosing the layer").
  loop.probe_abx = False
  loop.steps = (250_000, 400_000)  # train.num_steps of iterations 1 and 2.
  loop.mfcc_label_rate = 100.0  # Hz; MFCC hop is 10 ms.
  loop.feature_label_rate = 50.0  # Hz; data.sample_rate / the conv encoder's total stride.
  # "minibatch": the reference's in-memory MiniBatchKMeans on loop.kmeans_fraction of the
  # train utterances. "streamed": every train frame, streamed from the dump's shards (no
  # memory wall; `clustering.streamed_kmeans`, at most loop.kmeans_max_iter passes); the
  # fraction, batch size and n_init do not apply.
  loop.kmeans_algorithm = "minibatch"
  loop.kmeans_fraction = 0.1  # Share of train utterances k-means is fitted on (the reference's).
  loop.kmeans_batch_size = 10_000  # MiniBatchKMeans settings of the reference.
  loop.kmeans_n_init = 20
  loop.kmeans_max_iter = 100
  loop.kmeans_seed = 0
  loop.evaluate_iteration2 = True  # Also dump + cluster iteration 2's layer (units for it. 3).
  loop.train_alignments = ""  # Phone alignments (JSONL) of data.train_manifest: unit quality.
  loop.valid_alignments = ""  # ... of data.valid_manifest.
  loop.utterances_per_shard = 256  # Feature dump shard size (resumable unit of a dump).
  return loop


def check_hubert_config(config) -> ModelConfig:
  model = checks.typed_model_config(config, ModelConfig)
  checks.check_masked_prediction(config, model)
  checks.check_labels(config)
  return model


def build_hubert(model_config, config) -> HubertForPretraining:
  return HubertForPretraining(
      model_config, (config.labels.num_classes,), config.objective.untie_final_proj
  )


METHOD = Method(
    name="hubert",
    defaults=hubert_defaults,
    check=check_hubert_config,
    build_model=build_hubert,
    loss=hubert.pretraining_loss,
    loss_kwargs=lambda config: {"num_classes": (config.labels.num_classes,)},
    batch_fields=("waveform", "padding_mask", "mask", "labels"),
    uses_labels=True,
    # K sizes the label embeddings; untying gives final_proj one slice per label set.
    param_fields=("labels.num_classes", "objective.untie_final_proj"),
    param_keys=frozenset({"label_embeddings"}),
    head_params=("final_proj", "label_embeddings"),
    model_type="hubert",
    hf_model_type="hubert",
)
