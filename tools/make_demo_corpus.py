#!/usr/bin/env python3
"""Synthesize the small English demo corpus shipped in ``jaxdisco/assets/demo_corpus``.

Sentences are generated from small hand-written word lists with a fixed seed,
spoken by libespeak-ng (driven through ``ctypes``) with a per-utterance voice,
rate and pitch, and written as 16 kHz / 16-bit FLAC together with
fairseq-style manifests, transcripts and phone-level alignments taken from
espeak-ng's own phoneme events. The extended splits (`train_ext`, `valid_ext`)
add utterances of further sentences, stored as Ogg Opus (their decoded samples
are deterministic too; the Ogg stream serial numbers in the file bytes are random).

Regenerate the shipped corpus with::

    python tools/make_demo_corpus.py --out jaxdisco/assets/demo_corpus

Requires ``apt-get install espeak-ng libespeak-ng1``, plus numpy, soundfile
and soxr. Output is deterministic for a given espeak-ng version.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ESPEAK_SR = 22050
TARGET_SR = 16000
EDGE_SIL_S = 0.1  # silence kept before/after speech (trimmed or zero-padded to this)
PEAK = 0.9
MIN_DUR_S, MAX_DUR_S = 1.5, 3.5
SIL = "sil"

# ---------------------------------------------------------------------------
# Text: a tiny combinatorial grammar. All word lists are written for this
# corpus; they aim for broad phone coverage with everyday vocabulary.
# ---------------------------------------------------------------------------

DETERMINERS = ["the", "a", "my", "our", "his", "her", "that", "your"]
PERSON_ADJS = [
    "old",
    "young",
    "quiet",
    "clever",
    "tired",
    "happy",
    "busy",
    "tall",
    "small",
    "careful",
    "brave",
    "lazy",
    "friendly",
    "curious",
    "gentle",
    "angry",
    "famous",
    "honest",
    "patient",
    "clumsy",
    "cheerful",
    "nervous",
]
PERSONS = [
    "farmer",
    "teacher",
    "doctor",
    "sister",
    "brother",
    "neighbor",
    "student",
    "baker",
    "pilot",
    "painter",
    "driver",
    "singer",
    "fisherman",
    "nurse",
    "child",
    "girl",
    "boy",
    "king",
    "queen",
    "judge",
    "mechanic",
    "sailor",
    "uncle",
    "grandmother",
    "waiter",
    "shepherd",
]
# (past tense, base form)
TRANSITIVE_VERBS = [
    ("carried", "carry"),
    ("painted", "paint"),
    ("found", "find"),
    ("washed", "wash"),
    ("bought", "buy"),
    ("opened", "open"),
    ("dropped", "drop"),
    ("fixed", "fix"),
    ("sold", "sell"),
    ("watched", "watch"),
    ("borrowed", "borrow"),
    ("lifted", "lift"),
    ("pushed", "push"),
    ("cleaned", "clean"),
    ("threw", "throw"),
    ("counted", "count"),
    ("hid", "hide"),
    ("packed", "pack"),
    ("chose", "choose"),
    ("measured", "measure"),
    ("wrapped", "wrap"),
    ("forgot", "forget"),
    ("polished", "polish"),
    ("repaired", "repair"),
]
THING_ADJS = [
    "red",
    "heavy",
    "broken",
    "shiny",
    "yellow",
    "wooden",
    "dusty",
    "tiny",
    "enormous",
    "strange",
    "green",
    "cheap",
    "soft",
    "empty",
    "purple",
    "beautiful",
    "ugly",
    "round",
    "old",
    "blue",
]
THINGS = [
    "box",
    "basket",
    "window",
    "bicycle",
    "letter",
    "kettle",
    "chair",
    "bottle",
    "umbrella",
    "jacket",
    "ladder",
    "map",
    "candle",
    "clock",
    "blanket",
    "drum",
    "bucket",
    "shovel",
    "lamp",
    "envelope",
    "guitar",
    "pillow",
    "wagon",
    "mirror",
    "boat",
    "violin",
    "treasure chest",
]
INTRANSITIVE = [
    ("slept", "sleep"),
    ("laughed", "laugh"),
    ("waited", "wait"),
    ("sang", "sing"),
    ("danced", "dance"),
    ("walked home", "walk home"),
    ("sat down", "sit down"),
    ("smiled", "smile"),
    ("arrived", "arrive"),
    ("worked hard", "work hard"),
    ("listened", "listen"),
    ("shouted", "shout"),
    ("stayed inside", "stay inside"),
    ("ran away", "run away"),
]
ENDINGS = [
    "yesterday",
    "this morning",
    "near the river",
    "before lunch",
    "in the kitchen",
    "after the storm",
    "on Sunday",
    "at the market",
    "very slowly",
    "without a word",
    "behind the school",
    "during the night",
    "by the old bridge",
    "again",
    "for a friend",
    "in the garden",
    "under the table",
    "last winter",
    "at noon",
    "with great care",
    "on the way to town",
    "every evening",
    "in the rain",
    "next to the fence",
]


def _article(det: str, next_word: str) -> str:
  if det != "a":
    return det
  # Vowel letters take "an"; "honest" starts with a silent h.
  return "an" if next_word[0] in "aeiou" or next_word == "honest" else "a"


def _noun_phrase(rng: random.Random, adjs, nouns, p_adj=0.75) -> str:
  det = rng.choice(DETERMINERS)
  noun = rng.choice(nouns)
  if rng.random() < p_adj:
    adj = rng.choice(adjs)
    return f"{_article(det, adj)} {adj} {noun}"
  return f"{_article(det, noun)} {noun}"


def _sentence(rng: random.Random) -> str:
  subj = _noun_phrase(rng, PERSON_ADJS, PERSONS)
  obj = _noun_phrase(rng, THING_ADJS, THINGS)
  past, base = rng.choice(TRANSITIVE_VERBS)
  ipast, ibase = rng.choice(INTRANSITIVE)
  end = rng.choice(ENDINGS)
  template = rng.randrange(8)
  if template == 0:
    s = f"{subj} {past} {obj} {end}."
  elif template == 1:
    s = f"{subj} {past} {obj}."
  elif template == 2:
    s = f"did {subj} {base} {obj} {end}?"
  elif template == 3:
    s = f"{end}, {subj} {past} {obj}."
  elif template == 4:
    subj2 = _noun_phrase(rng, PERSON_ADJS, PERSONS, p_adj=0.3)
    s = f"{subj} and {subj2} {ipast} {end}."
  elif template == 5:
    s = f"{subj} {ipast} {end}."
  elif template == 6:
    s = f"please {base} {obj} {end}."
  else:
    s = f"why did {subj} {ibase} {end}?"
  return s[0].upper() + s[1:]


def make_sentences(rng: random.Random, n: int) -> list[str]:
  """Return ``n`` distinct sentences of 5-12 words, in generation order."""
  seen: set[str] = set()
  out: list[str] = []
  while len(out) < n:
    s = _sentence(rng)
    if s in seen or not 5 <= len(s.split()) <= 12:
      continue
    seen.add(s)
    out.append(s)
  return out


def normalize_transcript(text: str) -> str:
  """fairseq/LibriSpeech-style ``.wrd`` text: upper case, no punctuation."""
  kept = "".join(c if c.isalpha() or c in " '" else " " for c in text)
  return " ".join(kept.upper().split())


# ---------------------------------------------------------------------------
# Voices / prosody. Every name below must be accepted by espeak_SetVoiceByName
# (checked at runtime). "lang+variant" selects one of espeak's voice variants.
# ---------------------------------------------------------------------------

VOICES = [
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en-us-nyc",
    "en-us+m3",
    "en-us+f2",
    "en+f4",
    "en+m7",
    "en+f3",
    "en-us+m5",
    "en-gb-x-rp+f5",
    "en-029+m2",
]
RATES = [130, 145, 160, 175, 190]  # words per minute
PITCHES = [30, 40, 50, 60, 70]  # espeak base pitch, 0-100


# ---------------------------------------------------------------------------
# libespeak-ng via ctypes (see /usr/include/espeak-ng/speak_lib.h)
# ---------------------------------------------------------------------------

AUDIO_OUTPUT_SYNCHRONOUS = 2
espeakINITIALIZE_PHONEME_EVENTS = 0x0001
espeakCHARS_UTF8 = 1
POS_CHARACTER = 1
espeakRATE, espeakPITCH = 1, 3
espeakEVENT_LIST_TERMINATED = 0
espeakEVENT_PHONEME = 7


class _EventId(ctypes.Union):
  # union { int number; const char *name; char string[8]; } -- 8 bytes,
  # pointer-aligned. Phoneme events fill ``string`` with the mnemonic; it
  # is NUL-terminated unless all 8 bytes are used, so read it as a raw
  # c_char array (not c_char_p) and cut at the first NUL ourselves.
  _fields_ = [
      ("number", ctypes.c_int),
      ("name", ctypes.c_void_p),
      ("string", ctypes.c_char * 8),
  ]


class EspeakEvent(ctypes.Structure):
  # Mirrors espeak_EVENT. On LP64 the six 4-byte ints fill offsets 0..23,
  # user_data (void*) sits at 24 and the union at 32; sizeof == 40.
  # ctypes applies the same natural alignment as the C compiler, so no
  # explicit padding field is needed; the layout is asserted below.
  _fields_ = [
      ("type", ctypes.c_int),  # espeak_EVENT_TYPE (a C enum == int)
      ("unique_identifier", ctypes.c_uint),
      ("text_position", ctypes.c_int),
      ("length", ctypes.c_int),
      ("audio_position", ctypes.c_int),  # ms from the start of the message
      ("sample", ctypes.c_int),  # sample index (at 22050 Hz) of the event
      ("user_data", ctypes.c_void_p),
      ("id", _EventId),
  ]


assert EspeakEvent.id.offset == 4 * 6 + ctypes.sizeof(ctypes.c_void_p)
assert ctypes.sizeof(EspeakEvent) == EspeakEvent.id.offset + 8

# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events)
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(EspeakEvent)
)


class Espeak:
  """Minimal synchronous wrapper: text -> (int16 audio, phoneme events)."""

  def __init__(self) -> None:
    path = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    self.lib = lib = ctypes.CDLL(path)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint),
        ctypes.c_void_p,
    ]
    sr = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None, espeakINITIALIZE_PHONEME_EVENTS)
    if sr != ESPEAK_SR:
      raise RuntimeError(f"espeak_Initialize returned {sr}, expected {ESPEAK_SR}")
    self._chunks: list[np.ndarray] = []
    self._phones: list[tuple[str, int]] = []
    # Keep a reference: ctypes callbacks are freed when garbage-collected.
    self._callback = _SYNTH_CALLBACK(self._on_synth)
    lib.espeak_SetSynthCallback(self._callback)

  def _on_synth(self, wav, numsamples, events) -> int:
    if wav and numsamples > 0:
      self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
    i = 0
    while events[i].type != espeakEVENT_LIST_TERMINATED:
      ev = events[i]
      if ev.type == espeakEVENT_PHONEME:
        name = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
        self._phones.append((name, ev.sample))
      i += 1
    return 0  # continue synthesis

  def synth(self, text: str, voice: str, rate: int, pitch: int):
    lib = self.lib
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
      raise ValueError(f"espeak-ng voice not found: {voice!r}")
    lib.espeak_SetParameter(espeakRATE, rate, 0)
    lib.espeak_SetParameter(espeakPITCH, pitch, 0)
    self._chunks, self._phones = [], []
    buf = text.encode("utf-8") + b"\0"
    err = lib.espeak_Synth(buf, len(buf), 0, POS_CHARACTER, 0, espeakCHARS_UTF8, None, None)
    if err != 0:
      raise RuntimeError(f"espeak_Synth failed with {err}")
    lib.espeak_Synchronize()
    audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
    return audio, list(self._phones)

  def close(self) -> None:
    self.lib.espeak_Terminate()


def espeak_version() -> str:
  try:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    # "eSpeak NG text-to-speech: 1.51  Data at: ..."
    return out.split(":", 1)[1].split("Data at")[0].strip()
  except (OSError, IndexError):
    return "unknown"


# ---------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------


def clean_label(name: str) -> str:
  """Map an espeak phoneme mnemonic to a corpus label."""
  name = name.strip().lstrip("',%=")  # stress marks, should any appear
  # Underscore mnemonics ("_", "_:", "_!", ...) are pauses of various lengths.
  if not name or name.startswith("_"):
    return SIL
  return name


def events_to_segments(phones, num_samples: int):
  """Phoneme events -> contiguous [label, start, end] in samples.

  Each phone ends where the next event starts; the final phone event
  ("_", end of message) sits at the end of the audio. Leading/trailing
  silence is filled with "sil", zero-length phones are dropped and adjacent
  "sil" segments are merged.
  """
  starts = [s for _, s in phones]
  if any(b < a for a, b in zip(starts, starts[1:])):
    raise RuntimeError(f"non-monotone phoneme event positions: {starts}")
  # Sanity check of the struct parsing: the final event ("_", end of message)
  # lands at the end of the audio. Some variants (f2, f4, ...) add a short,
  # faint tail (echo) after it, which becomes trailing "sil".
  if not starts or not 0 <= num_samples - starts[-1] <= 0.05 * ESPEAK_SR:
    raise RuntimeError(f"last phoneme event at {starts[-1]} but audio has {num_samples} samples")
  bounds = [(SIL, 0)] + [(clean_label(n), min(s, num_samples)) for n, s in phones]
  segs: list[list] = []
  for (label, start), (_, end) in zip(bounds, bounds[1:] + [(SIL, num_samples)]):
    if end <= start:
      continue
    if segs and label == SIL and segs[-1][0] == SIL:
      segs[-1][2] = end
    else:
      segs.append([label, start, end])
  return segs


# ---------------------------------------------------------------------------
# Utterance processing
# ---------------------------------------------------------------------------


def render(audio22: np.ndarray, segs22):
  """Resample to 16 kHz, fix the edge silence, peak-normalize; returns (audio, phones in s)."""
  x = audio22.astype(np.float64) / 32768.0
  y = soxr.resample(x, ESPEAK_SR, TARGET_SR, quality="VHQ")
  n = len(y)
  to16 = lambda s: int(round(s * TARGET_SR / ESPEAK_SR))
  segs = [[lab, min(to16(a), n), min(to16(b), n)] for lab, a, b in segs22]
  segs[-1][2] = n
  # Give every file the same edge silence: cut only inside the leading and
  # trailing "sil" (speech is never cut) and zero-pad where espeak starts
  # speaking at sample 0, so each alignment starts and ends with "sil".
  margin = int(EDGE_SIL_S * TARGET_SR)
  y = np.pad(y, margin)
  segs = [[SIL, 0, margin]] + [[lab, a + margin, b + margin] for lab, a, b in segs]
  segs.append([SIL, n + margin, n + 2 * margin])
  speech = [s for s in segs if s[0] != SIL]
  lo = speech[0][1] - margin
  hi = speech[-1][2] + margin
  y = y[lo:hi]
  out = []
  for lab, a, b in segs:
    a, b = max(a, lo) - lo, min(b, hi) - lo
    if b <= a:
      continue
    if out and lab == SIL and out[-1][0] == SIL:
      out[-1][2] = b
    else:
      out.append([lab, a, b])
  peak = float(np.max(np.abs(y)))
  if peak > 0:
    y = y * (PEAK / peak)
  dur = len(y)
  phones = [[lab, round(a / TARGET_SR, 4), round(b / TARGET_SR, 4)] for lab, a, b in out]
  phones[-1][2] = round(dur / TARGET_SR, 4)
  return y.astype(np.float32), phones


def dir_size(path: Path) -> int:
  return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_readme(out: Path, stats: dict) -> None:
  text = f"""# jaxdisco demo corpus

