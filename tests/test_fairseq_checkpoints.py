"""fairseq checkpoints as the reference: tiny fairseq models (wav2vec 2.0 / XLS-R style, HuBERT,
vq-wav2vec gumbel and k-means) built by fairseq itself and saved the way its
`checkpoint_utils.save_checkpoint` does (the `Trainer.state_dict()` layout through
`torch_persistent_save`; legacy `args` checkpoints in torch's pre-zip format), then loaded by
jaxdisco and compared with fairseq's own outputs. Also: crafted pickles are refused without
running, unsupported options are refused by name, textlesslib's unit pipeline (fairseq features
+ scikit-learn k-means `.bin`) gives the same ids as a jaxdisco tokenizer, and
`train.init_from` continues pretraining from a fairseq `.pt`, a jaxdisco workdir and a Hugging
Face directory."""

import argparse
import dataclasses
import json
import os
import zipfile

import numpy as np
import pytest

try:
  import fairseq  # noqa: F401
  import torch
except ImportError as e:
  # As tests/test_fairseq_parity.py: .ci/run sets JAXDISCO_REQUIRE_ORACLES=1, so in CI a missing
  # oracle fails the run instead of skipping silently.
  if os.environ.get("JAXDISCO_REQUIRE_ORACLES") == "1":
    pytest.fail(f"the fairseq oracle is required (JAXDISCO_REQUIRE_ORACLES=1): {e}", pytrace=False)
  pytest.skip(f"the fairseq oracle is not installed ({e}); see README, Tests",
              allow_module_level=True)

from conftest import load_config, shrink_for_tests  # noqa: E402
from jaxdisco.assets import demo_corpus_dir  # noqa: E402
from jaxdisco.data.audio import read_audio  # noqa: E402
from jaxdisco.data.manifest import read_manifest  # noqa: E402
from jaxdisco.errors import CheckpointError  # noqa: E402
from jaxdisco.export import fairseq_checkpoint as fck  # noqa: E402

# Asserted bounds (float32 on CPU; the maxima measured are in the closing note of issue 16).
HIDDEN_TOL = 5e-5  # max |jaxdisco - fairseq| of every hidden state / projection
# Tiny conv stacks of total stride 320 (wav2vec 2.0 / HuBERT) and 160 (vq-wav2vec).
CONV = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] * 2"
VQ_ENCODER = "[(32, 10, 5), (32, 8, 4), (32, 4, 2), (32, 4, 2), (32, 4, 2), (32, 1, 1)]"
VQ_AGGREGATOR = "[(32, 2, 1), (32, 3, 1), (48, 4, 1)]"  # 32 -> 48: a residual projection.
NUM_LABEL_SYMBOLS = 20  # HuBERT dictionary: 20 units + fairseq's 4 special symbols = 24 rows.


# ----------------------------------------------------------------------------- fairseq side


def _audio(seconds=1.0, count=2):
  """The first `count` demo-corpus utterances cut to `seconds`: [count, samples] float32."""
  manifest = read_manifest(demo_corpus_dir() / "train.tsv")
  n = int(seconds * 16000)
  return np.stack([read_audio(manifest.audio_path(i))[:n] for i in range(count)]).astype(np.float32)


def _full_cfg(model_dc, task_dc, criterion=None) -> dict:
  """The `cfg` entry fairseq's Trainer writes: the whole FairseqConfig as a plain container."""
  from fairseq.dataclass.configs import FairseqConfig
  from omegaconf import OmegaConf, open_dict

  cfg = OmegaConf.structured(FairseqConfig())
  with open_dict(cfg):
    cfg.model = OmegaConf.structured(model_dc)
    cfg.task = OmegaConf.structured(task_dc)
    if criterion is not None:
      cfg.criterion = criterion
  return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def _save_like_fairseq(path, model, *, cfg=None, args=None, task_state=None, legacy=False):
  """`Trainer.state_dict()` saved through `checkpoint_utils.torch_persistent_save`."""
  from fairseq import checkpoint_utils

  optimizer = torch.optim.Adam(model.parameters())
  state = {
      "args": args,
      "cfg": cfg,
      "model": model.state_dict(),
      "criterion": {},
      "optimizer_history": [
          {
              "criterion_name": "ModelCriterion",
              "optimizer_name": "FairseqAdam",
              "lr_scheduler_state": {"best": None},
              "num_updates": 123,
          }
      ],
      "task_state": task_state or {},
      "extra_state": {
          "metrics": {},
          "previous_training_time": 12.5,
          "train_iterator": {"epoch": 2, "iterations_in_epoch": 3, "shuffle": True},
          "val_loss": np.float64(2.5),  # fairseq's meters leave numpy scalars here.
      },
      "last_optimizer_state": optimizer.state_dict(),
  }
  if legacy:  # Checkpoints of torch < 1.6 (the 2019-2020 wav2vec releases): pre-zip format.
    torch.save(state, str(path), _use_new_zipfile_serialization=False)
  else:
    checkpoint_utils.torch_persistent_save(state, str(path))
  return path


