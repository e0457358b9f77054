r"""The HuBERT loop with WavLM as the model of both iterations, at demo size on the shipped corpus.

  jaxdisco hubert-iterate --config configs/wavlm_demo.py --workdir wavlm-demo

Everything but the method is configs/hubert_demo.py (same backbone, data, steps, K, layer and
k-means; its docstring says what differs from the recipes and why), so the two unit tables
compare HuBERT and WavLM at equal steps. WavLM's own parts keep their published values: the
gated relative position bias (320 buckets, 800 frames; at 1 s crops of 50 frames every offset
has its own bucket) and utterance mixing (p = 0.2, chunks up to half the utterance, [-5, 5] dB).
"""

from jaxdisco.methods.demo_settings import pseudo_label_loop_demo
from jaxdisco.methods.wavlm import wavlm_defaults


def get_config():
  c = wavlm_defaults()
  pseudo_label_loop_demo(c)
  return c
