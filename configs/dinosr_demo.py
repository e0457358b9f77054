r"""DinoSR at demo size on the shipped corpus (CPU).

  jaxdisco pretrain --config configs/dinosr_demo.py --workdir dinosr-demo

Backbone and data are the HuBERT demo's (configs/hubert_demo.py, `demo_settings`): the demo
backbone at depth 3 (3 x 128 pre-LN Transformer on a 64-channel layer-norm conv encoder,
normalized 1 s crops, batch 8) on the corpus's extended splits (train_ext / valid_ext, 512 +
64 utterances), lr 1e-3 with 50 warm-up steps, without labels and without the loop. What
differs from DinoSR BASE (configs/dinosr_base.py), and why:
  * K = 3 codebooks: the top 8 layers of BASE do not exist at depth 3; all three do.
  * 50 codes per codebook (BASE: 256). A step masks ~230 valid frames (8 x 49 frames, ~60%
    masked): with 256 codes each would see under one frame per update and the 0.9 codebook
    EMA would average noise; with 50, ~5 frames per code per update. It is also the K of the
    HuBERT demo's k-means, so the unit tables compare at the same vocabulary.
  * 7500 steps: the HuBERT demo loop's 3000 + 4500, so the tables compare at equal steps.
  * Codewords start at 0.1 x the reference's scale (`objective.codebook_init_scale`): a step
    here assigns ~170 masked frames to 50 codes, and with the reference's init only the codes
    that win the first update's frames ever move (`methods/dinosr.py` says why).
  * The teacher's EMA decays are the published ones (0.999 -> 0.9999 over 30k updates), not
    shortened to the run: how fast the teacher should follow is set by how fast the student
    changes, which the learning rate governs (here 2 x BASE's, after 50 warm-up updates), not
    by the run's length. Shortened 53-fold (0.95 -> 0.995), the teacher trailed the student
    by ~20 updates and per-batch code usage fell to 13 of 50 by update 300, against 27 with
    the published decays. The teacher is frozen from update 3751, half the run, as BASE
    freezes it at half of its 400k.
Even so this config collapses: after a few hundred updates the student's units follow frame
position, not speech (README, "DinoSR at demo scale", gives the measurements). It is kept as
the smallest run that exercises the whole method, not as a recipe for good units.
  * LayerDrop 0 (BASE: 0.05) and dropout_input / dropout_features 0, as the HuBERT demo has
    no LayerDrop: at depth 3 one dropped layer is a third of the student.
"""

from jaxdisco.methods.demo_settings import demo_backbone, demo_data
from jaxdisco.methods.dinosr import dinosr_defaults


def get_config():
  from jaxdisco.assets import demo_corpus_dir  # pylint: disable=g-import-not-at-top

  c = dinosr_defaults()
  m = c.model
  demo_backbone(m)
  m.num_layers = 3
  m.feature_grad_mult = 1.0
  m.layerdrop = 0.0
  m.dropout_input = m.dropout_features = 0.0

  corpus = demo_corpus_dir()
  demo_data(c.data)
  c.data.train_manifest = str(corpus / "train_ext.tsv")
  c.data.valid_manifest = str(corpus / "valid_ext.tsv")

  o = c.objective
  o.average_top_k_layers = 3
  o.codebook_size = 50
  o.codebook_init_scale = 0.1
  o.freeze_teacher_step = 3751

  c.optim.lr = 1e-3
  c.optim.warmup_steps = 50
  c.train.num_steps = 7500
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 250
  c.train.keep_checkpoints = 1
  return c
