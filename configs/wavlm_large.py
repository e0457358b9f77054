r"""WavLM Large: 24 x 1024 pre-LN encoder with a layer-norm conv encoder and the gated relative
position bias, normalized input, 50 Hz k-means(500) labels of a previous model's layer.

  jaxdisco pretrain --config configs/wavlm_large.py --workdir runs/wavlm_large \
    --config.data.train_manifest=/data/mix94k/train.tsv \
    --config.labels.train=/data/mix94k/base_plus_l9_km500/train.km

Sizes and dropouts are the published Large checkpoint's (24 x 1024, 16 heads, FFN 4096,
layer-norm conv encoder without bias, pre-LN, normalized input, 320 buckets up to 800 frames,
dropout 0.1, attention dropout 0.1, input dropout 0.1, LayerDrop 0.05; 315.5M backbone
parameters, equal to transformers' WavLMModel); the paper trains it 700k updates on 94k hours.
Optimizer and batch are HuBERT LARGE's recipe (configs/hubert_large.py), which this file does not
take from the paper.
"""

from jaxdisco.methods.wavlm import wavlm_defaults


def get_config():
  c = wavlm_defaults()
  m = c.model
  m.extractor_mode = "layer_norm"
  m.conv_bias = False
  m.layer_norm_first = True
  m.embed_dim, m.num_layers, m.num_heads, m.ffn_dim = 1024, 24, 16, 4096
  m.final_dim = 768
  m.feature_grad_mult = 1.0  # HuBERT LARGE's; the published configs do not record it.
  c.data.normalize = True
  c.data.batch_size = 460
  c.optim.lr = 1.5e-3
  c.optim.clip_norm = 1.0
  c.train.num_steps = 700_000
  return c
