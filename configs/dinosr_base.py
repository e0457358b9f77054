r"""DinoSR BASE (Liu et al., arXiv 2305.10005): 12 x 768 post-LN Transformer on a layer-norm conv
encoder, online codebooks of 256 codes on the teacher's top 8 layers, 400k updates.

  jaxdisco pretrain --config configs/dinosr_base.py --workdir runs/dinosr_base \
    --config.data.train_manifest=/data/librispeech/train-960.tsv

Everything is `jaxdisco/methods/dinosr.py`'s defaults, the reference's config/base.yaml where
jaxdisco can express it (that module lists where it cannot: the tri_stage schedule, the
5-layer positional conv, dead-code re-seeding; `--config.objective.dead_code_patience=0`
turns the last off).
"""

from jaxdisco.methods.dinosr import dinosr_defaults


def get_config():
  return dinosr_defaults()
