"""`jaxdisco pretrain --config CONFIG.py --workdir DIR [--config.field=value ...]`"""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file in configs/.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("pretrain needs --config and --workdir")
  from jaxdisco.train.pretrain import train_and_evaluate

  train_and_evaluate(_CONFIG.value, _WORKDIR.value)
