r"""BEST-RQ at demo size on the shipped corpus (CPU, ~25 min of audio).

  jaxdisco pretrain --config configs/best_rq_demo.py --workdir best-rq-demo

The demo Transformer of `demo_settings.demo_backbone` at depth 3 (128 wide, pre-LN) with the
log-mel front end instead of its waveform encoder, trained on the corpus's extended splits
(train_ext / valid_ext) as `pseudo_label_loop_demo` uses them, for 7500 steps = the HuBERT demo
loop's 3000 + 4500, so its unit tables compare with HuBERT's and WavLM's at equal steps.

What differs from the paper's recipe (`jaxdisco/methods/best_rq.py`) and why:
  * front end: 80-d log-mel (paper), one conv stage (128, 4, 4) = 4 stacked 10 ms frames
    projected to 128 channels: 40 ms frames, the paper's rate, at the cost of one matmul;
  * quantizer: vocab 50 instead of 8192 (code dim 16 as in the paper). 25 min are ~37k frames of
    40 ms: 8192 codes would see ~5 frames each per epoch, too few to learn a softmax row per
    code in 7500 small steps, and 50 is the K of every unit table of the demos (MFCC k-means,
    HuBERT/WavLM layer k-means), so the quantizer's own units compare at equal vocabulary;
  * masking: 1 s crops are 24 frames, where the paper's 400 ms spans (mask_length 10) and the
    2 spans `min_masks` forces would mask ~70% of every crop; spans of 4 frames (160 ms, about
    a phone) with mask_prob 0.4 (2.4 starts per crop, ~35% masked) and min_masks 1 keep a
    masked share between the paper's ~10% and the HuBERT demo's, with enough masked frames
    per batch of 8 to learn from (and each row keeps its own count: require_same_masks off);
    noise N(0, 0.1^2) on masked mel frames as in the paper;
  * optimizer: the HuBERT demo loop's (AdamW, peak 1e-3, 50 warm-up steps, linear decay).
"""

from jaxdisco.assets import demo_corpus_dir
from jaxdisco.methods.best_rq import best_rq_defaults
from jaxdisco.methods.demo_settings import demo_backbone, demo_data


def get_config():
  c = best_rq_defaults()
  m = c.model
  demo_backbone(m)
  m.frontend = "log_mel"
  m.conv_layers = "[(128, 4, 4)]"  # 4 x 10 ms mel frames stacked and projected: 40 ms frames.
  m.num_layers = 3
  m.feature_grad_mult = 1.0
  m.layerdrop = 0.0
  m.mask_noise_std = 0.1

  c.quantizer.vocab = 50
  c.quantizer.code_dim = 16
  c.quantizer.stack_frames = 4

  c.objective.mask_prob = 0.4
  c.objective.mask_length = 4
  c.objective.min_masks = 1
  # Keep each row's own mask count: trimming to the batch's smallest (fairseq's static-shape
  # habit; the masked sum here needs none) halves the masked frames of an 8-row demo batch.
  c.objective.require_same_masks = False

  corpus = demo_corpus_dir()
  demo_data(c.data)
  c.data.train_manifest = str(corpus / "train_ext.tsv")
  c.data.valid_manifest = str(corpus / "valid_ext.tsv")

  c.optim.lr = 1e-3
  c.optim.warmup_steps = 50
  c.optim.clip_norm = 10.0

  c.train.num_steps = 7500  # The HuBERT demo loop's 3000 + 4500.
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 250
  c.train.keep_checkpoints = 1
  return c
