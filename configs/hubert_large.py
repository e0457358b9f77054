r"""HuBERT LARGE: layer-norm conv encoder, 24 x 1024 pre-LN, normalized input, predicting
k-means(500) of layer 9 of HuBERT BASE iteration 2 (50 Hz labels).

  jaxdisco pretrain --config configs/hubert_large.py --workdir runs/hubert_large \
    --config.data.train_manifest=/data/ll60k/train.tsv \
    --config.labels.train=/data/ll60k/base_it2_l9_km500/train.km

No dropout or LayerDrop, no conv bias, final_dim 768 (the released checkpoint's config);
lr 1.5e-3, clip 1.0, 32k warm-up, 400k updates; ~900k samples x 128 GPUs per batch in the
reference (here a global batch of 460 crops of 250k samples).
"""

from jaxdisco.methods.hubert import hubert_defaults


def get_config():
  c = hubert_defaults()
  m = c.model
  m.extractor_mode = "layer_norm"
  m.conv_bias = False  # The released LARGE checkpoint's config: no conv bias (unlike w2v2 LV-60).
  m.layer_norm_first = True
  m.embed_dim, m.num_layers, m.num_heads, m.ffn_dim = 1024, 24, 16, 4096
  m.final_dim = 768
  m.feature_grad_mult = 1.0
  m.dropout = m.attention_dropout = m.activation_dropout = 0.0
  m.dropout_input = m.dropout_features = m.layerdrop = 0.0
  c.objective.label_rate = 50.0
  c.labels.num_classes = 500
  c.data.normalize = True
  c.data.batch_size = 460  # ~900k samples x 128 GPUs / 250k crop.
  c.optim.lr = 1.5e-3
  c.optim.clip_norm = 1.0
  c.train.num_steps = 400_000
  return c
