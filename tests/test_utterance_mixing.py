"""WavLM utterance mixing against a numpy reference written from the paper, and its statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdisco.objectives import utterance_mixing as um

_PAPER = dict(probability=0.2, max_fraction=0.5, energy_ratio_db=(-5.0, 5.0))

# Jitted once per configuration: eager dispatch op by op costs seconds on a busy CPU.
_draw = jax.jit(um.draw_mixing, static_argnames=("probability", "max_fraction", "energy_ratio_db"))
_apply = jax.jit(um.apply_mixing, static_argnames=("renormalize",))


def _mix(key, waveform, padding_mask, *, probability, renormalize=False):
  draw = _draw(key, np.sum(~np.asarray(padding_mask), -1), probability=probability)
  out = _apply(jnp.asarray(waveform), jnp.asarray(padding_mask), draw, renormalize=renormalize)
  return out, draw


def _batch(seed: int, batch: int = 6, samples: int = 400, min_length: int = 40):
  """Speech-like rows of different valid lengths, zero padding at the end."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(min_length, samples + 1, batch)
  lengths[0] = samples  # One row without padding.
  waveform = np.zeros((batch, samples), np.float32)
  for row, n in enumerate(lengths):
    waveform[row, :n] = rng.normal(0, rng.uniform(0.05, 1.0), n)
  padding_mask = np.arange(samples)[None] >= lengths[:, None]
  return waveform, padding_mask, lengths


def _reference_mix(waveform, lengths, mixed, partner, start, length, offset, ratio_db):
  """The paper's procedure, one row at a time, float64, Python slices.

  For a mixed row i with partner j: chunk = x_j[offset : offset + length] (inside j's valid
  samples), gain = sqrt(P_i / (10^(r/10) P_j)) with P the mean square over a row's valid
  samples (0 for a silent partner), x_i[start : start + length] += gain * chunk.
  """
  x = np.asarray(waveform, np.float64)
  out = x.copy()
  for i in range(x.shape[0]):
    if not mixed[i]:
      continue
    j, s, n, o = int(partner[i]), int(start[i]), int(length[i]), int(offset[i])
    assert j != i and 1 <= n and s + n <= lengths[i] and o + n <= lengths[j]
    p_i = np.mean(x[i, : lengths[i]] ** 2)
    p_j = np.mean(x[j, : lengths[j]] ** 2)
    gain = 0.0 if p_j == 0 else np.sqrt(p_i / (10 ** (ratio_db[i] / 10) * p_j))
    out[i, s : s + n] += gain * x[j, o : o + n]
  return out


def _as_numpy(draw: um.MixingDraw):
  return [np.asarray(v) for v in draw]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy_reference_on_the_same_draws(seed):
  waveform, padding_mask, lengths = _batch(seed)
  draw = _draw(jax.random.key(seed), lengths, probability=0.7)
  assert np.asarray(draw.mixed).any()
  out = np.asarray(_apply(jnp.asarray(waveform), jnp.asarray(padding_mask), draw))
  expected = _reference_mix(waveform, lengths, *_as_numpy(draw))
  np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6)


def test_draw_statistics_follow_the_paper():
  batch = 4096
  rng = np.random.default_rng(3)
  lengths = rng.integers(0, 2000, batch)  # Some rows with no audio at all.
  draw = _as_numpy(_draw(jax.random.key(3), lengths, **_PAPER))
  mixed, partner, start, length, offset, ratio = draw
  eligible_rows = lengths >= 2  # A 1-sample primary allows no chunk (floor(0.5) = 0).
  assert not mixed[~eligible_rows].any()
  n = eligible_rows.sum()
  rate = mixed[eligible_rows].mean()
  # Binomial(n, 0.2): 5 standard deviations (about 0.03 here) would flag a wrong rate.
  assert abs(rate - 0.2) < 5 * np.sqrt(0.2 * 0.8 / n), rate
  m = mixed
  assert (partner[m] != np.flatnonzero(m)).all()
  assert (lengths[partner[m]] > 0).all()
  assert (length[m] >= 1).all()
  assert (length[m] <= np.floor(0.5 * lengths[m])).all()
  assert (start[m] + length[m] <= lengths[m]).all()
  assert (offset[m] + length[m] <= lengths[partner[m]]).all()
  assert (length[~m] == 0).all()
  # Uniform draws: chunk length over its allowed maximum averages ~1/2, start and offset fill
  # their ranges, ratios fill [-5, 5] with mean ~0 (bounds several standard errors wide).
  longest = np.minimum(np.floor(0.5 * lengths[m]), lengths[partner[m]])
  assert abs(np.mean(length[m] / longest) - 0.5) < 0.04
  assert abs(np.mean(start[m] / np.maximum(lengths[m] - length[m], 1)) - 0.5) < 0.05
  assert ratio.min() >= -5 and ratio.max() <= 5
  assert abs(ratio.mean()) < 0.2 and ratio.min() < -4.9 and ratio.max() > 4.9
  # Partners spread over the batch (not always a neighbour or row 0).
  assert len(np.unique(partner[m])) > 0.5 * m.sum()


