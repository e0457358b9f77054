"""Every shipped config: loads, validates, has the published size, and trains at tiny size."""

import jax
import numpy as np
import pytest
from flax import linen as nn

from conftest import REPO, load_config, shrink_for_tests
from jaxdisco.models.config import ModelConfig
from jaxdisco.models.wav2vec2 import Wav2Vec2ForPretraining
from jaxdisco.methods import check_config, get_method
from jaxdisco.train.metrics import read_metrics
from jaxdisco.train.pretrain import train_and_evaluate


def _num_params(model_config: ModelConfig, samples: int = 16000) -> int:
  model = Wav2Vec2ForPretraining(model_config)
  frames = model_config.num_frames(samples)
  shapes = jax.eval_shape(
      lambda: model.init(
          {"params": jax.random.key(0), "dropout": jax.random.key(1)},
          np.zeros((1, samples), np.float32),
          None,
          np.zeros((1, frames), bool),
          temperature=2.0,
      )
  )
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(shapes)))


@pytest.mark.parametrize("name", ["wav2vec2_base", "wav2vec2_large", "wav2vec2_xlsr_1b"])
def test_full_size_parameter_count_equals_transformers(name):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from jaxdisco.export.huggingface import config_to_hf

  model_config = check_config(load_config(name))
  hf_config = transformers.Wav2Vec2Config(**config_to_hf(model_config))
  with torch.device("meta"):  # shapes only: no 300M-parameter allocation
    hf_model = transformers.Wav2Vec2ForPreTraining(hf_config)
  hf_count = sum(p.numel() for p in hf_model.parameters())
  assert _num_params(model_config) == hf_count
  expected_millions = {"wav2vec2_base": 95, "wav2vec2_large": 317, "wav2vec2_xlsr_1b": 965}[name]
  assert abs(hf_count / 1e6 - expected_millions) < 1.5


@pytest.mark.parametrize(
    "name, paper_millions", [("wavlm_base_plus", 94.70), ("wavlm_large", 316.62)]
)
def test_wavlm_parameter_counts_equal_transformers_and_the_paper(name, paper_millions):
  """The WavLM configs' backbone has exactly the parameters of transformers' WavLMModel built
  from their exported config, and with the HuBERT head at K = 500 the pretraining model has the
  paper's count (Table I of arXiv 2110.13900: 94.70M Base+, 316.62M Large)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from jaxdisco.export.huggingface import config_to_hf
  from jaxdisco.models.wav2vec2 import Wav2Vec2Backbone

  config = load_config(name)
  config.labels.train = "train.km"
  model_config = check_config(config)
  with torch.device("meta"):
    hf_model = transformers.WavLMModel(
        transformers.WavLMConfig(**config_to_hf(model_config, "wavlm"))
    )
  hf_count = sum(p.numel() for p in hf_model.parameters())
  shapes = jax.eval_shape(
      lambda: Wav2Vec2Backbone(model_config).init(
          {"params": jax.random.key(0), "dropout": jax.random.key(1)},
          np.zeros((1, 16000), np.float32),
          None,
          None,
      )
  )
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(tree)))
  assert count(shapes) == hf_count
  method = get_method("wavlm")
  full = jax.eval_shape(method.boxed_init_fn(model_config, config, (1, 16000), 0))
  assert count(full) // 10_000 == round(paper_millions * 100)  # The paper truncates: 94.7068M.


@pytest.mark.parametrize("name", ["wav2vec2_base", "wav2vec2_large"])
def test_config_trains_at_tiny_size_with_its_own_norms(name, tmp_path):
  config = load_config(name)
  mode, first = config.model.extractor_mode, config.model.layer_norm_first
  demo = load_config("demo")
  config.data.train_manifest = demo.data.train_manifest
  config.data.valid_manifest = ""
  config = shrink_for_tests(config)
  config.train.num_steps = 2
  assert (config.model.extractor_mode, config.model.layer_norm_first) == (mode, first)
  summary = train_and_evaluate(config, tmp_path)
  assert summary["step"] == 2
  assert all(np.isfinite(r["loss"]) for r in read_metrics(tmp_path) if "loss" in r)


def test_demo_learns_on_a_shortened_run(tmp_path):
  """The shipped demo, cut to 600 of its 2000 steps: past the initial contrastive plateau the
  accuracy rises and the contrastive loss falls, without codebook collapse."""
  config = load_config("demo")
  config.train.num_steps = 600
  config.train.eval_every = 600
  config.train.checkpoint_every = 600
  train_and_evaluate(config, tmp_path)
  rows = {r["step"]: r for r in read_metrics(tmp_path) if "accuracy" in r}
  plateau = [rows[s] for s in (200, 250, 300)]
  end = [rows[s] for s in (550, 600)]
  plateau_acc = np.mean([r["accuracy"] for r in plateau])
  end_acc = np.mean([r["accuracy"] for r in end])
  assert end_acc > 1.4 * plateau_acc, (plateau_acc, end_acc)
  plateau_loss = np.mean([r["contrastive_loss"] for r in plateau])
  end_loss = np.mean([r["contrastive_loss"] for r in end])
  assert end_loss < plateau_loss - 0.1, (plateau_loss, end_loss)
  assert min(r["code_perplexity"] for s, r in rows.items() if s >= 100) > 6.0  # collapse is 2


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "configs").glob("*.py")))
def test_every_shipped_config_passes_the_pretraining_checks(name):
  """Each file in configs/ loads and validates at its own (full) size; the tests above and in
  test_hubert_training.py, test_hubert_loop.py and test_vq_wav2vec.py train them at tiny size."""
  config = load_config(name)
  if get_method(config.method).uses_labels:
    config.labels.train = "train.km"  # Labels are the one input HuBERT/WavLM configs lack.
  check_config(config)