def _wav2vec2_fairseq(**overrides):
  from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model

  torch.manual_seed(0)
  fields = dict(
      _name="wav2vec2",
      # XLS-R / LARGE style: layer-norm encoder with bias, pre-LN Transformer.
      extractor_mode="layer_norm",
      conv_bias=True,
      layer_norm_first=True,
      conv_feature_layers=CONV,
      encoder_layers=2,
      encoder_embed_dim=48,
      encoder_ffn_embed_dim=64,
      encoder_attention_heads=2,
      conv_pos=8,
      conv_pos_groups=4,
      final_dim=16,
      quantize_targets=True,
      latent_vars=8,
      latent_groups=2,
  )
  cfg = Wav2Vec2Config(**{**fields, **overrides})
  return Wav2Vec2Model(cfg).eval(), cfg


def _hubert_fairseq(num_symbols=NUM_LABEL_SYMBOLS, **overrides):
  """HuBERT BASE style at the size of `shrink_for_tests` (group norm, post-LN, 32 wide: the
  conv width equals the model width, so fairseq builds no post_extract_proj)."""
  from fairseq.data.dictionary import Dictionary
  from fairseq.models.hubert.hubert import HubertConfig, HubertModel
  from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig

  torch.manual_seed(1)
  dictionary = Dictionary()
  for i in range(num_symbols):
    dictionary.add_symbol(str(i))
  fields = dict(
      _name="hubert",
      label_rate=50.0,
      conv_feature_layers=CONV,
      encoder_layers=2,
      encoder_embed_dim=32,
      encoder_ffn_embed_dim=64,
      encoder_attention_heads=2,
      conv_pos=8,
      conv_pos_groups=4,
      final_dim=16,
      untie_final_proj=True,
  )
  cfg = HubertConfig(**{**fields, **overrides})
  task = HubertPretrainingConfig(
      _name="hubert_pretraining", data="/data", labels=["km"], label_rate=50.0
  )
  return HubertModel(cfg, task, [dictionary]).eval(), cfg, task, dictionary


def _vq_fairseq(vq_type):
  from fairseq.models.wav2vec.wav2vec import Wav2VecConfig, Wav2VecModel

  torch.manual_seed(2)
  cfg = Wav2VecConfig(
      _name="wav2vec",
      conv_feature_layers=VQ_ENCODER,
      conv_aggregator_layers=VQ_AGGREGATOR,
      activation="gelu",
      log_compression=False,
      vq_type=vq_type,
      vq_vars=8,
      vq_groups=2,
      vq_depth=2,
      combine_groups=True,
      prediction_steps=4,
      infonce=True,
  )
  return Wav2VecModel(cfg).eval(), cfg


