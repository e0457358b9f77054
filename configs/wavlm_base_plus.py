r"""WavLM Base+: HuBERT BASE's encoder with the gated relative position bias, trained by masked
prediction of 50 Hz k-means(500) labels under utterance mixing.

  jaxdisco pretrain --config configs/wavlm_base_plus.py --workdir runs/wavlm_base_plus \
    --config.data.train_manifest=/data/mix94k/train.tsv \
    --config.labels.train=/data/mix94k/hubert_base_l6_km500/train.km

Sizes and dropouts are the published Base+ checkpoint's (12 x 768, 12 heads, FFN 3072,
group-norm conv encoder without bias, post-LN, 320 buckets up to 800 frames, dropout 0.1,
LayerDrop 0.05; 94.4M backbone parameters, equal to transformers' WavLMModel); the paper trains
it 1M updates on 94k hours (Libri-Light, GigaSpeech, VoxPopuli). Everything else is
`jaxdisco/methods/wavlm.py`'s defaults, which name their sources.
"""

from jaxdisco.methods.wavlm import wavlm_defaults


def get_config():
  c = wavlm_defaults()
  c.train.num_steps = 1_000_000
  return c
