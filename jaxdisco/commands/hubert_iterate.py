"""`jaxdisco hubert-iterate --config CONFIG.py --workdir DIR [--config.field=value ...]`: the
whole HuBERT loop (MFCC k-means -> iteration 1 -> layer k-means -> iteration 2 -> ...),
resumable: re-running the same command skips finished stages."""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a HuBERT config file in configs/.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for every stage's outputs.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("hubert-iterate needs --config and --workdir")
  from jaxdisco.train.hubert_loop import LoopInterrupted, run_hubert_loop

  try:
    result = run_hubert_loop(_CONFIG.value, _WORKDIR.value)
  except LoopInterrupted as e:  # SIGTERM: the checkpoint is saved; exit cleanly, like pretrain.
    print(f"Stopped: {e}")
    return
  print(f"HuBERT loop finished in {result['seconds']:.0f} s; outputs in {_WORKDIR.value}")
