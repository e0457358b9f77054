"""`jaxdisco <command> [flags]`: a thin layer over library functions.

Each command is a module in `jaxdisco/commands/` with its own absl flags and a `main(argv)`;
only the chosen one is imported, so commands do not share (or clash over) flags.

What a user sees: `jaxdisco <command> --help` prints the command's docstring and its own flags
(absl's `--help` would describe the entry-point script, which has none) and exits 0. A user
error (`jaxdisco.errors.UserError`, a bad flag, a misspelled `--config.*` override) prints
`jaxdisco <command>: error: <message>` on stderr and exits 2; any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import sys
import textwrap
import traceback
from types import ModuleType
from typing import Callable, NoReturn

from absl import app, flags, logging

from jaxdisco.errors import UserError

USER_ERROR_EXIT = 2
_HELP_ARGS = ("-h", "--help", "-help", "--helpshort", "-helpshort")
_WIDTH = 100


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


def _probe_layers():
  from jaxdisco.commands import probe_layers

  return probe_layers


def _fit_kmeans():
  from jaxdisco.commands import fit_kmeans

  return fit_kmeans


def _plan():
  from jaxdisco.commands import plan

  return plan


@dataclasses.dataclass(frozen=True)
class Command:
  load: Callable[[], ModuleType]  # Imports the command's module (and defines its flags).
  summary: str  # One line for `jaxdisco --help`.
  config_overrides: bool = False  # Takes `--config FILE` plus `--config.field=value`.


# One explicit entry per command.
COMMANDS = {
    "pretrain": Command(
        _pretrain,
        "pretrain wav2vec 2.0, HuBERT, WavLM, vq-wav2vec, BEST-RQ or DinoSR from a config",
        True,
    ),
    "eval-units": Command(
        _eval_units, "PNMI, purity, bitrate (and --abx: ABX) of units against alignments"
    ),
    "prepare-data": Command(_prepare_data, "decode a corpus into ArrayRecord shards"),
    "export-tokenizer": Command(_export_tokenizer, "write a frozen tokenizer directory"),
    "tokenize": Command(_tokenize, "unit ids of audio files, folders and manifests"),
    "probe-layers": Command(_probe_layers, "PNMI and ABX of every layer of a trained model"),
    "fit-kmeans": Command(_fit_kmeans, "k-means of a feature dump, streamed from its shards"),
    "hubert-iterate": Command(
        _hubert_iterate, "the whole HuBERT loop (MFCC k-means -> iterations 1 and 2)", True
    ),
    "plan": Command(_plan, "compile a config for a TPU slice: per-chip HBM, verdict, --fit", True),
}


def version() -> str:
  """The installed distribution's version; the package's own for a source tree."""
  try:
    return importlib.metadata.version("jaxdisco")
  except importlib.metadata.PackageNotFoundError:
    from jaxdisco import __version__

    return __version__


def usage() -> str:
  width = max(len(name) for name in COMMANDS)
  commands = "\n".join(f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items())
  return (
      "usage: jaxdisco <command> [flags]\n\n"
      f"commands:\n{commands}\n\n"
      "'jaxdisco <command> --help' lists a command's flags; 'jaxdisco --version' prints the "
      "version."
  )


def command_help(name: str, module: ModuleType) -> str:
  """The command's docstring, then each of its flags with its help text and default."""
  doc = textwrap.dedent((module.__doc__ or "").strip("\n")).replace("`", "").strip()
  lines = [doc, "", "flags:"]
  for flag in sorted(flags.FLAGS.get_flags_for_module(module), key=lambda f: f.name):
    name_text = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    lines += textwrap.wrap(
        f"{name_text}: {flag.help}", _WIDTH, initial_indent="  ", subsequent_indent="      "
    )
    if flag.default is not None:
      lines.append(f"      (default: {flag.default_as_str})")
  if COMMANDS[name].config_overrides:
    lines += textwrap.wrap(
        "--config.FIELD=VALUE: overrides one field of the config, e.g. "
        "--config.train.num_steps=100 --config.model.num_layers=8 (every field is documented "
        "in jaxdisco/methods/: run_defaults.py and one module per method)",
        _WIDTH,
        initial_indent="  ",
        subsequent_indent="      ",
    )
  return "\n".join(lines)


def _fail(name: str, message: str) -> NoReturn:
  # First line after the prefix; a message that lists several problems keeps them indented.
  first, *rest = message.strip().splitlines() or [""]
  print(f"jaxdisco {name}: error: {first}", file=sys.stderr)
  for line in rest:
    print(f"  {line}", file=sys.stderr)
  sys.exit(USER_ERROR_EXIT)


def _override_error(error: Exception, argv: list[str]) -> str | None:
  """One line for a `--config.a.b=v` naming a field the config lacks; None for other errors.

  ml_collections raises a bare AttributeError / KeyError while resolving the override's path
  (`config_path.py`); the same exceptions from anywhere else (a bug in a config file) are not
  ours to shorten.
  """
  frames = traceback.extract_tb(error.__traceback__)
  if not any(frame.filename.endswith("config_path.py") for frame in frames):
    return None
  # The KeyError's message, escaped inside the AttributeError's: "'num_layerz'\nDid you mean
  # "num_layers" instead of "num_layerz"?" (no suggestion when nothing is close).
  text = str(error).replace("\\'", "'")
  missing = re.search(r"'([^'\s\\]+)'", text)
  suggestion = re.search(r'Did you mean "([^"]+)"', text)
  overrides = [a.lstrip("-").split("=", 1)[0] for a in argv if re.match(r"--?config\.", a)]
  parts = next(
      (o.split(".") for o in overrides if missing and missing.group(1) in o.split(".")[1:]),
      (overrides[0] if overrides else "config").split("."),
  )
  message = f"--{'.'.join(parts)}: the config has no such field"
  if suggestion and missing and missing.group(1) in parts:
    parts[parts.index(missing.group(1))] = suggestion.group(1)
    message += f" (did you mean --{'.'.join(parts)}?)"
  return message


def _flags_parser(name: str) -> Callable[[list[str]], list[str]]:
  def parse(argv: list[str]) -> list[str]:
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      _fail(name, f"{e} (see 'jaxdisco {name} --help')")
    except (AttributeError, KeyError) as e:
      message = _override_error(e, argv)
      if message is None:
        raise
      _fail(name, message)

  return parse


def _reporting_user_errors(name: str, main: Callable[[list[str]], object]):
  def main_reporting_user_errors(argv: list[str]):
    try:
      return main(argv)
    except UserError as e:
      _fail(name, str(e))
    except app.UsageError as e:
      _fail(name, f"{e} (see 'jaxdisco {name} --help')")

  return main_reporting_user_errors


def run() -> None:
  argv = sys.argv
  if len(argv) < 2 or argv[1] in _HELP_ARGS:
    print(usage(), file=sys.stdout if len(argv) >= 2 else sys.stderr)
    sys.exit(0)
  if argv[1] == "--version":
    print(f"jaxdisco {version()}")
    sys.exit(0)
  name = argv[1]
  if name not in COMMANDS:
    print(f"jaxdisco: error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT)
  module = COMMANDS[name].load()
  args = argv[2:]
  own_args = args[: args.index("--")] if "--" in args else args
  if any(a in _HELP_ARGS for a in own_args):
    print(command_help(name, module))
    sys.exit(0)
  logging.set_verbosity(logging.WARNING)
  app.run(
      _reporting_user_errors(name, module.main),
      argv=[f"jaxdisco {name}"] + args,
      flags_parser=_flags_parser(name),
  )


if __name__ == "__main__":
  run()
