r"""`jaxdisco prepare-data --source SOURCE --out DIR [--shards N] [...]`

Decodes a corpus once into 16 kHz int16 ArrayRecord shards with an index (see
`jaxdisco.data.prepare`). SOURCE is a fairseq manifest (`train.tsv`), a folder
of audio files, or a TFDS dataset prepared as array_record
(`tfds:librispeech@train_clean100`). Killed runs resume: run the same command
again.

  jaxdisco prepare-data --source data/train.tsv --out data/train-prepared \
      --labels data/train.km --dict data/dict.km.txt --label-rate 50
"""

import json

from absl import app, flags

_SOURCE = flags.DEFINE_string("source", None, "Manifest .tsv, audio folder, or tfds:NAME[@SPLIT].")
_OUT = flags.DEFINE_string("out", None, "Output directory (local or gs://).")
_SHARDS = flags.DEFINE_integer("shards", None, "Number of shards (default ~1000 utterances each).")
_WORKERS = flags.DEFINE_integer("workers", None, "Processes (default: all CPU cores).")
_SAMPLE_RATE = flags.DEFINE_integer("sample-rate", 16000, "Output sample rate in Hz.")
_RESAMPLE = flags.DEFINE_bool("resample", False, "Resample other rates (else skip/fail them).")
_NORMALIZE = flags.DEFINE_bool("normalize", False, "Peak-normalize each utterance to -1 dBFS.")
_MIN_SAMPLES = flags.DEFINE_integer("min-samples", 1, "Skip utterances shorter than this.")
_FORMAT = flags.DEFINE_enum("audio-format", "pcm16", ["pcm16", "flac"], "Stored audio encoding.")
_ON_ERROR = flags.DEFINE_enum(
    "on-error",
    "skip",
    ["skip", "fail"],
    "Bad utterances: skip (listed in summary.json) or stop the run.",
)
_LABELS = flags.DEFINE_string("labels", None, "HuBERT .km label file aligned to the manifest.")
_DICT = flags.DEFINE_string("dict", None, "dict.km.txt for --labels.")
_TRANSCRIPTS = flags.DEFINE_string("transcripts", None, ".wrd/.ltr file aligned to the manifest.")
_LABEL_RATE = flags.DEFINE_float("label-rate", 50.0, "Label frame rate in Hz.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds-data-dir", None, "TFDS data_dir for tfds: sources.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _SOURCE.value or not _OUT.value:
    raise app.UsageError("prepare-data needs --source and --out")
  from jaxdisco.data import prepare, sources

  # Input problems raise jaxdisco.errors.UserError subclasses naming the file and line: `jaxdisco`
  # prints them as one line, without a traceback.
  source = sources.open_source(
      _SOURCE.value,
      labels=_LABELS.value,
      dictionary=_DICT.value,
      transcripts=_TRANSCRIPTS.value,
      tfds_data_dir=_TFDS_DATA_DIR.value,
  )
  options = prepare.PrepareOptions(
      sample_rate=_SAMPLE_RATE.value,
      resample=_RESAMPLE.value,
      normalize=_NORMALIZE.value,
      min_samples=_MIN_SAMPLES.value,
      audio_format=_FORMAT.value,
      on_error=_ON_ERROR.value,
      label_rate=_LABEL_RATE.value,
  )
  summary = prepare.prepare(
      source, _OUT.value, num_shards=_SHARDS.value, num_workers=_WORKERS.value, options=options
  )
  print(
      f"Prepared {summary['utterances']} utterances ({summary['hours']:.2f} h) into "
      f"{summary['shards']} shards in {summary['out']}; skipped {summary['skipped']} "
      f"{json.dumps(summary['skipped_by_reason'])}. Details: {summary['out']}/summary.json"
  )