def _args(cfg, **extra) -> argparse.Namespace:
  """A legacy (pre-hydra) checkpoint's `args`: every option in one flat Namespace."""
  fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "_name"}
  return argparse.Namespace(
      arch=cfg._name, task="audio_pretraining", sample_rate=16000, normalize=False, lr=[1e-5],
      optimizer="adam", max_update=400000, **fields, **extra
  )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """{name: (path, fairseq model)} for the five fairseq checkpoints of this file."""
  from fairseq.criterions.hubert_criterion import HubertCriterionConfig
  from fairseq.tasks.audio_pretraining import AudioPretrainingConfig

  out = tmp_path_factory.mktemp("fairseq")
  found = {}
  w2v2, w2v2_cfg = _wav2vec2_fairseq()
  task = AudioPretrainingConfig(_name="audio_pretraining", data="/data", normalize=True)
  found["wav2vec2"] = (_save_like_fairseq(out / "w2v2.pt", w2v2, cfg=_full_cfg(w2v2_cfg, task)),
                       w2v2)
  found["wav2vec2_args"] = (
      _save_like_fairseq(out / "w2v2_args.pt", w2v2, args=_args(w2v2_cfg), legacy=True),
      w2v2,
  )
  hubert, hubert_cfg, hubert_task, dictionary = _hubert_fairseq()
  criterion = dataclasses.asdict(HubertCriterionConfig())
  criterion["_name"] = "hubert"
  found["hubert"] = (
      _save_like_fairseq(
          out / "hubert.pt",
          hubert,
          cfg=_full_cfg(hubert_cfg, hubert_task, criterion),
          task_state={"dictionaries": [dictionary]},  # What HubertPretrainingTask saves.
      ),
      hubert,
  )
  gumbel, gumbel_cfg = _vq_fairseq("gumbel")
  found["vq_gumbel_args"] = (
      _save_like_fairseq(out / "vq_gumbel.pt", gumbel, args=_args(gumbel_cfg), legacy=True),
      gumbel,
  )
  kmeans, kmeans_cfg = _vq_fairseq("kmeans")
  task = AudioPretrainingConfig(_name="audio_pretraining", data="/data")
  found["vq_kmeans"] = (
      _save_like_fairseq(out / "vq_kmeans.pt", kmeans, cfg=_full_cfg(kmeans_cfg, task)),
      kmeans,
  )
  return found


def _max_diff(ours, theirs) -> float:
  return float(np.max(np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))))


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    "name, method, source",
    [
        ("wav2vec2", "wav2vec2", "cfg"),
        ("wav2vec2_args", "wav2vec2", "args"),
        ("hubert", "hubert", "cfg"),
        ("vq_gumbel_args", "vq_wav2vec", "args"),
        ("vq_kmeans", "vq_wav2vec", "cfg"),
    ],
)
def test_reads_the_checkpoints_fairseq_writes(checkpoints, name, method, source):
  path, _ = checkpoints[name]
  # Every global the file names beyond torch's own is on jaxdisco's list (torch lists them for
  # its zip format only; the legacy files are read below all the same).
  unsafe = set()
  if zipfile.is_zipfile(path):
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
  assert unsafe <= set(fck.ALLOWED_GLOBALS), unsafe - set(fck.ALLOWED_GLOBALS)
  checkpoint = fck.read_fairseq_checkpoint(path)
  assert checkpoint.config_source == source and checkpoint.num_updates == 123
  model = fck.load_fairseq_checkpoint(path)
  assert model.method == method and model.step == 123
  if name == "hubert":
    assert "fairseq.data.dictionary.Dictionary" in unsafe
    assert model.label_set_sizes == (NUM_LABEL_SYMBOLS + 4,)
    # Label id k is the Dictionary's symbol "k", row 4 + k: the special rows are dropped.
    assert model.label_embeddings_per_unit
    assert model.run_fields["labels.num_classes"] == NUM_LABEL_SYMBOLS
    assert model.run_fields["objective.label_rate"] == 50.0
    assert model.run_fields["objective.untie_final_proj"] is True
    assert model.run_fields["objective.logit_temperature"] == 0.1
  if name == "wav2vec2":
    assert model.run_fields["data.normalize"] is True  # task.normalize
    assert model.config.layer_norm_first and model.config.extractor_mode == "layer_norm"


def test_hubert_without_its_label_dictionary_keeps_every_row(tmp_path):
  """Without task_state fairseq's rows cannot be matched to label ids: label_embeddings is
  label_embs_concat whole, and init_from will not take it over (see the init_from tests)."""
  model, cfg, task, _ = _hubert_fairseq()
  path = _save_like_fairseq(tmp_path / "x.pt", model, cfg=_full_cfg(cfg, task))
  loaded = fck.load_fairseq_checkpoint(path)
  assert not loaded.label_embeddings_per_unit and "labels.num_classes" not in loaded.run_fields
  np.testing.assert_array_equal(
      loaded.params["params"]["label_embeddings"], model.label_embs_concat.detach().numpy()
  )