A small synthetic English speech corpus for examples, smoke tests and
tutorials. It is **not** meant for real pretraining: every utterance is
formant-synthesized by espeak-ng, so a model trained on it learns espeak's
voices, not human speech. What it offers: it is small, contains no
third-party recordings or text, ships inside the package, and comes with
phone-level alignments, so unit-quality metrics (phone purity, PNMI, ...) can
be computed end to end without downloading anything.

## How it was made

`tools/make_demo_corpus.py` builds {stats['num_sentences']} distinct sentences
from small word lists (a fixed-seed combinatorial grammar written for this
corpus), then speaks each one through libespeak-ng with a voice, rate and
pitch chosen per utterance from a seeded RNG:

- voices: {', '.join(VOICES)}
- rates (wpm): {', '.join(map(str, RATES))}; pitches: {', '.join(map(str, PITCHES))}

Audio is resampled 22050 -> 16000 Hz (soxr, very high quality),
peak-normalized to {PEAK}, given exactly {EDGE_SIL_S} s of silence at either end
(trimmed, or zero-padded), and stored as 16-bit mono FLAC. Utterances outside
{MIN_DUR_S}-{MAX_DUR_S} s are skipped at generation time.

Phone alignments come from espeak-ng's own phoneme events (the library is
driven via `ctypes` with phoneme events enabled): a phone starts at its event's
sample position and ends where the next one starts. Labels are espeak phoneme
mnemonics (e.g. `h`, `@`, `aI`, `dZ`, `I2`); all pauses are mapped to `sil`,
and `sil` segments pad the start and end so each alignment covers the file
exactly. Boundaries are the positions the synthesizer reports, not a forced
alignment; they are close but not perfect (for some stops espeak reports the
event at the release, so part of the closure lands in the preceding phone).
As a check, mean energy over the corpus is about -90 dB in `sil` segments and
-13 to -20 dB in vowel segments.

