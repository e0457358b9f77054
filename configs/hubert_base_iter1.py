r"""HuBERT BASE, iteration 1: predict k-means(100) clusters of 39-d MFCCs (100 Hz labels).

  jaxdisco pretrain --config configs/hubert_base_iter1.py --workdir runs/hubert_it1 \
    --config.data.train_manifest=/data/ls960/train.tsv \
    --config.labels.train=/data/ls960/mfcc_km100/train.km

BASE backbone (group-norm conv encoder, 12 x 768 post-LN), mask 0.8/10, cosine logits / 0.1,
masked frames only, feature penalty 10, lr 5e-4, clip 10, 32k warm-up, 250k updates.
"""

from jaxdisco.methods.hubert import hubert_defaults


def get_config():
  return hubert_defaults()