def test_legacy_args_read_as_the_cfg_checkpoint(checkpoints):
  """The same model saved as a pre-hydra `args` checkpoint in torch's old format loads as the
  same config and parameters."""
  a = fck.load_fairseq_checkpoint(checkpoints["wav2vec2"][0])
  b = fck.load_fairseq_checkpoint(checkpoints["wav2vec2_args"][0])
  assert a.config == b.config
  flat = lambda t: {k: v for k, v in _flatten(t)}
  pa, pb = flat(a.params), flat(b.params)
  assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)


def _flatten(tree, prefix=()):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _flatten(v, prefix + (k,))
    else:
      yield prefix + (k,), v


class _RunsCode:
  def __init__(self, call, *args):
    self.call, self.args = call, args

  def __reduce__(self):
    return self.call, self.args


@pytest.mark.parametrize(
    "call, named",
    [
        (os.system, "posix.system"),
        (eval, "eval"),
        (exec, "exec"),
        (getattr, "getattr"),
    ],
)
def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path, call, named):
  marker = tmp_path / "ran"
  payload = {
      os.system: (f"touch {marker}",),
      eval: (f"open({str(marker)!r}, 'w').write('x')",),
      exec: (f"open({str(marker)!r}, 'w').write('x')",),
      getattr: ("x", "upper"),
  }[call]
  path = tmp_path / "crafted.pt"
  # A fairseq-looking checkpoint with the payload where the training state would be.
  torch.save(
      {
          "cfg": {"model": {"_name": "hubert"}},
          "model": {},
          "extra_state": _RunsCode(call, *payload),
      },
      str(path),
  )
  import jaxdisco

  with pytest.raises(CheckpointError, match=f"refused to unpickle: it names {named}"):
    jaxdisco.load_pretrained(str(path))
  assert not marker.exists()


def test_torchscript_archive_is_refused(tmp_path):
  path = tmp_path / "scripted.pt"
  torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
  with pytest.raises(CheckpointError, match="TorchScript"):
    fck.read_fairseq_checkpoint(path)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(activation_fn="relu"), "model.activation_fn='relu'"),
        (dict(target_glu=True), "model.target_glu=True"),
        (dict(conv_pos_batch_norm=True), "model.conv_pos_batch_norm=True"),
        (dict(layer_type="conformer"), "model.layer_type='conformer'"),
    ],
)
def test_unrepresentable_options_are_refused_by_name(tmp_path, overrides, field):
  from fairseq.models.hubert.hubert import HubertConfig

  model, cfg, task, dictionary = _hubert_fairseq()
  # The option's value goes into the saved config only: the refusal reads the config.
  cfg = HubertConfig(**{**dataclasses.asdict(cfg), **overrides})
  path = _save_like_fairseq(tmp_path / "x.pt", model, cfg=_full_cfg(cfg, task))
  with pytest.raises(CheckpointError, match=field.replace("(", r"\(").replace(")", r"\)")):
    fck.load_fairseq_checkpoint(path)


def test_unknown_set_option_and_fine_tuned_models_are_refused(tmp_path):
  model, cfg, task, _ = _hubert_fairseq()
  full = _full_cfg(cfg, task)
  full["model"]["new_fancy_option"] = True
  path = _save_like_fairseq(tmp_path / "x.pt", model, cfg=full)
  with pytest.raises(CheckpointError, match="model.new_fancy_option=True"):
    fck.load_fairseq_checkpoint(path)
  full["model"] = dict(full["model"], _name="hubert_ctc")
  del full["model"]["new_fancy_option"]
  path = _save_like_fairseq(tmp_path / "y.pt", model, cfg=full)
  with pytest.raises(CheckpointError, match="model._name='hubert_ctc'"):
    fck.load_fairseq_checkpoint(path)


