r"""vq-wav2vec, online k-means quantizer, on LibriSpeech 960 h (the reference's recipe).

  jaxdisco pretrain --config configs/vq_wav2vec_kmeans.py --workdir runs/vq_kmeans \
    --config.data.train_manifest=/data/librispeech/train.tsv \
    --config.data.valid_manifest=/data/librispeech/valid.tsv

As `vq_wav2vec_gumbel.py` (same encoder, aggregator, objective and optimisation) with the k-means
quantizer: grouped 1x1 conv + GroupNorm(2), 2 groups x 320 entries of a shared codebook
(init 0.01 N(0, 1)), nearest neighbour in L2 with a straight-through gradient; loss weight 1 on
codebook + 0.25 * commitment (`--loss-weights [1]`).

A size two CPU cores run in minutes on the shipped demo corpus (either config file). At this
size and step count the model does not get past the contrastive plateau yet, and k-means codes
collapse (perplexity 2) at learning rates above the recipe's 1e-5: a smoke run, not a result.

  jaxdisco pretrain --config configs/vq_wav2vec_kmeans.py --workdir runs/vq_demo \
    --config.data.train_manifest=jaxdisco/assets/demo_corpus/train.tsv \
    --config.data.valid_manifest=jaxdisco/assets/demo_corpus/valid.tsv \
    --config.model.encoder_layers='[(64,10,5),(64,8,4),(64,4,2),(64,4,2),(64,4,2),(64,1,1)]' \
    --config.model.aggregator_layers='[(64,2,1),(64,3,1),(64,4,1),(64,5,1)]' \
    --config.model.vq_vars=32 --config.data.crop_samples=16000 --config.data.min_samples=16000 \
    --config.data.normalize=True --config.data.batch_size=8 --config.optim.lr=1e-3 --config.optim.warmup_steps=100 \
    --config.train.num_steps=1500 --config.train.log_every=50 --config.train.eval_every=500
"""

from jaxdisco.train.vq_wav2vec_defaults import vq_wav2vec_defaults


def get_config():
  c = vq_wav2vec_defaults()
  c.model.vq_type = "kmeans"
  c.model.vq_depth = 1  # Unused by k-means (the gumbel logit projection's depth).
  c.objective.quantizer_weight = 1.0
  return c
