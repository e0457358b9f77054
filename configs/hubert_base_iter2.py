r"""HuBERT BASE, iteration 2: predict k-means(500) clusters of layer 6 of the iteration-1 model
(50 Hz labels), 400k updates.

  jaxdisco pretrain --config configs/hubert_base_iter2.py --workdir runs/hubert_it2 \
    --config.data.train_manifest=/data/ls960/train.tsv \
    --config.labels.train=/data/ls960/it1_l6_km500/train.km
"""

from jaxdisco.methods.hubert import hubert_defaults


def get_config():
  c = hubert_defaults()
  c.objective.label_rate = 50.0
  c.labels.num_classes = 500
  c.train.num_steps = 400_000
  return c
