r"""vq-wav2vec, online k-means quantizer, on LibriSpeech 960 h (the reference's recipe).

  jaxdisco pretrain --config configs/vq_wav2vec_kmeans.py --workdir runs/vq_kmeans \
    --config.data.train_manifest=/data/librispeech/train.tsv \
    --config.data.valid_manifest=/data/librispeech/valid.tsv

As `vq_wav2vec_gumbel.py` (same encoder, aggregator, objective and optimisation) with the k-means
quantizer: grouped 1x1 conv + GroupNorm(2), 2 groups x 320 entries of a shared codebook
(init 0.01 N(0, 1)), nearest neighbour in L2 with a straight-through gradient; loss weight 1 on
codebook + 0.25 * commitment (`--loss-weights [1]`).

A demo-size run on the shipped corpus: `configs/vq_wav2vec_demo_kmeans.py`.
"""

from jaxdisco.methods.vq_wav2vec import vq_wav2vec_defaults


def get_config():
  c = vq_wav2vec_defaults()
  c.model.vq_type = "kmeans"
  c.model.vq_depth = 1  # Unused by k-means (the gumbel logit projection's depth).
  c.objective.quantizer_weight = 1.0
  return c
