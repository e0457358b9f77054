"""`jaxdisco <command> --flags`: a thin layer over library functions.

Commands:
  pretrain   --config CONFIG.py --workdir DIR [--config.field=value ...]
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")

_COMMANDS = ("pretrain",)


def _pretrain():
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("pretrain needs --config and --workdir")
  from jaxdisco.train.pretrain import train_and_evaluate
  train_and_evaluate(FLAGS.config, FLAGS.workdir)


def main(argv):
  commands = [a for a in argv[1:]]
  if len(commands) != 1 or commands[0] not in _COMMANDS:
    raise app.UsageError(f"expected one command of {', '.join(_COMMANDS)}; got {commands}")
  logging.set_verbosity(logging.WARNING)
  {"pretrain": _pretrain}[commands[0]]()


def run():
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
