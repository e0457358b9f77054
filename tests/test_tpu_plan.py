"""`jaxdisco plan` (jaxdisco.parallel.plan, jaxdisco.parallel.tpu): the run's programs compiled
for real TPU topologies by libtpu on this CPU machine, their per-chip memory read back, and a
clear refusal when a config does not fit. Tiny configs only: BASE takes minutes per compile."""

import json
import os

import pytest
from conftest import run_cli, tiny_run_config

from jaxdisco.parallel import tpu


def _require_libtpu():
  if tpu.libtpu_available():
    return
  reason = "libtpu is not installed (pip install 'jaxdisco[tpu]')"
  # .ci/run sets this: libtpu comes with the [test] extras, so there a missing one is a failure.
  if os.environ.get("JAXDISCO_REQUIRE_ORACLES") == "1":
    pytest.fail(f"TPU compiles are required (JAXDISCO_REQUIRE_ORACLES=1): {reason}", pytrace=False)
  pytest.skip(reason)


def test_topology_names_follow_cloud_tpu():
  # v4 / v5p names count TensorCores (2 per chip), v5e / v6e count chips.
  v5p = tpu.topology("v5p-8")
  assert (v5p.shape, v5p.num_chips, v5p.accelerator_type) == ((2, 2, 1), 4, "v5p-8")
  assert v5p.libtpu_name == "v5:2x2x1"
  assert tpu.topology("v4-32").shape == (2, 2, 4)
  assert tpu.topology("v5p-128").shape == (4, 4, 4)
  assert tpu.topology("v5litepod-16").shape == (4, 4)
  assert tpu.topology("v5e-256").shape == (16, 16)
  assert tpu.topology("v6e:8x16").num_chips == 128
  assert tpu.topology("v5e-16", num_slices=2).num_chips == 32
  with pytest.raises(tpu.TopologyError, match="multiple of 2"):
    tpu.topology("v5p-5")
  with pytest.raises(tpu.TopologyError, match="give the slice shape"):
    tpu.topology("v5e-12")
  with pytest.raises(tpu.TopologyError, match="expected GENERATION-COUNT"):
    tpu.topology("tpu-8")
  with pytest.raises(tpu.TopologyError, match="unknown TPU generation"):
    tpu.topology("v9x-8")
  with pytest.raises(tpu.TopologyError, match="3 sides"):
    tpu.topology("v5p:2x2x2x2")


@pytest.fixture(scope="module")
def tiny_plan():
  _require_libtpu()
  from jaxdisco.parallel import plan as plan_lib

  topology = tpu.topology("v5e-4")
  devices = topology.devices()
  assert len(devices) == 4 and {d.platform for d in devices} == {"tpu"}
  return plan_lib.make_plan(tiny_run_config("demo"), topology, config_name="tiny", say=None)


def test_tiny_config_compiles_for_v5e_and_reports_per_chip_memory(tiny_plan, tmp_path):
  from jaxdisco.parallel import plan as plan_lib

  p = tiny_plan
  assert p.mesh_shape == {"data": 4, "fsdp": 1, "tensor": 1}
  assert (p.batch_size, p.per_chip_batch) == (8, 2)
  assert set(p.programs) == {"train", "eval", "tokenizer"}
  assert all(m.compiled and m.total > 0 for m in p.programs.values())
  # Two independent counts of the state a chip holds: the layout's shard sizes and the compiled
  # program's argument buffers (state + this chip's 2 crops of audio and padding mask). On TPU
  # the buffers are larger: arrays are laid out in (8, 128) tiles, and this model's 16- and
  # 32-wide dimensions pad out (x4 here; at BASE's 768 the padding vanishes).
  train = p.train
  state = p.layout.param_bytes_per_device + p.layout.optimizer_bytes_per_device
  batch = 2 * 16_000 * (4 + 1)
  assert state > 0 and state + batch <= train.arguments <= 8 * state + batch
  # The new state is written into the donated one.
  assert state <= train.aliased <= train.arguments
  assert train.temporaries > 0
  assert p.verdict == "fits" and p.headroom > 15 * 2**30
  # Data parallelism: gradients are summed across the 4 chips in the compiled step.
  assert any(c.kind == "all-reduce" and c.count >= 1 and c.bytes > 0 for c in p.collectives)
  assert p.step_time_lower_bound is not None and p.step_time_lower_bound > 0
  table = p.table()
  for expected in ("parameters", "activations/temporaries", "fits", "v5e-4"):
    assert expected in table, table
  plan_lib.save_plan(p, tmp_path / "plan.json", {"none": 3})
  saved = json.loads((tmp_path / "plan.json").read_text())
  assert saved["largest_per_chip_batch"] == {"none": 3}
  assert saved["verdict"] == "fits"


@pytest.mark.parametrize(
    "name", ["hubert_demo", "wavlm_demo", "vq_wav2vec_demo_gumbel", "best_rq_demo"]
)
def test_every_method_compiles_its_train_step_for_tpu(name):
  """What `jaxdisco.methods` declares is what is compiled: each method's own model, loss and
  batch fields (pseudo-labels, WavLM's relative position bias and mixing, vq-wav2vec's
  future-prediction loss), sharded over a v5p-8's 4 chips."""
  _require_libtpu()
  from jaxdisco.parallel import plan as plan_lib

  p = plan_lib.make_plan(
      tiny_run_config(name), tpu.topology("v5p-8"), programs=("train",), say=None
  )
  assert p.method == name.split("_demo")[0] and p.mesh_shape["data"] == 4
  assert p.train.compiled and p.train.temporaries > 0 and p.fits
  assert p.train.arguments > p.layout.param_bytes_per_device > 0


def test_plan_command_refuses_a_batch_that_does_not_fit(tmp_path):
  """Crops of 1000 s: their activations are far beyond a v5e chip's 15.75 GiB, libtpu's compiler
  refuses the step (in seconds: it stops at buffer assignment) and the command exits 2 with what
  to change, and still writes the plan."""
  _require_libtpu()
  out = tmp_path / "plan.json"
  run = run_cli(
      "plan",
      "--config=configs/demo.py",
      "--topology=v5e-4",
      "--programs=train",
      "--per-chip-batch=2",
      f"--out={out}",
      "--config.model.num_layers=1",
      "--config.model.embed_dim=32",
      "--config.model.ffn_dim=64",
      "--config.model.num_heads=2",
      "--config.model.conv_layers=[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2",
      "--config.data.crop_samples=16000000",
      "--config.data.min_samples=8000",
  )
  assert run.returncode == 2, (run.returncode, run.stderr[-3000:])
  assert "Traceback" not in run.stderr, run.stderr[-3000:]
  assert "jaxdisco plan: error:" in run.stderr and "does not fit" in run.stderr, run.stderr
  assert "per-chip batch: 2 rows now" in run.stderr, run.stderr
  assert "train.remat" in run.stderr and "parallel.fsdp" in run.stderr, run.stderr
  saved = json.loads(out.read_text())
  assert saved["verdict"] == "does not fit" and saved["headroom_bytes"] < -40 * 2**30
  assert "out of HBM" in run.stdout and "ran out of HBM" in run.stdout, run.stdout
