"""WavLM's utterance mixing: a chunk of another utterance of the batch added to the primary.

WavLM (Chen et al., arXiv 2110.13900, "denoising masked speech modeling") trains HuBERT's
masked prediction on a corrupted input while the targets stay the pseudo-labels of the clean
primary utterance; this module only corrupts the waveform, the caller keeps the labels.

From the paper and the authors' released data code (microsoft/UniSpeech,
`src/fairseq/data/audio/utterance_mixing_dataset.py`, which the first author points to in
microsoft/unilm#652 and #675 as the implementation):
- a row of the batch is mixed with probability `probability` (p = 0.2 in the paper and the
  dataset's default; the released task config defaults to 0.5, so set it explicitly);
- the secondary is another utterance of the same batch (one per mixed row, `mixing_num=1`);
- the chunk is at most half the primary (`max_fraction=0.5`), so the primary speaker stays the
  majority one and the model can tell which speaker to transcribe;
- the chunk is cut at a uniformly random place of the secondary and added at a uniformly
  random place of the primary;
- the energy ratio primary : secondary is drawn uniformly from [-5, 5] dB, and it compares mean
  powers of whole utterances: gain = sqrt(P_primary / (10^(r / 10) * P_secondary)), with
  P = mean square over the utterance, and gain 0 for a silent secondary (the released code does
  exactly this). We keep it rather than the chunk's own power: the chunk then keeps its natural
  level relative to its utterance, so a chunk cut from a pause stays quiet instead of having
  its noise floor raised to speech level (a -90 dB pause scaled to 0 dB would be broadband
  noise, not an overlapping speaker), and the ratio does not depend on where the chunk falls.
- the released code re-applies per-utterance layer norm to mixed rows when the model expects
  normalized waveforms (the LARGE configs): `renormalize=True` does that here.

Where the paper is silent or the released code does something we do not:
- Padding. The released code crops every batch to its shortest utterance, so it never has any.
  Here rows have different valid lengths (`padding_mask`, True = padding, padding at the end as
  the input pipeline writes it): lengths, positions and powers are taken over valid samples
  only, a chunk never reads the secondary's padding and never writes the primary's; a row with
  no valid samples is never mixed and never chosen as a secondary.
- Choice of secondary: uniform over the other rows with valid audio (the released code draws
  from all rows, the primary itself included, which the paper's "other utterances" excludes).
  A batch of one row, or one where no other row has audio, mixes nothing.
- Chunk length: uniform integer in [1, min(floor(max_fraction * L_primary), L_secondary)] (the
  released code allows 0, a no-op counted as mixed, and uses half the batch length; it cannot
  exceed the secondary, since its rows have equal lengths).
- Powers come from the clean batch: a secondary that is itself mixed lends its clean audio (the
  released code mixes rows in place, one after another).
- Noise: the paper also mixes noise from the DNS challenge corpus (ratio [-5, 20] dB in the
  released code, chosen with `mixing_noise_prob` among mixed rows); jaxdisco ships no noise
  corpus, so only utterance mixing is implemented.

Everything is batch-internal and shape-static: offsets are gathers and masks, never dynamic
slice sizes, so it jits with the train step. The partner gather reads across the batch axis; on
a batch sharded over devices XLA moves the waveform rows it needs (one waveform batch at most),
call it inside `shard_map` to mix within each device's rows if that ever matters.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

# Same epsilon as the waveform normalization of the input pipeline (torch layer_norm's).
_NORMALIZE_EPS = 1e-5


class MixingDraw(NamedTuple):
  """Random choices of one mixing call, all `[batch]`.

  Attributes:
    mixed: bool, whether the row receives a chunk.
    partner: int32 row the chunk comes from (the row itself where not mixed).
    start: int32 first sample of the primary that receives the chunk.
    length: int32 chunk samples (0 where not mixed).
    offset: int32 first sample of the chunk in the partner.
    ratio_db: float32 energy ratio primary : partner in dB (drawn for every row, used where
      mixed).
  """

  mixed: Array
  partner: Array
  start: Array
  length: Array
  offset: Array
  ratio_db: Array


def draw_mixing(
    key: Array,
    lengths: Array,
    *,
    probability: float,
    max_fraction: float = 0.5,
    energy_ratio_db: tuple[float, float] = (-5.0, 5.0),
) -> MixingDraw:
  """Draws which rows are mixed, with what, where and how loud (see the module docstring).

  Args:
    key: PRNG key.
    lengths: int `[batch]` valid samples of each row.
    probability: chance that a row is mixed (0.2 in the paper).
    max_fraction: longest chunk as a fraction of the primary's valid length (0.5).
    energy_ratio_db: (low, high) of the uniform primary : secondary power ratio in dB.

  Returns:
    A `MixingDraw`.
  """
  lengths = jnp.asarray(lengths, jnp.int32)
  batch = lengths.shape[0]
  mix_key, partner_key, length_key, start_key, offset_key, ratio_key = jax.random.split(key, 6)
  rows = jnp.arange(batch)
  # Uniform over eligible partners: the argmax of iid priorities restricted to them.
  eligible = (lengths[None, :] > 0) & (rows[None, :] != rows[:, None])
  priorities = jnp.where(eligible, jax.random.uniform(partner_key, (batch, batch)), -1.0)
  partner = jnp.argmax(priorities, axis=-1).astype(jnp.int32)
  partner_length = lengths[partner]
  longest = jnp.minimum(jnp.floor(max_fraction * lengths).astype(jnp.int32), partner_length)
  mixed = (
      (jax.random.uniform(mix_key, (batch,)) < probability)
      & jnp.any(eligible, axis=-1)
      & (longest >= 1)
  )
  # randint's maxval is exclusive; the maxima keep the bounds ordered on rows left unmixed.
  length = jax.random.randint(length_key, (batch,), 1, jnp.maximum(longest, 1) + 1)
  length = jnp.where(mixed, length, 0)
  start = jax.random.randint(start_key, (batch,), 0, jnp.maximum(lengths - length, 0) + 1)
  offset = jax.random.randint(
      offset_key, (batch,), 0, jnp.maximum(partner_length - length, 0) + 1
  )
  low, high = energy_ratio_db
  ratio_db = jax.random.uniform(ratio_key, (batch,), jnp.float32, low, high)
  return MixingDraw(
      mixed=mixed,
      partner=jnp.where(mixed, partner, rows).astype(jnp.int32),
      start=jnp.where(mixed, start, 0).astype(jnp.int32),
      length=length.astype(jnp.int32),
      offset=jnp.where(mixed, offset, 0).astype(jnp.int32),
      ratio_db=ratio_db,
  )


def _mean_power(waveform: Array, valid: Array) -> Array:
  """Mean square over valid samples `[batch]`; 0 for a row without any."""
  energy = jnp.sum(jnp.where(valid, jnp.square(waveform), 0.0), axis=-1)
  return energy / jnp.maximum(jnp.sum(valid, axis=-1), 1)


def apply_mixing(
    waveform: Array, padding_mask: Array, draw: MixingDraw, *, renormalize: bool = False
) -> Array:
  """Adds each mixed row's chunk as `draw` says.

  Args:
    waveform: float `[batch, samples]`.
    padding_mask: bool `[batch, samples]`, True = padding.
    draw: from `draw_mixing` on this batch's valid lengths.
    renormalize: give mixed rows zero mean and unit variance over their valid samples again
      (for models trained on normalized waveforms, as the released code does).

  Returns:
    The mixed waveform `[batch, samples]`, dtype of `waveform`; samples outside a chunk, padding
    and rows not mixed are bit-identical to the input (unless renormalized).
  """
  x = waveform.astype(jnp.float32)
  valid = ~padding_mask
  num_samples = x.shape[-1]
  power = _mean_power(x, valid)
  partner_power = power[draw.partner]
  # sqrt(P_primary / (10^(r/10) P_partner)); a silent partner adds nothing instead of NaN.
  safe_partner_power = jnp.where(partner_power > 0, partner_power, 1.0)
  gain = jnp.sqrt(power / (safe_partner_power * 10.0 ** (draw.ratio_db / 10.0)))
  gain = jnp.where(draw.mixed & (partner_power > 0), gain, 0.0)

  t = jnp.arange(num_samples)[None, :]
  in_chunk = (t >= draw.start[:, None]) & (t < (draw.start + draw.length)[:, None]) & valid
  source_index = jnp.clip(draw.offset[:, None] + t - draw.start[:, None], 0, num_samples - 1)
  chunk = jnp.take_along_axis(x[draw.partner], source_index, axis=-1)
  chunk_valid = jnp.take_along_axis(valid[draw.partner], source_index, axis=-1)
  chunk = jnp.where(chunk_valid, chunk, 0.0)
  # `where`, not `x + 0`: samples outside the chunk keep their exact bits (even -0.0).
  out = jnp.where(in_chunk, x + gain[:, None] * chunk, x)

  if renormalize:
    count = jnp.maximum(jnp.sum(valid, axis=-1, keepdims=True), 1)
    mean = jnp.sum(jnp.where(valid, out, 0.0), axis=-1, keepdims=True) / count
    variance = jnp.sum(jnp.where(valid, jnp.square(out - mean), 0.0), axis=-1, keepdims=True)
    normalized = (out - mean) / jnp.sqrt(variance / count + _NORMALIZE_EPS)
    out = jnp.where(draw.mixed[:, None] & valid, normalized, out)
  return out.astype(waveform.dtype)


def mix_utterances(
    key: Array,
    waveform: Array,
    padding_mask: Array,
    *,
    probability: float,
    max_fraction: float = 0.5,
    energy_ratio_db: tuple[float, float] = (-5.0, 5.0),
    renormalize: bool = False,
) -> tuple[Array, MixingDraw]:
  """WavLM utterance mixing of a batch: `draw_mixing` then `apply_mixing`.

  Args:
    key: PRNG key.
    waveform: float `[batch, samples]`.
    padding_mask: bool `[batch, samples]`, True = padding (at the end of each row).
    probability, max_fraction, energy_ratio_db: as in `draw_mixing` (paper: 0.2, 0.5, [-5, 5]).
    renormalize: as in `apply_mixing`.

  Returns:
    (mixed waveform `[batch, samples]`, the `MixingDraw`; `draw.mixed` says which rows changed,
    e.g. for a mixed-rows metric). Labels are untouched: keep the primary's.
  """
  lengths = jnp.sum(~padding_mask, axis=-1)
  draw = draw_mixing(
      key,
      lengths,
      probability=probability,
      max_fraction=max_fraction,
      energy_ratio_db=energy_ratio_db,
  )
  return apply_mixing(waveform, padding_mask, draw, renormalize=renormalize), draw
