r"""wav2vec 2.0 at XLS-R 1B's shape: 48 x 1280 pre-LN Transformer, 16 heads, FFN 5120.

  jaxdisco plan --config configs/wav2vec2_xlsr_1b.py --topology v5p-64
  jaxdisco pretrain --config configs/wav2vec2_xlsr_1b.py --workdir runs/xlsr_1b \
    --config.data.train_manifest=/data/multilingual/train.tsv

The architecture is the published XLS-R 1B checkpoint's (Babu et al., arXiv 2111.09296; the
facebook/wav2vec2-xls-r-1b configuration): LARGE's layer-norm conv encoder with bias and pre-LN
blocks, 48 layers of 1280, FFN 5120, 16 heads, codevectors and final projection of 1024
(965M parameters). Everything else (data, optimizer, schedule, batch, temperature) is LARGE's
(`wav2vec2_large.py`), not the XLS-R recipe: the multilingual data mix and its sampling are not
jaxdisco's to ship, and this config exists so that a 1B-parameter run can be planned and
compiled for a pod (`jaxdisco plan`) before one is reserved. At this size a run needs
`parallel.fsdp` > 1 (its parameters and Adam moments take 10.8 GiB unsharded).
"""

import importlib.util
import pathlib


def _large_config():
  """configs/wav2vec2_large.py's config (configs are files, not a package)."""
  path = pathlib.Path(__file__).with_name("wav2vec2_large.py")
  spec = importlib.util.spec_from_file_location("wav2vec2_large", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config():
  c = _large_config()
  m = c.model
  m.embed_dim, m.num_layers, m.num_heads, m.ffn_dim = 1280, 48, 16, 5120
  m.final_dim = 1024
  return c
