"""`jaxdisco probe-layers --model PATH --manifest M.tsv --alignments A.jsonl [--k 50]
[--speakers meta.jsonl] [--out DIR]`: PNMI (k-means at K on a sample of frames) and ABX error
rates (when the alignments give triphone items) of every layer of a trained model (a jaxdisco
workdir, Hugging Face directory or fairseq .pt), printed as a table, with the layer the probe
ranks best and why; with `--out`, also probe.md, probe.json and the curve probe.png.

The ranking (`jaxdisco.evaluation.layer_probe`): lowest ABX error across speakers within context
(within speaker when there is one speaker), PNMI among layers within --tolerance of it, then the
shallower layer; PNMI alone without items.
"""

from absl import app, flags

_MODEL = flags.DEFINE_string("model", None, "jaxdisco workdir, HF directory or fairseq .pt.")
_MANIFEST = flags.DEFINE_string("manifest", None, "Manifest of the utterances to probe on.")
_ALIGNMENTS = flags.DEFINE_string("alignments", None, "JSONL phone alignments of them.")
_K = flags.DEFINE_integer("k", 50, "k-means clusters for PNMI.")
_SPEAKERS = flags.DEFINE_string(
    "speakers", None, 'JSONL {"id", "speaker"} (or "voice"); default: id up to its first "-".'
)
_ITEMS = flags.DEFINE_string("items", None, "ABX item file; default: the alignments' triphones.")
_NO_ABX = flags.DEFINE_boolean("skip-abx", False, "PNMI only.")
_LAYERS = flags.DEFINE_list("layers", None, "hidden_states indices to probe; default all.")
_MAX_FRAMES = flags.DEFINE_integer("max-frames", 100_000, "Frames k-means is fitted on.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the frame sample and k-means.")
_TOLERANCE = flags.DEFINE_float(
    "tolerance", 0.0, "ABX error rates within this (0..1) of the best count as equal."
)
_OUT = flags.DEFINE_string("out", None, "Directory for probe.md, probe.json and probe.png.")
_NORMALIZE = flags.DEFINE_enum(
    "normalize",
    "auto",
    ["auto", "true", "false"],
    "Per-utterance waveform normalization (auto: as the model was trained).",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not (_MODEL.value and _MANIFEST.value and _ALIGNMENTS.value):
    raise app.UsageError("probe-layers needs --model, --manifest and --alignments")
  from jaxdisco.evaluation import layer_probe  # pylint: disable=g-import-not-at-top
  from jaxdisco.export.tokenizer import load_source_model  # pylint: disable=g-import-not-at-top

  pretrained, _, trained_normalized, _ = load_source_model(_MODEL.value)
  normalize = {"auto": trained_normalized, "true": True, "false": False}[_NORMALIZE.value]
  rows = layer_probe.probe_layers(
      pretrained,
      _MANIFEST.value,
      _ALIGNMENTS.value,
      k=_K.value,
      speakers=_SPEAKERS.value,
      items=_ITEMS.value,
      layers=None if _LAYERS.value is None else [int(x) for x in _LAYERS.value],
      max_frames=_MAX_FRAMES.value,
      seed=_SEED.value,
      abx=not _NO_ABX.value,
      normalize=normalize,
  )
  choice = layer_probe.choose_from_scores(rows, tolerance=_TOLERANCE.value)
  if _OUT.value:
    text = layer_probe.write_probe(_OUT.value, choice, title=_MODEL.value)
  else:
    text = layer_probe.format_probe_table(rows, choice) + f"\n\nchosen: {choice.reason}\n"
  print(f"probe of {_MODEL.value} (K = {_K.value}), * = chosen\n\n{text}", end="")
  if _OUT.value:
    print(f"wrote {_OUT.value}/probe.md, probe.json, probe.png")
