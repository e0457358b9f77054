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
  * The EMA schedule scaled to the run length (7500 / 400k = 1/53): the teacher's time
    constants 1 / (1 - decay) of BASE, 1000 -> 10000 updates, are 0.25% -> 2.5% of its run; at
    7500 steps the same shares are ~19 -> ~190 updates: ema_decay 0.95 -> ema_end_decay 0.995,
    annealed over 560 updates (BASE: 30k = 7.5% of the run), teacher frozen from update 3751
    (BASE: 200001, half the run). Unscaled, the teacher would barely leave its random init in
    7500 updates.
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
  o.ema_decay, o.ema_end_decay = 0.95, 0.995
  o.ema_anneal_end_step = 560
  o.freeze_teacher_step = 3751

  c.optim.lr = 1e-3
  c.optim.warmup_steps = 50
  c.train.num_steps = 7500
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 250
  c.train.keep_checkpoints = 1
  return c
