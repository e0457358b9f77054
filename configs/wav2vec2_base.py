r"""wav2vec 2.0 BASE on LibriSpeech 960 h (the reference's published recipe).

  jaxdisco pretrain --config configs/wav2vec2_base.py --workdir runs/w2v2_base \
    --config.data.train_manifest=/data/librispeech/train.tsv \
    --config.data.valid_manifest=/data/librispeech/valid.tsv

Model: 7-layer conv encoder (group norm on layer 0), 12 x 768 post-LN Transformer, 12 heads,
FFN 3072, G x V = 2 x 320, final_dim 256; 400k updates, lr 5e-4, 32k warm-up.
"""

from jaxdisco.methods.wav2vec2 import wav2vec2_defaults


def get_config():
  return wav2vec2_defaults()
