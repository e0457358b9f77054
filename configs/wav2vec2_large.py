r"""wav2vec 2.0 LARGE, LV-60 style: layer-norm conv encoder, pre-LN Transformer.

  jaxdisco pretrain --config configs/wav2vec2_large.py --workdir runs/w2v2_large \
    --config.data.train_manifest=/data/libri-light/train.tsv

24 x 1024 pre-LN, 16 heads, FFN 4096, conv bias, normalized input, final_dim 768,
gumbel temperature (2, 0.1, 0.999995), no feature penalty, feature_grad_mult 1.0, no dropout
(the LV-60 config), lr 5e-3 in the reference config (3e-4 in the paper), 1M updates.
"""

from jaxdisco.methods.wav2vec2 import wav2vec2_defaults


def get_config():
  c = wav2vec2_defaults()
  m = c.model
  m.extractor_mode = "layer_norm"
  m.conv_bias = True
  m.layer_norm_first = True
  m.embed_dim, m.num_layers, m.num_heads, m.ffn_dim = 1024, 24, 16, 4096
  m.final_dim = 768
  m.feature_grad_mult = 1.0
  m.dropout = m.attention_dropout = m.activation_dropout = 0.0
  m.dropout_input = m.dropout_features = m.layerdrop = 0.0
  c.objective.gumbel_temperature = (2.0, 0.1, 0.999995)
  c.objective.feature_penalty_weight = 0.0
  c.data.crop_samples = 320_000
  c.data.normalize = True
  c.data.batch_size = 480  # ~1.2M samples x 128 GPUs of the reference / 320k crop.
  c.optim.lr = 5e-3
  c.train.num_steps = 1_000_000
  return c
