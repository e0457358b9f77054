"""The trainer's HBM check (`plan.check_compiled_fits` through `distributed.run_in_lockstep`)
and `plan.find_fit`'s search, without a TPU: a CPU-compiled step against a stated limit, and
the search against a fake compile whose answer is known."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from jaxdisco.parallel import distributed
from jaxdisco.parallel import plan as plan_lib
from jaxdisco.parallel import tpu


def _tiny_compiled():
  from conftest import tiny_run_config  # pylint: disable=g-import-not-at-top

  config = tiny_run_config("demo")
  f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
  return f.lower(jnp.ones((64, 64))).compile(), config


def test_a_program_over_the_limit_stops_with_the_plans_advice():
  compiled, config = _tiny_compiled()
  memory = plan_lib.check_compiled_fits(compiled, config, hbm_bytes=2**30)
  assert memory.total > 0
  with pytest.raises(plan_lib.PlanError) as err:
    plan_lib.check_compiled_fits(compiled, config, hbm_bytes=1024)
  message = str(err.value)
  for field in ("data.batch_size", "train.remat", "parallel.fsdp"):
    assert field in message, message


def test_the_check_runs_once_per_program_before_it_first_executes():
  seen = []

  def check(program):
    seen.append(program)
    if len(seen) == 2:
      raise plan_lib.PlanError("too big")

  step = distributed.run_in_lockstep(jax.jit(lambda x: x * 2), "t", check)
  assert float(step(jnp.ones(()))) == 2.0
  assert float(step(jnp.full((), 3.0))) == 6.0  # Same signature: no new compile, no check.
  assert len(seen) == 1
  with pytest.raises(plan_lib.PlanError):
    step(jnp.ones((2,)))  # A new shape is compiled, checked and refused before it runs.


@dataclasses.dataclass
class _FakeTrain:
  temporaries: int


@dataclasses.dataclass
class _FakePlan:
  rows: int
  limit: int

  @property
  def fits(self):
    return self.rows <= self.limit

  @property
  def train(self):
    return _FakeTrain(self.rows * 2**20)

  @property
  def peak_bytes(self):
    return self.rows * 2**20 + 2**28

  usable_hbm = 2**34

  @property
  def verdict(self):
    return "fits" if self.fits else "does not fit"


@pytest.mark.parametrize("limit", [0, 1, 2, 37, 500])
def test_find_fit_finds_the_largest_batch_in_a_few_compiles(monkeypatch, limit):
  calls = []

  def fake_plan(config, topology, *, per_chip_batch, remat, programs, say):
    calls.append((per_chip_batch, remat))
    return _FakePlan(per_chip_batch, limit)

  monkeypatch.setattr(plan_lib, "make_plan", fake_plan)
  found = plan_lib.find_fit(
      None, tpu.topology("v5e-4"), policies=("none", "full"), max_batch=256, say=None
  )
  assert found == {"none": min(limit, 256), "full": min(limit, 256)}
  per_policy = len(calls) / 2
  assert per_policy <= 12, calls
  assert len(set(calls)) == len(calls)  # Never compiles the same batch twice.
