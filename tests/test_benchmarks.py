"""The benchmark suite's own logic: its analytic FLOP model (checked against XLA's cost analysis
of the lowered programs, nothing is run), the `python -m benchmarks` runner, and the step
profiler's attribution of traced ops to model parts."""

from __future__ import annotations

import sys
import types

import jax
import jax.numpy as jnp
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))  # benchmarks/ is a top-level folder, not an installed package.
from benchmarks import __main__ as runner  # noqa: E402
from benchmarks import step_profile, train_step  # noqa: E402
from jaxdisco.models.feature_encoder import strided_conv1d  # noqa: E402
from jaxdisco.models.hubert import HubertForPretraining  # noqa: E402
from jaxdisco.models.wav2vec2 import Wav2Vec2ForPretraining  # noqa: E402

BATCH, SAMPLES = 4, 32_000  # The benchmark's CPU shapes: lowering only, so size costs nothing.


def _xla_flops(fn, *args) -> float:
  return jax.jit(fn).lower(*args).cost_analysis()["flops"]


@pytest.fixture(scope="module")
def cfg():
  return train_step.bench_model_config("cpu")


def test_conv_flops_equal_xla_dot_flops(cfg):
  """Per conv layer, the counted multiply-adds x 2 are exactly what XLA's dot performs."""
  length, c_in, total = SAMPLES, 1, 0.0
  for c_out, kernel, stride in cfg.conv_spec:
    x = jax.ShapeDtypeStruct((BATCH, length, c_in), jnp.float32)
    w = jax.ShapeDtypeStruct((kernel, c_in, c_out), jnp.float32)
    total += _xla_flops(lambda x, w, s=stride: strided_conv1d(x, w, s), x, w)
    length, c_in = (length - kernel) // stride + 1, c_out
  assert train_step.model_flops(cfg, BATCH, SAMPLES, "wav2vec2")["conv"] == total


@pytest.mark.parametrize("method", ["wav2vec2", "hubert"])
def test_forward_flops_close_to_xla(cfg, method):
  """The matmul-only count is at most XLA's whole-forward count (which adds norms, GELU,
  softmax) and within 10% of it. Measured: 0.956 for both methods."""
  wav = jnp.zeros((BATCH, SAMPLES))
  mask = jnp.zeros((BATCH, cfg.num_frames(SAMPLES)), bool)
  counted = train_step.model_flops(cfg, BATCH, SAMPLES, method)
  if method == "wav2vec2":
    model, kwargs = Wav2Vec2ForPretraining(cfg), {"temperature": 2.0}
    # The model's outputs stop before the contrastive logits: leave them out of the count.
    frames = cfg.num_frames(SAMPLES)
    counted_total = counted["total"] - 2 * BATCH * frames * 101 * cfg.final_dim
  else:
    model, kwargs = HubertForPretraining(cfg, (train_step.HUBERT_CLASSES,)), {}
    # The label logits are computed in the loss, outside the model: leave them out too.
    frames = cfg.num_frames(SAMPLES)
    counted_total = (
        counted["total"] - 2 * BATCH * frames * train_step.HUBERT_CLASSES * cfg.final_dim
    )
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), wav, None, mask, **kwargs))
  xla = _xla_flops(lambda p: model.apply(p, wav, None, mask, **kwargs), params)
  assert 0.9 * xla <= counted_total <= xla, (counted_total, xla)


def test_runner_reports_missing_and_tables(tmp_path, monkeypatch):
  fake = types.ModuleType("benchmarks.fake_bench")
  fake.main = lambda argv: [{"what": "x", "num_args": len(argv)}]
  printing = types.ModuleType("benchmarks.printing_bench")
  printing.main = lambda: print("a printed table")  # No argv, no rows: its output is kept.
  monkeypatch.setitem(sys.modules, "benchmarks.fake_bench", fake)
  monkeypatch.setitem(sys.modules, "benchmarks.printing_bench", printing)

  missing = runner.run_one("no_such_bench", ["--quick"])
  assert missing["status"] == "not available" and missing["rows"] is None
  rows = runner.run_one("fake_bench", ["--quick"])
  assert rows["status"] == "ok" and rows["rows"] == [{"what": "x", "num_args": 1}]
  printed = runner.run_one("printing_bench", [])
  assert printed["status"] == "ok" and "a printed table" in printed["output"]

  out = tmp_path / "RESULTS.md"
  runner.write_results([missing, rows, printed], "python -m benchmarks all", str(out))
  text = out.read_text()
  assert "- command: `python -m benchmarks all`" in text
  assert "| no_such_bench | not available |" in text
  assert "| what | num_args |\n|---|---|\n| x | 1 |" in text
  assert "a printed table" in text
  for field in ("- date: ", "- machine: ", "- versions: ", "- load average"):
    assert field in text


def test_time_shares_split_overlaps_and_add_up_to_busy_time():
  # [0, 10) alone; [10, 20) shared by two; [30, 40) alone: 30 ns busy out of 40.
  events = [(0, 20, "a", ""), (10, 20, "b", ""), (30, 40, "c", "")]
  assert step_profile.time_shares(events) == pytest.approx([15e-9, 5e-9, 10e-9])


def test_profile_attributes_traced_ops_to_model_parts(tmp_path):
  def step(x, w):
    with jax.named_scope("feature_encoder"):
      h = jnp.tanh(x @ w)
    with jax.named_scope("attention"):
      h = jax.nn.softmax(h @ h.T) @ h
    return jnp.sum(h)

  x = jax.random.normal(jax.random.key(0), (256, 256))
  compiled = jax.jit(jax.grad(step, argnums=1)).lower(x, x).compile()
  compiled(x, x).block_until_ready()
  with jax.profiler.trace(str(tmp_path)):
    for _ in range(2):
      compiled(x, x).block_until_ready()
  (trace,) = tmp_path.glob("**/*.xplane.pb")
  per_op = step_profile.summarize(str(trace), compiled.as_text(), trace_steps=2)
  parts = {}
  for (_, path), sec in per_op.items():
    part = step_profile.classify(path) if path else ("unattributed", "-")
    parts[part] = parts.get(part, 0.0) + sec
  for part in [("conv stack", "fwd"), ("conv stack", "bwd"), ("attention", "fwd")]:
    assert parts.get(part, 0.0) > 0, (part, parts)
  assert step_profile.classify("jit(step)/transpose(jvp(M))/backbone/encoder/pos_conv/fft") == (
      "pos conv",
      "bwd",
  )


def test_kmeans_benchmark_reports_time_to_the_common_target(capsys):
  from benchmarks import kmeans as kmeans_bench  # pylint: disable=g-import-not-at-top

  rows = kmeans_bench.main(
      "--frames 30000 --dim 8 --k 6 --passes 3 --jaxdisco-n-init 1 --sklearn-max-iter 1 "
      "--sklearn-lloyd-iter= --faiss-niter= --frames-per-utterance 1000".split()
  )
  methods = {r["method"] for r in rows}
  assert {"jaxdisco streamed from disk", "jaxdisco mini-batch in memory"} <= methods
  assert min(r["inertia_vs_best"] for r in rows) == 1.0
  assert all((r["inertia_vs_best"] <= 1.01) == r["within_target"] for r in rows)
  assert rows[0]["setting"].startswith("init") and rows[1]["setting"] == "after pass 1"
  assert "time to within 1% of the best inertia" in capsys.readouterr().out
