"""`jaxdisco eval-units --units X.km --alignments A.jsonl [--manifest M.tsv] [--frame-rate 50]
[--plot out.png] [--baseline B.km [--baseline-frame-rate 100]]`: PNMI, phone purity and cluster
purity of units against phone alignments; with `--baseline`, also the PNMI gain over B on the
utterances both cover, with its paired-bootstrap spread over utterances.

Next to PNMI it prints the units' bitrate and code usage (`jaxdisco.evaluation.unit_stats`:
tokens/s x entropy, the ZeroSpeech bitrate, and tokens/s x log2 K, before and after merging
repeats; mean run length; codes used and perplexity). With `--abx`, the ABX error rates
(`jaxdisco.evaluation.abx`, ZeroSpeech 2021 / libri-light; within / across speaker, within /
any context) of the units (identity distance) and, given `--features DIR` (a feature dump of
`jaxdisco.clustering.features`), of those features (angular distance). Items come from
`--items FILE` or are made from the alignments' triphones, with speakers from `--speakers`
(JSONL `{"id", "speaker"}` or the demo corpus' `meta.jsonl` with `voice`; default: the id up to
its first '-', LibriSpeech style).

The `.km` lines are matched to alignment ids through `--manifest` (the lines follow manifest
order, as fairseq writes them) or, without it, through the sidecar `X.km.ids` that jaxdisco
writes. See `jaxdisco.evaluation.units` for the frame convention.
"""

from absl import app, flags

from jaxdisco.errors import UserError