# ----------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("name", ["wav2vec2", "wav2vec2_args"])
def test_wav2vec2_outputs_match_fairseq(checkpoints, name):
  import jax.numpy as jnp

  import jaxdisco
  from jaxdisco.models.wav2vec2 import Wav2Vec2ForPretraining

  path, reference = checkpoints[name]
  wav = _audio()
  with torch.no_grad():
    res = reference.extract_features(torch.from_numpy(wav), None, mask=False)
    _, theirs_codes = reference.quantize(torch.from_numpy(wav))
  model = jaxdisco.load_pretrained(str(path))
  assert model.model_type == "wav2vec2"
  out = model.extract_features(wav)
  diffs = [_max_diff(out["last_hidden_state"], res["x"].numpy())]
  for i, (x, _, _) in enumerate(res["layer_results"]):
    diffs.append(_max_diff(out["hidden_states"][i + 1], x.transpose(0, 1).numpy()))
  print(f"{name}: max |hidden - fairseq| {max(diffs):.2e}")
  assert max(diffs) <= HIDDEN_TOL, diffs
  # The quantizer head: the argmax codes of the conv features are fairseq's, frame for frame.
  frames = model.config.num_frames(wav.shape[1])
  codes = Wav2Vec2ForPretraining(model.config).apply(
      model.params, jnp.asarray(wav), None, jnp.zeros((wav.shape[0], frames), bool),
      temperature=2.0, deterministic=True,
  ).codes
  np.testing.assert_array_equal(np.asarray(codes), theirs_codes.numpy())


def test_hubert_outputs_match_fairseq(checkpoints):
  import jax.numpy as jnp

  import jaxdisco
  from jaxdisco.models.hubert import HubertForPretraining

  path, reference = checkpoints["hubert"]
  wav = _audio()
  model = jaxdisco.load_pretrained(str(path))
  assert model.model_type == "hubert"
  out = model.extract_features(wav)
  diffs = []
  with torch.no_grad():
    for layer in range(1, model.config.num_layers + 1):  # fairseq's output_layer is 1-based.
      theirs, _ = reference.extract_features(torch.from_numpy(wav), output_layer=layer)
      diffs.append(_max_diff(out["hidden_states"][layer], theirs.numpy()))
    last, _ = reference.extract_features(torch.from_numpy(wav))
    theirs_proj = reference.final_proj(last).numpy()
  # The pretraining heads: final_proj and the label embeddings HuBERT scores against.
  heads = HubertForPretraining(model.config, (NUM_LABEL_SYMBOLS,), True).apply(
      model.params, jnp.asarray(wav), None, None
  )
  diffs.append(_max_diff(heads.projections[0], theirs_proj))
  np.testing.assert_array_equal(
      np.asarray(heads.label_embeddings[0]), reference.label_embs_concat.detach().numpy()[4:]
  )
  print(f"hubert: max |hidden, projection - fairseq| {max(diffs):.2e}")
  assert max(diffs) <= HIDDEN_TOL, diffs


@pytest.mark.parametrize("name", ["vq_gumbel_args", "vq_kmeans"])
def test_vq_wav2vec_outputs_match_fairseq(checkpoints, name):
  import jax.numpy as jnp

  import jaxdisco
  from jaxdisco.models.wav2vec1 import VqWav2Vec

  path, reference = checkpoints[name]
  wav = _audio()
  with torch.no_grad():
    z = reference.feature_extractor(torch.from_numpy(wav))
    q = reference.vector_quantizer(z)
    _, theirs_codes = reference.vector_quantizer.forward_idx(z)
    context = reference.feature_aggregator(q["x"])
    theirs_steps = reference.wav2vec_predictions.project_to_steps(context.unsqueeze(-1))
  model = jaxdisco.load_pretrained(str(path))
  assert model.model_type == "vq_wav2vec"
  out = VqWav2Vec(model.config).apply(model.params, jnp.asarray(wav))
  np.testing.assert_array_equal(np.asarray(out.codes), theirs_codes.numpy())
  # [batch, dim, frames] / [batch, dim, frames, steps] in fairseq.
  diffs = [
      _max_diff(out.targets, q["x"].transpose(1, 2).numpy()),
      _max_diff(out.predictions, theirs_steps.permute(0, 2, 3, 1).numpy()),
  ]
  print(f"{name}: max |z_hat, step predictions - fairseq| {max(diffs):.2e}")
  assert max(diffs) <= HIDDEN_TOL, diffs


