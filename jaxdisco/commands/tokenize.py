"""`jaxdisco tokenize --tokenizer DIR INPUTS... --out FILE [--format jsonl|km]`: unit ids of
every utterance in audio files, folders and manifests, batched by length and data-parallel
over all devices. Unreadable files are reported and skipped (see `jaxdisco.tokenize_files`)."""

from absl import app, flags

_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Directory written by export-tokenizer.")
_OUT = flags.DEFINE_string("out", None, "Output file (.jsonl, or .km with --format km).")
_FORMAT = flags.DEFINE_enum("format", "jsonl", ["jsonl", "km"], "Output format.")
_BATCH = flags.DEFINE_integer("batch-size", 16, "Utterances per device call (all devices).")
_DEDUP = flags.DEFINE_bool("deduplicate", False, "Merge repeated consecutive units.")
_OFFSET = flags.DEFINE_integer("offset", 0, "Added to every unit id.")
_CHUNK = flags.DEFINE_float("chunk-seconds", None, "Cut longer utterances into chunks.")
_RESAMPLE = flags.DEFINE_bool("resample", False, "Resample files at other sample rates.")


def main(argv):
  inputs = argv[1:]
  if not inputs or not _TOKENIZER.value or not _OUT.value:
    raise app.UsageError("tokenize needs --tokenizer, --out and at least one input")
  from jaxdisco.tokenize_files import tokenize_files  # pylint: disable=g-import-not-at-top
  from jaxdisco.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top

  tokenizer = Tokenizer.load(_TOKENIZER.value)
  summary = tokenize_files(
      tokenizer,
      inputs,
      _OUT.value,
      fmt=_FORMAT.value,
      batch_size=_BATCH.value,
      deduplicate=_DEDUP.value,
      offset=_OFFSET.value,
      chunk_seconds=_CHUNK.value,
      resample=_RESAMPLE.value,
  )
  if not summary["utterances"]:
    raise app.UsageError("no utterance could be tokenized")