def test_achieved_energy_ratio_equals_the_drawn_one():
  waveform, padding_mask, lengths = _batch(4, batch=8, samples=2000)
  out, draw = _mix(jax.random.key(4), waveform, padding_mask, probability=1.0)
  out = np.asarray(out, np.float64)
  mixed, partner, start, length, offset, ratio = _as_numpy(draw)
  assert mixed.all()
  x = waveform.astype(np.float64)
  for i in range(len(x)):
    j, s, n, o = partner[i], start[i], length[i], offset[i]
    chunk = x[j, o : o + n]
    added = out[i, s : s + n] - x[i, s : s + n]
    gain = added @ chunk / (chunk @ chunk)  # What was added, measured on the output.
    np.testing.assert_allclose(added, gain * chunk, atol=1e-6)
    p_i = np.mean(x[i, : lengths[i]] ** 2)
    p_j = np.mean(x[j, : lengths[j]] ** 2)
    achieved_db = 10 * np.log10(p_i / (gain**2 * p_j))
    assert abs(achieved_db - ratio[i]) < 1e-4, (i, achieved_db, ratio[i])


def test_padding_and_unmixed_rows_are_bit_identical():
  waveform, padding_mask, lengths = _batch(5, batch=16)
  waveform[padding_mask] = 7.0  # Marks padding: it must neither change nor leak into chunks.
  waveform[1, :3] = -0.0
  out, draw = _mix(jax.random.key(5), waveform, padding_mask, probability=0.5)
  out, mixed = np.asarray(out), np.asarray(draw.mixed)
  assert 0 < mixed.sum() < len(mixed)
  np.testing.assert_array_equal(
      out[padding_mask].view(np.uint32), waveform[padding_mask].view(np.uint32)
  )
  np.testing.assert_array_equal(out[~mixed].view(np.uint32), waveform[~mixed].view(np.uint32))
  valid_out = np.where(padding_mask, 0.0, out)
  assert np.abs(valid_out).max() < 7.0  # No padding value was read into a chunk.
  # Mixed rows change only inside their chunk.
  for i in np.flatnonzero(mixed):
    outside = np.ones(waveform.shape[1], bool)
    outside[draw.start[i] : draw.start[i] + draw.length[i]] = False
    np.testing.assert_array_equal(out[i, outside], waveform[i, outside])


def test_silent_and_empty_rows_give_no_nan():
  waveform, padding_mask, lengths = _batch(6, batch=4)
  waveform[1] = 0.0  # A silent partner: gain 0.
  padding_mask[2] = True  # A row with no audio: never mixed, never a partner.
  waveform[2] = 0.0
  waveform[3, :] = 0.0  # A silent primary: gain 0 as well.
  for seed in range(20):
    out, draw = _mix(jax.random.key(seed), waveform, padding_mask, probability=1.0)
    out = np.asarray(out)
    assert np.isfinite(out).all()
    assert not bool(draw.mixed[2]) and int(draw.partner[0]) != 2
    mixed_from_silence = np.asarray(draw.partner) == 1
    np.testing.assert_array_equal(out[mixed_from_silence], waveform[mixed_from_silence])
    np.testing.assert_array_equal(out[3], waveform[3])


def test_one_row_or_probability_zero_mixes_nothing():
  waveform, padding_mask, _ = _batch(7, batch=5)
  out, draw = _mix(jax.random.key(0), waveform[:1], padding_mask[:1], probability=1.0)
  assert not np.asarray(draw.mixed).any()
  np.testing.assert_array_equal(np.asarray(out), waveform[:1])
  out, draw = _mix(jax.random.key(0), waveform, padding_mask, probability=0.0)
  assert not np.asarray(draw.mixed).any()
  np.testing.assert_array_equal(np.asarray(out), waveform)


def test_jit_deterministic_and_key_dependent():
  waveform, padding_mask, _ = _batch(8, batch=8)
  waveform, padding_mask = jnp.asarray(waveform), jnp.asarray(padding_mask)
  mix = jax.jit(lambda k, w, m: um.mix_utterances(k, w, m, probability=0.5))
  a, draw_a = mix(jax.random.key(1), waveform, padding_mask)
  b, _ = mix(jax.random.key(1), waveform, padding_mask)
  c, _ = mix(jax.random.key(2), waveform, padding_mask)
  eager, _ = _mix(jax.random.key(1), waveform, padding_mask, probability=0.5)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_allclose(np.asarray(a), np.asarray(eager), atol=1e-6)
  assert np.asarray(draw_a.mixed).any()
  assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_renormalize_restores_zero_mean_unit_variance_on_mixed_rows():
  waveform, padding_mask, lengths = _batch(9, batch=6)
  out, draw = _mix(jax.random.key(9), waveform, padding_mask, probability=0.5, renormalize=True)
  out, mixed = np.asarray(out), np.asarray(draw.mixed)
  assert 0 < mixed.sum() < len(mixed)
  for i in range(len(out)):
    valid = out[i, : lengths[i]]
    if mixed[i]:
      assert abs(valid.mean()) < 1e-5 and abs(valid.var() - 1) < 1e-3
    else:
      np.testing.assert_array_equal(out[i], waveform[i])
  np.testing.assert_array_equal(out[padding_mask], waveform[padding_mask])
