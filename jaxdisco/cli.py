"""`jaxdisco <command> [flags]`: a thin layer over library functions.

Each command is a module in `jaxdisco/commands/` with its own absl flags and a `main(argv)`;
only the chosen one is imported, so commands do not share (or clash over) flags.
"""

from __future__ import annotations

import sys

from absl import app, logging


def _pretrain():
  from jaxdisco.commands import pretrain

  return pretrain


def _prepare_data():
  from jaxdisco.commands import prepare_data

  return prepare_data


def _eval_units():
  from jaxdisco.commands import eval_units

  return eval_units


def _hubert_iterate():
  from jaxdisco.commands import hubert_iterate

  return hubert_iterate


def _export_tokenizer():
  from jaxdisco.commands import export_tokenizer

  return export_tokenizer


def _tokenize():
  from jaxdisco.commands import tokenize

  return tokenize


# Command name -> loader of its module. One explicit entry per command.
COMMANDS = {
    "pretrain": _pretrain,
    "eval-units": _eval_units,
    "prepare-data": _prepare_data,
    "export-tokenizer": _export_tokenizer,
    "tokenize": _tokenize,
    "hubert-iterate": _hubert_iterate,
}


def run():
  argv = sys.argv
  if len(argv) < 2 or argv[1] not in COMMANDS:
    names = ", ".join(COMMANDS)
    print(
        f"usage: jaxdisco <command> [flags]\ncommands: {names}\n"
        f"'jaxdisco <command> --help' lists a command's flags.",
        file=sys.stderr,
    )
    sys.exit(2 if len(argv) >= 2 and argv[1] not in ("-h", "--help") else 0)
  command = COMMANDS[argv[1]]()
  logging.set_verbosity(logging.WARNING)
  app.run(command.main, argv=[f"jaxdisco {argv[1]}"] + argv[2:])


if __name__ == "__main__":
  run()