# ----------------------------------------------------------------------------- textlesslib units


def _textlesslib_features(model, wav: np.ndarray, layer: int, normalize: bool) -> np.ndarray:
  """textlesslib's HubertFeatureReader.get_feats (and GSLM's speech2unit): the whole utterance
  through fairseq's extract_features at the 1-based output_layer, after task.normalize."""
  with torch.no_grad():
    x = torch.from_numpy(wav).float()
    if normalize:
      x = torch.nn.functional.layer_norm(x, x.shape)
    feats, _ = model.extract_features(
        source=x.view(1, -1), padding_mask=None, mask=False, output_layer=layer
    )
  return feats.squeeze(0).numpy()


@pytest.mark.parametrize("style, layer", [("post_ln", 1), ("pre_ln", 2)])
def test_textlesslib_units_equal_a_jaxdisco_tokenizer(checkpoints, tmp_path, style, layer):
  """fairseq HuBERT `.pt` + scikit-learn k-means `.bin`, as textlesslib / GSLM run them, against
  the same two files exported as a jaxdisco tokenizer. pre_ln clusters the last layer: fairseq's
  output_layer=L returns it before the final LayerNorm, as jaxdisco's hidden_states[L] does."""
  import joblib
  from sklearn.cluster import MiniBatchKMeans

  from jaxdisco.export.tokenizer import export_tokenizer
  from jaxdisco.tokenizer import Tokenizer

  if style == "post_ln":
    path, reference = checkpoints["hubert"]
  else:  # HuBERT LARGE style: layer-norm encoder, pre-LN Transformer.
    reference, cfg, task, dictionary = _hubert_fairseq(
        extractor_mode="layer_norm", conv_bias=True, layer_norm_first=True
    )
    path = _save_like_fairseq(
        tmp_path / "hubert_large_style.pt", reference, cfg=_full_cfg(cfg, task),
        task_state={"dictionaries": [dictionary]},
    )
  manifest = read_manifest(demo_corpus_dir() / "valid.tsv")
  waves = [read_audio(manifest.audio_path(i)).astype(np.float32) for i in range(8)]
  feats = [_textlesslib_features(reference, w, layer, normalize=False) for w in waves]
  kmeans = MiniBatchKMeans(n_clusters=20, batch_size=10_000, n_init=3, random_state=0)
  kmeans.fit(np.concatenate(feats))
  km_path = tmp_path / "km.bin"
  joblib.dump(kmeans, km_path)

  out = export_tokenizer(
      str(path), tmp_path / "tok", layer=layer, centroids=str(km_path), export_lengths=(),
      progress=None,
  )
  manifest = json.loads((out / "tokenizer.json").read_text())
  assert manifest["source"] == f"fairseq:{os.path.abspath(path)}" and manifest["source_step"] == 123
  assert manifest["model_type"] == "hubert"
  ids = Tokenizer.load(out).encode(waves)
  same = total = 0
  for ours, f in zip(ids, feats):
    theirs = kmeans.predict(f)
    assert len(ours) == len(theirs)
    same += int(np.sum(np.asarray(ours) == theirs))
    total += len(theirs)
  print(f"textlesslib units ({style}, layer {layer}): {same}/{total} frames identical "
        f"({same / total:.4f})")
  assert same / total >= 0.995


# ----------------------------------------------------------------------------- train.init_from