_UNITS = flags.DEFINE_string("units", None, "A .km file: one line of unit ids per utterance.")
_ALIGNMENTS = flags.DEFINE_string(
    "alignments", None, 'JSONL phone alignments: {"id": ..., "phones": [[p, start, end]]}.'
)
_MANIFEST = flags.DEFINE_string(
    "manifest", None, "Manifest the .km lines follow; default: the sidecar UNITS.ids."
)
_FRAME_RATE = flags.DEFINE_float("frame-rate", 50.0, "Unit frames per second (MFCC: 100).")
_WINDOW = flags.DEFINE_float("window", 0.025, "Seconds covered by one frame.")
_MAX_FRAME_DIFF = flags.DEFINE_integer(
    "max-frame-diff", 1, "Allowed per-utterance difference between unit and expected frames."
)
_PLOT = flags.DEFINE_string("plot", None, "Optional PNG of p(phone | unit).")
_BASELINE = flags.DEFINE_string(
    "baseline",
    None,
    "Another .km file (with its .ids sidecar, or following --manifest) to compare.",
)
_BASELINE_RATE = flags.DEFINE_float(
    "baseline-frame-rate", None, "Frame rate of --baseline; default --frame-rate."
)
_VOCAB = flags.DEFINE_integer(
    "vocab-size", None, "Codebook size K for the bitrate; default: largest unit + 1."
)
_ABX = flags.DEFINE_boolean("abx", False, "Also ABX error rates (ZeroSpeech 2021 / libri-light).")
_ITEMS = flags.DEFINE_string(
    "items", None, "ABX item file; default: triphones of --alignments (written to --save-items)."
)
_SAVE_ITEMS = flags.DEFINE_string("save-items", None, "Where to write the item file made.")
_SPEAKERS = flags.DEFINE_string(
    "speakers", None, 'JSONL {"id", "speaker"} (or "voice"); default: id up to its first "-".'
)
_SPAN = flags.DEFINE_enum(
    "abx-span", "triphone", ["triphone", "phone"], "Frames of an item: its triphone or phone."
)
_FEATURES = flags.DEFINE_string(
    "features", None, "A feature dump directory (meta.json + shards) for ABX on features."
)
_FEATURE_RATE = flags.DEFINE_float(
    "features-frame-rate", None, "Frame rate of --features; default --frame-rate."
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _UNITS.value is None or _ALIGNMENTS.value is None:
    raise app.UsageError("eval-units needs --units and --alignments")
  from jaxdisco.evaluation import units  # pylint: disable=g-import-not-at-top

  # Bad inputs raise jaxdisco.errors.UserError subclasses: `jaxdisco` prints them as one line.
  metrics, phones, unit_frames = units.evaluate_km_file(
      _UNITS.value,
      _ALIGNMENTS.value,
      manifest_path=_MANIFEST.value,
      frame_rate=_FRAME_RATE.value,
      window=_WINDOW.value,
      max_frame_diff=_MAX_FRAME_DIFF.value,
  )
  spread = _quality_spread()
  print(
      f"utterances      {metrics['utterances']}\n"
      f"frames          {metrics['frames']} (length differences: {metrics['frame_diff']})\n"
      f"phones / units  {metrics['num_phones']} / {metrics['num_units']}\n"
      f"PNMI            {metrics['pnmi']:.4f} (bootstrap s.d. {spread['pnmi_std']:.4f} over "
      "utterances)\n"
      f"phone purity    {metrics['phone_purity']:.4f} (s.d. {spread['phone_purity_std']:.4f})\n"
      f"cluster purity  {metrics['cluster_purity']:.4f} (s.d. "
      f"{spread['cluster_purity_std']:.4f})\n"
      f"H(phone)        {metrics['phone_entropy']:.4f} nats\n"
      f"I(phone; unit)  {metrics['mutual_info']:.4f} nats"
  )
  from jaxdisco.evaluation import unit_stats  # pylint: disable=g-import-not-at-top

  km_units, _ = units.read_km_with_ids(_UNITS.value, _MANIFEST.value)
  stats = unit_stats.unit_statistics(
      km_units, frame_rate=_FRAME_RATE.value, vocab_size=_VOCAB.value
  )
  print(unit_stats.format_statistics(stats, _FRAME_RATE.value))
  if _ABX.value:
    _print_abx()
  if _PLOT.value:
    units.plot_cooccurrence(phones, unit_frames, _PLOT.value, title=_UNITS.value)
    print(f"plot            {_PLOT.value}")
  if _BASELINE.value:
    try:
      gain = _gain_over_baseline()
    except UserError as e:  # Say which of the two unit sets the problem is in.
      raise type(e)(f"--baseline: {e}") from e
    print(
        f"PNMI gain       {gain['gain']:+.4f} over {_BASELINE.value} (bootstrap s.d. "
        f"{gain['std']:.4f}, P(gain > 0) {gain['p_positive']:.2f}, "
        f"{gain['utterances']} shared utterances)"
    )


def _quality_spread() -> dict:
  from jaxdisco.evaluation import bootstrap, units  # pylint: disable=g-import-not-at-top

  frames = bootstrap.utterance_frames(
      units.read_alignments(_ALIGNMENTS.value),
      *units.read_km_with_ids(_UNITS.value, _MANIFEST.value),
      frame_rate=_FRAME_RATE.value,
  )
  return bootstrap.quality_spread(frames)


def _gain_over_baseline() -> dict:
  from jaxdisco.evaluation import bootstrap, units  # pylint: disable=g-import-not-at-top

  alignments = units.read_alignments(_ALIGNMENTS.value)
  rate = _FRAME_RATE.value
  sides = [
      (_BASELINE.value, rate if _BASELINE_RATE.value is None else _BASELINE_RATE.value),
      (_UNITS.value, rate),
  ]
  before, after = (
      bootstrap.utterance_frames(
          alignments, *units.read_km_with_ids(path, _MANIFEST.value), frame_rate=r
      )
      for path, r in sides
  )
  return bootstrap.pnmi_gain(before, after)


def _print_abx() -> None:
  from jaxdisco.clustering import features as features_lib  # pylint: disable=g-import-not-at-top
  from jaxdisco.evaluation import abx, abx_items, units  # pylint: disable=g-import-not-at-top

  if _ITEMS.value:
    items = abx_items.read_item_file(_ITEMS.value)
  else:
    alignments = units.read_alignments(_ALIGNMENTS.value)
    speakers = abx_items.read_speakers(_SPEAKERS.value, alignments)
    items = abx_items.triphone_items(alignments, speakers, span=_SPAN.value)
    if _SAVE_ITEMS.value:
      abx_items.write_item_file(_SAVE_ITEMS.value, items)
  km_units, ids = units.read_km_with_ids(_UNITS.value, _MANIFEST.value)
  sources = [("units", dict(zip(ids, km_units)), _FRAME_RATE.value)]
  if _FEATURES.value:
    features, feature_ids = features_lib.load_layer_features(_FEATURES.value)
    rate = _FEATURE_RATE.value or _FRAME_RATE.value
    sources.append(("features", dict(zip(feature_ids, features)), rate))
  source = f"from {_ITEMS.value}" if _ITEMS.value else f"{_SPAN.value}s of the alignments"
  print(f"ABX items       {len(items)} ({source})")
  for name, data, rate in sources:
    scores = abx.abx_error_rates(data, items, frame_rate=rate)
    print(f"ABX {name:<11} " + abx.format_scores(scores))