Regenerate (deterministic for a given espeak-ng version):

```
apt-get install espeak-ng libespeak-ng1
python tools/make_demo_corpus.py --out jaxdisco/assets/demo_corpus
```

Generated with espeak-ng {stats['espeak_version']} (seed {stats['seed']}).

## Contents

| split | utterances | duration |
|-------|-----------:|---------:|
| train | {stats['train']['count']} | {stats['train']['seconds'] / 60:.1f} min |
| valid | {stats['valid']['count']} | {stats['valid']['seconds'] / 60:.1f} min |
| train_ext | {stats['train_ext']['count']} | {stats['train_ext']['seconds'] / 60:.1f} min |
| valid_ext | {stats['valid_ext']['count']} | {stats['valid_ext']['seconds'] / 60:.1f} min |

`train_ext` and `valid_ext` are `train` and `valid` plus utterances of
further sentences (ids `ext-0001`, ..., Ogg Opus at libsndfile's default
bitrate, about a fifth of FLAC's size), for work that needs more than
6 minutes of audio (the HuBERT loop demo, `configs/hubert_demo.py`).

{stats['num_phones']} distinct phone labels in `train` and `valid` (including `sil`);
{stats['size_mb']:.1f} MB on disk.

## Files

- `audio/{{utt_id}}.flac`: 16 kHz, mono, 16-bit FLAC; ids are `demo-0001`, ...
- `audio/{{utt_id}}.ogg`: 16 kHz, mono, Ogg Opus; ids are `ext-0001`, ...
- `train.tsv`, `valid.tsv` (and `*_ext.tsv`): fairseq manifests. Line 1 is the audio root,
  `audio`, relative to the manifest's own directory; then one
  `{{file}}<TAB>{{num_samples}}` line per utterance.
- `train.wrd`, `valid.wrd` (and `*_ext.wrd`): one transcript per line, in manifest order,
  upper case without punctuation (the original text is in `meta.jsonl`).
- `train.align.jsonl`, `valid.align.jsonl` (and `*_ext.align.jsonl`): one JSON object per line, in
  manifest order: `{{"id": "demo-0001", "phones": [["sil", 0.0, 0.1], ["j", 0.1, 0.2016], ...]}}`.
  Times are seconds (4 decimals); segments are contiguous from 0 to the
  file's duration.
- `meta.jsonl`: per utterance `id`, `split` (`train`, `valid`, or
  `train_ext` / `valid_ext` for those only in the extended splits), `voice`,
  `rate`, `pitch`, `text`, `duration_s`.
"""
  (out / "README.md").write_text(text)


def synthesize(
    tts,
    rng,
    sentences,
    num_train,
    num_valid,
    audio_dir: Path,
    extended: bool = False,
    *,
    voices=VOICES,
    rates=RATES,
    pitches=PITCHES,
    prefix: str | None = None,
    transform=None,
) -> list[dict]:
  """Speaks sentences in order until `num_train + num_valid` fall within the duration limits.

  Shipped utterances are `demo-0001.flac`, ...; `extended` ones `ext-0001.ogg` (Opus), ...
  `voices`, `rates`, `pitches`: the prosody drawn from (default: the demo corpus's);
  `prefix`: the id prefix; `transform(audio, rng) -> audio` runs on each 16 kHz utterance
  before it is written (e.g. added noise; alignments are unchanged).
  """
  total = num_train + num_valid
  prefix = prefix or ("ext" if extended else "demo")
  utts = []
  for text in sentences:
    if len(utts) == total:
      break
    # Prosody is drawn for every candidate (even rejected ones) so the
    # RNG stream does not depend on synthesis results.
    voice, rate, pitch = rng.choice(voices), rng.choice(rates), rng.choice(pitches)
    audio22, phones = tts.synth(text, voice, rate, pitch)
    segs22 = events_to_segments(phones, len(audio22))
    audio, align = render(audio22, segs22)
    if transform is not None:
      audio = transform(audio, rng)
    dur = len(audio) / TARGET_SR
    if not MIN_DUR_S <= dur <= MAX_DUR_S:
      continue
    utt_id = f"{prefix}-{len(utts) + 1:04d}"
    split = "train" if len(utts) < num_train else "valid"
    if extended:
      file = f"{utt_id}.ogg"
      sf.write(audio_dir / file, audio, TARGET_SR, "OPUS", format="OGG")
      split += "_ext"
    else:
      file = f"{utt_id}.flac"
      # Max FLAC compression: the corpus lives in git.
      sf.write(audio_dir / file, audio, TARGET_SR, "PCM_16", format="FLAC", compression_level=1.0)
    utts.append(
        dict(
            id=utt_id,
            file=file,
            split=split,
            voice=voice,
            rate=rate,
            pitch=pitch,
            text=text,
            duration_s=round(dur, 4),
            num_samples=len(audio),
            phones=align,
        )
    )
    if len(utts) % 20 == 0 or len(utts) == total:
      print(
          f"[{prefix} {len(utts)}/{total}] {utt_id} {dur:.2f}s {voice} r{rate} p{pitch}: {text}",
          flush=True,
      )
  if len(utts) < total:
    raise RuntimeError(f"only {len(utts)} of {total} {prefix} utterances within duration limits")
  return utts


def write_split(out: Path, name: str, rows: list[dict]) -> dict:
  """`{name}.tsv`, `.wrd` and `.align.jsonl`, in the same order; returns count and seconds."""
  with open(out / f"{name}.tsv", "w") as f:
    f.write("audio\n")
    f.writelines(f"{u['file']}\t{u['num_samples']}\n" for u in rows)
  with open(out / f"{name}.wrd", "w") as f:
    f.writelines(normalize_transcript(u["text"]) + "\n" for u in rows)
  with open(out / f"{name}.align.jsonl", "w") as f:
    f.writelines(json.dumps({"id": u["id"], "phones": u["phones"]}) + "\n" for u in rows)
  return {"count": len(rows), "seconds": sum(u["num_samples"] for u in rows) / TARGET_SR}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--out", type=Path, default=Path("jaxdisco/assets/demo_corpus"))
  ap.add_argument("--num-train", type=int, default=128)
  ap.add_argument("--num-valid", type=int, default=16)
  ap.add_argument(
      "--num-train-ext", type=int, default=384, help="Opus utterances added to train_ext"
  )
  ap.add_argument(
      "--num-valid-ext", type=int, default=48, help="Opus utterances added to valid_ext"
  )
  ap.add_argument("--seed", type=int, default=1234)
  args = ap.parse_args(argv)
  for name in ("num_train", "num_valid", "num_train_ext", "num_valid_ext"):
    if getattr(args, name) < 0:
      ap.error(f"--{name.replace('_', '-')}: expected a count >= 0, got {getattr(args, name)}")

  total = args.num_train + args.num_valid
  rng = random.Random(args.seed)
  # Generate spare sentences: some get rejected for being too short/long.
  sentences = make_sentences(rng, 4 * total + 50)

  out: Path = args.out
  audio_dir = out / "audio"
  if audio_dir.exists():
    shutil.rmtree(audio_dir)  # stale files would otherwise linger
  audio_dir.mkdir(parents=True)

  tts = Espeak()
  shipped = synthesize(tts, rng, sentences, args.num_train, args.num_valid, audio_dir)
  # The extended splits: more utterances of new sentences, drawn after the shipped ones so those
  # stay as they were, stored as Ogg Opus (a fifth of FLAC's bytes) to keep the package small.
  used = {u["text"] for u in shipped}
  num_ext = args.num_train_ext + args.num_valid_ext
  more = [s for s in make_sentences(rng, 4 * num_ext + 50 + len(used)) if s not in used]
  extra = synthesize(tts, rng, more, args.num_train_ext, args.num_valid_ext, audio_dir, True)
  utts = shipped + extra
  tts.close()

  stats = {"seed": args.seed, "espeak_version": espeak_version(), "num_sentences": len(shipped)}
  for split in ("train", "valid"):
    rows = [u for u in utts if u["split"] == split]
    stats[split] = write_split(out, split, rows)
    stats[f"{split}_ext"] = write_split(
        out, f"{split}_ext", rows + [u for u in utts if u["split"] == f"{split}_ext"]
    )
  with open(out / "meta.jsonl", "w") as f:
    keys = ("id", "split", "voice", "rate", "pitch", "text", "duration_s")
    f.writelines(json.dumps({k: u[k] for k in keys}) + "\n" for u in utts)
  stats["num_phones"] = len({p[0] for u in shipped for p in u["phones"]})
  # README size is negligible; measure before writing it so the number is stable.
  stats["size_mb"] = dir_size(out) / 1e6
  write_readme(out, stats)
  stats["size_mb"] = dir_size(out) / 1e6

  secs = stats["train"]["seconds"] + stats["valid"]["seconds"]
  print(
      f"wrote {out}: train={stats['train']['count']} valid={stats['valid']['count']} "
      f"(train_ext={stats['train_ext']['count']} valid_ext={stats['valid_ext']['count']}) "
      f"utterances, {secs:.1f} s ({secs / 3600:.3f} h), {stats['num_phones']} phone labels, "
      f"{stats['size_mb']:.2f} MB, espeak-ng {stats['espeak_version']}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
