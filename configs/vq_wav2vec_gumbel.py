r"""vq-wav2vec, gumbel quantizer, on LibriSpeech 960 h (the reference's published recipe).

  jaxdisco pretrain --config configs/vq_wav2vec_gumbel.py --workdir runs/vq_gumbel \
    --config.data.train_manifest=/data/librispeech/train.tsv \
    --config.data.valid_manifest=/data/librispeech/valid.tsv

Encoder: 8 convs of 512 channels, kernels (10, 8, 4, 4, 4, 1, 1, 1), strides (5, 4, 2, 2, 2, 1,
1, 1): stride 160 (100 Hz), 465-sample receptive field. Gumbel quantizer: 2 groups x 320 sharing
one codebook, depth-2 logit projection, hard straight-through, temperature 2 -> 0.5 at 0.999995
per update, no diversity penalty. Aggregator: 12 causal convs of 512 (kernels 2..13), skip
connections scaled by sqrt(0.5). 12 future steps from offset 3, 10 distractors, binary
cross-entropy. Adam, lr 1e-5, 1k warm-up, 400k updates, batch 32 crops of 150k samples.
A demo-size run on the shipped corpus: `configs/vq_wav2vec_demo_gumbel.py`.
"""

from jaxdisco.methods.vq_wav2vec import vq_wav2vec_defaults


def get_config():
  return vq_wav2vec_defaults()