def _hubert_run_config(tmp_path, *, num_classes, init_from, num_steps=1):
  """`shrink_for_tests(hubert_base_iter1)` (the architecture of the fairseq HuBERT above) on
  the demo corpus with random 50 Hz labels. The warm-up starts at learning rate 0, so after
  one step the weights a run saves are the weights it started from."""
  config = shrink_for_tests(load_config("hubert_base_iter1"))
  manifest_path = demo_corpus_dir() / "train.tsv"
  manifest = read_manifest(manifest_path)
  rng = np.random.default_rng(0)
  labels = [
      rng.integers(0, num_classes, round(manifest.num_samples[i] * 50 / 16000))
      for i in range(len(manifest))
  ]
  km = tmp_path / f"train_{num_classes}.km"
  km.write_text("".join(" ".join(map(str, lab)) + "\n" for lab in labels))
  config.data.train_manifest = str(manifest_path)
  config.data.valid_manifest = ""
  config.labels.train = str(km)
  config.labels.num_classes = num_classes
  config.objective.label_rate = 50.0
  config.optim.warmup_steps = num_steps
  config.train.num_steps = num_steps
  config.train.init_from = str(init_from)
  return config


def _params(path) -> dict:
  from jaxdisco.train.checkpoint import load_pretrained_params

  return {k: np.asarray(v) for k, v in _flatten(load_pretrained_params(path).params["params"])}


def _assert_same(ours: dict, theirs: dict, prefix: str):
  keys = [k for k in ours if k[0] == prefix]
  assert keys and all(np.array_equal(ours[k], np.asarray(theirs[k])) for k in keys)


@pytest.fixture(scope="module")
def run_from_fairseq(checkpoints, tmp_path_factory):
  """A HuBERT run started from the fairseq `.pt` with the same K (20): (workdir, its log)."""
  import contextlib
  import io

  from jaxdisco.train.pretrain import train_and_evaluate

  tmp = tmp_path_factory.mktemp("init_from_fairseq")
  config = _hubert_run_config(
      tmp, num_classes=NUM_LABEL_SYMBOLS, init_from=checkpoints["hubert"][0]
  )
  log = io.StringIO()
  with contextlib.redirect_stdout(log):
    summary = train_and_evaluate(config, tmp / "run")
  assert summary["step"] == 1
  return tmp / "run", log.getvalue()


def test_init_from_fairseq_checkpoint(checkpoints, run_from_fairseq):
  workdir, log = run_from_fairseq
  source = dict(_flatten(fck.load_fairseq_checkpoint(checkpoints["hubert"][0]).params["params"]))
  ours = _params(workdir)
  for part in ("backbone", "final_proj", "label_embeddings"):
    _assert_same(ours, source, part)
  assert "steps 0->1" in log  # A fresh run: step 0, not the checkpoint's 123 updates.
  assert f"from fairseq:{checkpoints['hubert'][0]}; fresh optimizer, step 0" in log
  assert "HuBERT label embeddings taken over (the same 20 classes)" in log


def test_init_from_new_label_set_reinitialises_label_embeddings(checkpoints, tmp_path, capsys):
  from jaxdisco.train.pretrain import train_and_evaluate

  config = _hubert_run_config(tmp_path, num_classes=12, init_from=checkpoints["hubert"][0])
  train_and_evaluate(config, tmp_path / "run")
  log = capsys.readouterr().out
  assert (
      "train.init_from: HuBERT label embeddings (a new label set) re-initialised "
      "(label_embeddings: shape (20, 16) in the source, (12, 16) in the run)" in log
  )
  source = dict(_flatten(fck.load_fairseq_checkpoint(checkpoints["hubert"][0]).params["params"]))
  ours = _params(tmp_path / "run")
  _assert_same(ours, source, "backbone")
  _assert_same(ours, source, "final_proj")  # Same shape: taken over.
  assert ours[("label_embeddings",)].shape == (12, 16)


def test_init_from_jaxdisco_workdir_and_hugging_face_directory(run_from_fairseq, tmp_path, capsys):
  from jaxdisco.export.huggingface import save_hf_checkpoint
  from jaxdisco.train.checkpoint import load_pretrained_params
  from jaxdisco.train.pretrain import train_and_evaluate

  workdir, _ = run_from_fairseq
  source = _params(workdir)
  config = _hubert_run_config(tmp_path, num_classes=NUM_LABEL_SYMBOLS, init_from=workdir)
  train_and_evaluate(config, tmp_path / "from_workdir")
  assert f"from jaxdisco:{workdir} (step 1)" in capsys.readouterr().out
  ours = _params(tmp_path / "from_workdir")
  assert ours.keys() == source.keys() and all(np.array_equal(ours[k], source[k]) for k in ours)

  loaded = load_pretrained_params(workdir)
  save_hf_checkpoint(tmp_path / "hf", loaded.config, loaded.params, "hubert")  # No heads.
  config = _hubert_run_config(tmp_path, num_classes=NUM_LABEL_SYMBOLS, init_from=tmp_path / "hf")
  train_and_evaluate(config, tmp_path / "from_hf")
  log = capsys.readouterr().out
  assert "train.init_from: final_proj re-initialised (final_proj/bias: absent from the source)" in (
      log
  )
  assert "HuBERT label embeddings (a new label set) re-initialised" in log
  _assert_same(_params(tmp_path / "from_hf"), source, "backbone")


