"""Span masks and negative sampling: the reference's statistics, with static shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdisco.objectives.masking import mask_spans
from jaxdisco.objectives.negatives import sample_cross_negatives, sample_negatives


def _reference_mask_fraction(sz, mask_prob, mask_length, min_masks, trials, seed=0):
  """Masked fraction of the reference algorithm (numpy, no require_same_masks)."""
  rng = np.random.default_rng(seed)
  fractions = []
  for _ in range(trials):
    num = max(min_masks, int(mask_prob * sz / mask_length + rng.random()))
    min_len = mask_length
    if sz - min_len <= num:
      min_len = sz - num - 1
    starts = rng.choice(sz - min_len, num, replace=False)
    idx = np.unique((starts[:, None] + np.arange(mask_length)[None]).reshape(-1))
    fractions.append(np.sum(idx < sz) / sz)
  return float(np.mean(fractions))


@pytest.mark.parametrize("sz", [49, 124, 400])
def test_mask_fraction_matches_reference_algorithm(sz):
  mask = mask_spans(
      jax.random.key(0),
      jnp.full((256,), sz),
      sz,
      mask_prob=0.65,
      mask_length=10,
      require_same_masks=False,
  )
  ours = float(mask.mean())
  ref = _reference_mask_fraction(sz, 0.65, 10, 2, 2000)
  assert abs(ours - ref) < 0.02, (ours, ref)


def test_masks_respect_padding_and_are_trimmed_to_same_count():
  lengths = jnp.array([100, 60, 0, 30])  # the 0-length row is a padding row of an eval batch
  mask = mask_spans(jax.random.key(1), lengths, 100, mask_prob=0.65, mask_length=10)
  mask = np.asarray(mask)
  counts = mask.sum(-1)
  for i, n in enumerate(np.asarray(lengths)):
    assert not mask[i, n:].any()
  assert counts[2] == 0
  assert len(set(counts[[0, 1, 3]])) == 1 and counts[0] >= 2  # same count for real rows


def test_masks_are_spans_and_deterministic_under_jit():
  fn = jax.jit(
      lambda k: mask_spans(
          k,
          jnp.array([200]),
          200,
          mask_prob=0.1,
          mask_length=10,
          min_masks=1,
          require_same_masks=False,
      )
  )
  a, b = np.asarray(fn(jax.random.key(3))), np.asarray(fn(jax.random.key(3)))
  np.testing.assert_array_equal(a, b)
  runs = np.diff(np.concatenate([[0], a[0].astype(int), [0]]))
  run_lengths = np.nonzero(runs == -1)[0] - np.nonzero(runs == 1)[0]
  assert run_lengths.min() >= 10  # overlapping spans merge into longer runs, never shorter


def test_negatives_are_other_masked_frames_of_the_same_utterance():
  mask = mask_spans(jax.random.key(0), jnp.array([120, 80]), 120, mask_prob=0.65, mask_length=10)
  neg = np.asarray(sample_negatives(jax.random.key(1), mask, 100))
  mask = np.asarray(mask)
  for b in range(2):
    frames = np.nonzero(mask[b])[0]
    for t in frames:
      assert mask[b, neg[b, t]].all()
      assert (neg[b, t] != t).all()
  # Uniform over the other masked frames: every one of them gets drawn for a given frame.
  t = np.nonzero(mask[0])[0][0]
  many = np.asarray(sample_negatives(jax.random.key(2), jnp.asarray(mask), 4000))[0, t]
  drawn, counts = np.unique(many, return_counts=True)
  assert set(drawn) == set(np.nonzero(mask[0])[0]) - {t}
  expected = 4000 / (mask[0].sum() - 1)
  assert counts.min() > 0.6 * expected and counts.max() < 1.4 * expected


def test_cross_negatives_index_masked_frames_of_the_batch_excluding_self():
  mask = mask_spans(jax.random.key(0), jnp.array([50, 50, 50]), 50, mask_prob=0.65, mask_length=5)
  neg = np.asarray(sample_cross_negatives(jax.random.key(1), mask, 20))
  flat = np.asarray(mask).reshape(-1)
  for b, t in zip(*np.nonzero(np.asarray(mask))):
    assert flat[neg[b, t]].all()
    assert (neg[b, t] != b * 50 + t).all()
  assert len({i // 50 for i in neg.reshape(-1)}) == 3
