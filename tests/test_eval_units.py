"""Unit-quality metrics (golden values), frame labelling, .km files and `jaxdisco eval-units`."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from jaxdisco.clustering import labels as lb
from jaxdisco.evaluation import units as ev


def test_golden_values_from_hand_made_counts():
  # Phones a, b (rows) x units 0, 1, 2 (columns); 8 frames.
  counts = np.array([[3, 1, 0], [0, 2, 2]])
  q = ev.quality_from_counts(counts)
  # phone purity: per unit the top phone: 3/8 + 2/8 + 2/8.
  assert q["phone_purity"] == pytest.approx(7 / 8)
  # cluster purity: per phone the top unit: 3/8 + 2/8.
  assert q["cluster_purity"] == pytest.approx(5 / 8)
  # p(phone) = (1/2, 1/2) -> H = ln 2. p(unit) = (3/8, 3/8, 1/4).
  # I = 3/8 ln 2 + 1/8 ln(2/3) + 1/4 ln(4/3) + 1/4 ln 2 = 5/4 ln 2 - 3/8 ln 3.
  assert q["phone_entropy"] == pytest.approx(math.log(2))
  assert q["mutual_info"] == pytest.approx(1.25 * math.log(2) - 0.375 * math.log(3))
  assert q["pnmi"] == pytest.approx(1.25 - 0.375 * math.log2(3))  # 0.65564
  assert (q["num_frames"], q["num_phones"], q["num_units"]) == (8, 2, 3)

  perfect = ev.quality_from_counts(np.diag([5, 3, 2]))
  assert perfect["pnmi"] == pytest.approx(1) and perfect["phone_purity"] == 1
  independent = ev.quality_from_counts(np.ones((2, 2)))
  assert independent["pnmi"] == pytest.approx(0, abs=1e-12)
  assert independent["phone_purity"] == independent["cluster_purity"] == 0.5


def test_unit_quality_from_frame_sequences_matches_counts():
  phones = ["a", "a", "a", "a", "b", "b", "b", "b"]
  units = [0, 0, 0, 1, 1, 1, 2, 2]
  assert ev.unit_quality(phones, units) == ev.quality_from_counts([[3, 1, 0], [0, 2, 2]])


def test_frame_centres_and_expected_lengths():
  segments = [("sil", 0.0, 0.1), ("a", 0.1, 0.2), ("b", 0.2, 0.3)]
  # 100 Hz, 25 ms window: frame i centre = 0.01 i + 0.0125 s.
  labels = ev.frame_phones(segments, 28, frame_rate=100)
  assert labels[8] == "sil" and labels[9] == "a" and labels[18] == "a" and labels[19] == "b"
  assert ev.expected_num_frames(0.3, 100) == 28  # 1 + (4800 - 400) // 160
  assert ev.expected_num_frames(2.9980625, 50) == 1 + (47969 - 400) // 320
  # 50 Hz: centre = 0.02 i + 0.0125; frame 4 (0.0925) is sil, frame 5 (0.1125) is a.
  assert list(ev.frame_phones(segments, 6, frame_rate=50)[3:6]) == ["sil", "sil", "a"]


def _write_corpus(tmp_path, lengths=(28, 18)):
  align = tmp_path / "x.align.jsonl"
  rows = [
      {"id": "u1", "phones": [["sil", 0, 0.1], ["a", 0.1, 0.2], ["b", 0.2, 0.3]]},
      {"id": "u2", "phones": [["a", 0, 0.1], ["b", 0.1, 0.2]]},
  ]
  align.write_text("".join(json.dumps(r) + "\n" for r in rows))
  units = [np.arange(n) // 10 for n in lengths]
  lb.write_km(tmp_path / "x.km", units, ["u1", "u2"])
  (tmp_path / "x.tsv").write_text("audio\nu1.flac\t4800\nu2.flac\t3200\n")
  return align, units


def test_km_and_dict_files_round_trip(tmp_path):
  _, units = _write_corpus(tmp_path)
  assert (tmp_path / "x.km").read_text().splitlines()[1] == " ".join(["0"] * 10 + ["1"] * 8)
  for a, b in zip(lb.read_km(tmp_path / "x.km"), units):
    np.testing.assert_array_equal(a, b)
  assert lb.read_ids(tmp_path / "x.km.ids") == ["u1", "u2"]
  path = lb.write_dict(tmp_path, 3)
  assert path.read_text() == "0 1\n1 1\n2 1\n" and lb.read_dict(path) == 3
  path.write_text("0 1\n2 1\n")
  with pytest.raises(ValueError, match="expected '1 <count>'"):
    lb.read_dict(path)


def test_evaluate_km_file_pairs_by_ids_and_reports_mismatches(tmp_path):
  align, _ = _write_corpus(tmp_path, lengths=(29, 17))  # each off by one frame: allowed
  metrics, phones, units = ev.evaluate_km_file(tmp_path / "x.km", align, frame_rate=100)
  assert metrics["frames"] == 28 + 17 and metrics["frame_diff"] == 2
  assert len(phones) == len(units) == 45
  by_manifest, _, _ = ev.evaluate_km_file(
      tmp_path / "x.km", align, frame_rate=100, manifest_path=tmp_path / "x.tsv"
  )
  assert by_manifest == metrics

  with pytest.raises(ev.AlignmentError, match="u1: 29 unit frames.*gives 14"):
    ev.evaluate_km_file(tmp_path / "x.km", align, frame_rate=50)  # wrong rate
  (tmp_path / "x.km.ids").unlink()
  with pytest.raises(ev.AlignmentError, match="pass --manifest"):
    ev.evaluate_km_file(tmp_path / "x.km", align, frame_rate=100)
  (tmp_path / "y.tsv").write_text("audio\nu1.flac\t4800\nu3.flac\t3200\n")
  with pytest.raises(ev.AlignmentError, match="no alignment.*u3"):
    ev.evaluate_km_file(tmp_path / "x.km", align, frame_rate=100, manifest_path=tmp_path / "y.tsv")


def test_plot_cooccurrence_writes_png(tmp_path):
  rng = np.random.default_rng(0)
  phones = rng.choice(["a", "b", "c", "sil"], 500)
  units = rng.integers(0, 12, 500)
  ev.plot_cooccurrence(phones, units, tmp_path / "plots" / "co.png")
  assert (tmp_path / "plots" / "co.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_prints_metrics_and_rejects_bad_input(tmp_path):
  align, _ = _write_corpus(tmp_path)
  base = [
      sys.executable,
      "-m",
      "jaxdisco.cli",
      "eval-units",
      "--units",
      str(tmp_path / "x.km"),
      "--alignments",
      str(align),
  ]
  ok = subprocess.run(
      base + ["--frame-rate", "100", "--plot", str(tmp_path / "p.png")],
      capture_output=True,
      text=True,
      check=False,
      timeout=120,
  )
  assert ok.returncode == 0, ok.stderr
  assert "PNMI" in ok.stdout and "phone purity" in ok.stdout and "cluster purity" in ok.stdout
  for metric in ("PNMI", "phone purity", "cluster purity"):
    assert "s.d. " in ok.stdout.split(metric)[1].splitlines()[0]
  assert (tmp_path / "p.png").exists()
  bad = subprocess.run(base, capture_output=True, text=True, check=False, timeout=120)
  assert bad.returncode != 0 and "more than 1 frame" in bad.stderr

  # --baseline: a uninformative 50 Hz unit set (PNMI 0), so the gain is the units' own PNMI.
  lb.write_km(tmp_path / "flat.km", [np.zeros(14, int), np.zeros(9, int)], ["u1", "u2"])
  compare = base + ["--frame-rate", "100", "--baseline", str(tmp_path / "flat.km")]
  run = lambda extra: subprocess.run(
      compare + extra, capture_output=True, text=True, check=False, timeout=120
  )
  ok = run(["--baseline-frame-rate", "50"])
  assert ok.returncode == 0, ok.stderr
  pnmi = float(ok.stdout.split("PNMI            ")[1].split()[0])
  gain_line = ok.stdout.split("PNMI gain       ")[1]
  assert float(gain_line.split()[0]) == pytest.approx(pnmi, abs=1e-4) and pnmi > 0.1
  assert "2 shared utterances" in gain_line
  wrong_rate = run([])  # The baseline read at 100 Hz: its lengths do not fit the alignments.
  assert wrong_rate.returncode != 0 and "--baseline:" in wrong_rate.stderr


def test_pnmi_gain_bootstrap():
  from jaxdisco.evaluation import bootstrap

  rng = np.random.default_rng(0)
  phones = {f"u{i}": rng.choice(list("abcd"), 60) for i in range(12)}
  code = {"a": 0, "b": 1, "c": 2, "d": 3}
  noisy = {u: (p, rng.integers(0, 4, len(p))) for u, p in phones.items()}
  exact = {u: (p, np.asarray([code[x] for x in p])) for u, p in phones.items()}
  same = bootstrap.pnmi_gain(noisy, noisy, draws=50)
  assert same == {"gain": 0.0, "std": 0.0, "p_positive": 0.0, "utterances": 12}
  better = bootstrap.pnmi_gain(noisy, exact, draws=200)
  concat = lambda side: ev.unit_quality(
      np.concatenate([side[u][0] for u in sorted(side)]),
      np.concatenate([side[u][1] for u in sorted(side)]),
  )["pnmi"]
  assert better["gain"] == pytest.approx(concat(exact) - concat(noisy))
  assert better["gain"] > 0.9 and 0 < better["std"] < 0.05 and better["p_positive"] == 1.0
  worse = bootstrap.pnmi_gain(exact, noisy, draws=200)
  assert worse["gain"] == pytest.approx(-better["gain"]) and worse["p_positive"] == 0.0
  # Only shared utterances count; fewer than two cannot be resampled.
  assert bootstrap.pnmi_gain(noisy, {"u0": exact["u0"], "u1": exact["u1"]})["utterances"] == 2
  with pytest.raises(ValueError, match="at least 2 shared utterances"):
    bootstrap.pnmi_gain(noisy, {"u0": exact["u0"]})


def test_quality_spread_bootstrap():
  """PNMI and purities on all utterances plus their spreads over resamples: zero for units that
  are the phones in every utterance, and for noisy units close to the spread a direct
  resampling gives."""
  from jaxdisco.evaluation import bootstrap

  rng = np.random.default_rng(1)
  phones = {f"u{i}": rng.choice(list("abcd"), 60) for i in range(12)}
  code = {"a": 0, "b": 1, "c": 2, "d": 3}
  exact = {u: (p, np.asarray([code[x] for x in p])) for u, p in phones.items()}
  half = {u: (p, np.where(rng.random(len(p)) < 0.5, exact[u][1], rng.integers(0, 4, len(p))))
          for u, p in phones.items()}
  perfect = bootstrap.quality_spread(exact, draws=50)
  for metric in bootstrap.SPREAD_METRICS:
    assert perfect[metric] == pytest.approx(1.0) and perfect[metric + "_std"] < 1e-9
  assert perfect["utterances"] == 12
  got = bootstrap.quality_spread(half, draws=400, seed=3)
  ids = sorted(half)
  pool = lambda chosen: ev.unit_quality(
      np.concatenate([half[ids[i]][0] for i in chosen]),
      np.concatenate([half[ids[i]][1] for i in chosen]),
  )
  draws = [pool(np.random.default_rng(s).integers(0, 12, 12)) for s in range(400)]
  for metric in bootstrap.SPREAD_METRICS:
    assert got[metric] == pytest.approx(pool(range(12))[metric])
    direct = np.std([q[metric] for q in draws])
    assert 0.0 < got[metric + "_std"] and got[metric + "_std"] == pytest.approx(direct, rel=0.25)
  with pytest.raises(ValueError, match="at least 2 utterances"):
    bootstrap.quality_spread({"u0": exact["u0"]})