def test_init_from_refuses_another_architecture_or_method(checkpoints, tmp_path):
  from jaxdisco.train.pretrain import train_and_evaluate

  config = _hubert_run_config(
      tmp_path, num_classes=NUM_LABEL_SYMBOLS, init_from=checkpoints["hubert"][0]
  )
  config.model.num_layers = 3
  config.model.final_dim = 32
  with pytest.raises(CheckpointError) as err:
    train_and_evaluate(config, tmp_path / "deeper")
  assert "model.num_layers: the source has 2, the config has 3" in str(err.value)
  assert "model.final_dim: the source has 16, the config has 32" in str(err.value)

  config = shrink_for_tests(load_config("demo"))
  config.train.init_from = str(checkpoints["hubert"][0])
  with pytest.raises(CheckpointError, match="method: the source is a hubert model"):
    train_and_evaluate(config, tmp_path / "wav2vec2")


def test_resuming_a_workdir_takes_precedence_over_init_from(run_from_fairseq, tmp_path, capsys):
  import shutil

  from jaxdisco.train.pretrain import train_and_evaluate

  workdir, _ = run_from_fairseq
  shutil.copytree(workdir, tmp_path / "run")
  # Another init_from than the run was started with: it is neither read nor held against the
  # resume (train.* fields are not compared).
  config = _hubert_run_config(
      tmp_path, num_classes=NUM_LABEL_SYMBOLS, init_from=tmp_path / "no-such.pt", num_steps=2
  )
  summary = train_and_evaluate(config, tmp_path / "run")
  log = capsys.readouterr().out
  assert summary["step"] == 2 and "(step 1)" in log
  assert "not used: the workdir's checkpoint takes precedence" in log


def test_init_from_fairseq_wav2vec2_takes_over_every_head(checkpoints, tmp_path, capsys):
  from jaxdisco.train.pretrain import train_and_evaluate

  path = checkpoints["wav2vec2"][0]
  config = shrink_for_tests(load_config("demo"))  # The fixture's XLS-R style backbone...
  config.model.embed_dim = 48  # ...at its width.
  config.data.valid_manifest = ""
  config.train.num_steps = config.optim.warmup_steps = 1  # Step 1 at learning rate 0.
  config.train.init_from = str(path)
  train_and_evaluate(config, tmp_path / "run")
  log = capsys.readouterr().out
  assert "re-initialised" not in log and "fresh optimizer, step 0" in log
  source = dict(_flatten(fck.load_fairseq_checkpoint(path).params["params"]))
  ours = _params(tmp_path / "run")
  assert ours.keys() == source.keys()
  for part in ("backbone", "quantizer", "project_q", "final_proj"):
    _assert_same(ours, source, part)


def test_export_tokenizer_command_refuses_a_crafted_pt_in_one_line(tmp_path):
  from conftest import run_cli

  marker = tmp_path / "ran"
  path = tmp_path / "x.pt"
  torch.save({"cfg": {"model": {}}, "model": {}, "x": _RunsCode(os.system, f"touch {marker}")},
             str(path))
  result = run_cli("export-tokenizer", "--workdir", str(path), "--out", str(tmp_path / "tok"),
                   "--layer", "1")
  assert result.returncode == 2, result.stderr
  lines = [line for line in result.stderr.splitlines() if "error" in line]
  assert len(lines) == 1 and "refused to unpickle: it names posix.system" in lines[0]
  assert not marker.exists()
