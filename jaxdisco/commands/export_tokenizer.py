"""`jaxdisco export-tokenizer --workdir DIR --out DIR [--layer L --centroids PATH]
[--units kmeans|codebook|vq_wav2vec|dinosr|best_rq] [--export-lengths 16000,32000,...]`:
writes a frozen tokenizer directory (see `jaxdisco.export.tokenizer`). `--workdir` is a training workdir / checkpoint, a
Hugging Face directory or a fairseq `.pt` checkpoint."""

from absl import app, flags

from jaxdisco.export.huggingface import MODEL_TYPES
from jaxdisco.export.unit_kinds import UNIT_KINDS

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Training workdir, checkpoint step dir, Hugging Face directory or fairseq .pt."
)
_OUT = flags.DEFINE_string("out", None, "Tokenizer directory to write.")
_LAYER = flags.DEFINE_integer("layer", None, "hidden_states index of the units (kmeans).")
_CENTROIDS = flags.DEFINE_string(
    "centroids", None, "save_centroids path prefix (PREFIX.npy + PREFIX.json) or sklearn joblib."
)
_UNITS = flags.DEFINE_enum(
    "units",
    "kmeans",
    list(UNIT_KINDS),
    "Kind of units; which ones a model exports is its method's (vq_wav2vec: the codes of a "
    "vq-wav2vec run; dinosr: the teacher's codebook index at --layer; best_rq: the frozen "
    "quantizer's ids).",
)
_LENGTHS = flags.DEFINE_list(
    "export-lengths",
    ["16000", "32000", "80000", "160000", "320000"],
    "Input lengths (samples) of the StableHLO programs; empty for none.",
)
_NORMALIZE = flags.DEFINE_enum(
    "normalize", "auto", ["auto", "true", "false"], "Waveform normalization (auto: the source's)."
)
_HF_MODEL_TYPE = flags.DEFINE_enum(
    "hf-model-type", None, list(MODEL_TYPES), "model_type of hf/ (default: the source's)."
)

_CONVENTION = flags.DEFINE_enum(
    "hidden-states-convention",
    None,
    ["transformers5", "transformers4"],
    "Which tensor --layer names when it is the last layer of a pre-LN model: its output before "
    "the final LayerNorm (transformers5) or after (transformers4). Default: the one recorded "
    "with the centroids, else transformers5.",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value or not _OUT.value:
    raise app.UsageError("export-tokenizer needs --workdir and --out")
  from jaxdisco.export.tokenizer import export_tokenizer  # pylint: disable=g-import-not-at-top

  try:
    lengths = [int(n) for n in _LENGTHS.value if n.strip()]
  except ValueError as e:
    raise app.UsageError(f"--export-lengths: expected integers, got {_LENGTHS.value}") from e
  normalize = {"auto": None, "true": True, "false": False}[_NORMALIZE.value]
  export_tokenizer(
      _WORKDIR.value,
      _OUT.value,
      layer=_LAYER.value,
      centroids=_CENTROIDS.value,
      units=_UNITS.value,
      export_lengths=lengths,
      normalize=normalize,
      hf_model_type=_HF_MODEL_TYPE.value,
      hidden_states_convention=_CONVENTION.value,
  )
