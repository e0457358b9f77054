r"""BEST-RQ with a BASE-size Transformer encoder, LibriSpeech 960 h.

  jaxdisco pretrain --config configs/best_rq_base.py --workdir best-rq-base \
      --config.data.train_manifest=train.tsv --config.data.valid_manifest=valid.tsv

`best_rq_defaults()` (`jaxdisco/methods/best_rq.py` gives each value's source):
  * quantizer: vocab 8192, code dim 16, one codebook, 4 stacked 80-d log-mel frames (paper
    Sec. 3.1, 4.1);
  * masking: span starts 0.01 per 40 ms frame, 400 ms spans = mask_prob 0.1, mask_length 10;
    masked input frames replaced by N(0, 0.1^2) noise (paper Sec. 3.2, 4.1);
  * front end: 80-d log-mel, 25 ms / 10 ms (paper), conv subsampling by two stride-2 stages to
    40 ms (the paper's Conformer subsamples x4 with two stride-2 convolutions);
  * encoder: not the paper's 0.6B Conformer but jaxdisco's Transformer at BASE size (12 x 768,
    12 heads, FFN 3072), pre-LN (Conformer blocks are pre-LN);
  * optimizer, crops, batch, clipping: HuBERT BASE's (jaxdisco's schedule; the paper's Adam +
    Transformer schedule on 2048-utterance batches is not reproduced), 400k updates.
"""

from jaxdisco.methods.best_rq import best_rq_defaults


def get_config():
  c = best_rq_defaults()
  c.train.num_steps = 400_000
  return c
