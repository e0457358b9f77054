r"""vq-wav2vec, online k-means quantizer, on the shipped demo corpus: ~9 min on 2 busy CPUs.

  jaxdisco pretrain --config configs/vq_wav2vec_demo_kmeans.py --workdir vq-kmeans-demo

`configs/vq_wav2vec_kmeans.py` (the recipe's k-means quantizer and loss weight 1) at the demo
size of `jaxdisco.methods.vq_wav2vec.vq_wav2vec_demo`, which says what differs from the
recipe and why (in short: InfoNCE instead of binary cross-entropy, a 64-wide model, lr 1e-3).
1500 updates. The codes export as a tokenizer:

  jaxdisco export-tokenizer --workdir vq-kmeans-demo --out vq-kmeans-tok --units vq_wav2vec
For a 30-second smoke run add `--config.train.num_steps=50`.
"""

from jaxdisco.methods.vq_wav2vec import vq_wav2vec_defaults, vq_wav2vec_demo


def get_config():
  c = vq_wav2vec_defaults()
  vq_wav2vec_demo(c)
  c.model.vq_type = "kmeans"
  c.model.vq_depth = 1  # Unused by k-means (the gumbel logit projection's depth).
  c.objective.quantizer_weight = 1.0  # The recipe's --loss-weights [1].
  c.train.num_steps = 1500
  return c
