"""ABX (jaxdisco.evaluation.abx): DTW and θ against brute force, and against the reference
implementation `zerospeech-libriabx2` 0.9.8 on the same item file and features."""

import importlib
import itertools
import os
import sys
import types

import numpy as np
import pytest

from jaxdisco.evaluation import abx, abx_items


def _paths(n, m):
  """Every monotone DTW path from (0, 0) to (n - 1, m - 1)."""
  if n == 1 and m == 1:
    return [[(0, 0)]]
  out = []
  for di, dj in ((1, 0), (0, 1), (1, 1)):
    if n - di >= 1 and m - dj >= 1:
      out += [p + [(n - 1, m - 1)] for p in _paths(n - di, m - dj)]
  return out


def _brute_dtw(d):
  """Cost / length of the cheapest path, by enumerating all paths (ties have measure zero)."""
  best = min(_paths(*d.shape), key=lambda p: sum(d[i, j] for i, j in p))
  return sum(d[i, j] for i, j in best) / len(best)


def test_dtw_matches_path_enumeration():
  rng = np.random.default_rng(0)
  shapes = [(1, 1), (1, 4), (4, 1), (2, 3), (3, 3), (4, 2), (4, 4), (3, 5)]
  x = np.zeros((len(shapes), 5, 3), np.float32)
  y = np.zeros((len(shapes), 5, 3), np.float32)
  expected = []
  for b, (n, m) in enumerate(shapes):
    x[b, :n], y[b, :m] = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
    xn = x[b, :n] / np.linalg.norm(x[b, :n], axis=1, keepdims=True)
    yn = y[b, :m] / np.linalg.norm(y[b, :m], axis=1, keepdims=True)
    expected.append(_brute_dtw(np.arccos(np.clip(xn @ yn.T, -1, 1)) / np.pi))
  lengths = np.asarray(shapes, np.int32)
  got = abx.dtw_distances(x, y, lengths[:, 0], lengths[:, 1], distance="cosine")
  np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-6, atol=1e-7)
  # Units: ½ per differing frame pair on the path; equal sequences are at distance 0.
  u = np.asarray([[0, 1, 1, 2], [0, 1, 2, 2]], np.int32)
  v = np.asarray([[0, 1, 2, 2], [3, 3, 3, 3]], np.int32)
  got = abx.dtw_distances(u, v, np.asarray([4, 4]), np.asarray([4, 4]), distance="identity")
  np.testing.assert_allclose(np.asarray(got), [0.0, 0.5])


def _synthetic(rng, num_files=8, phones="abcd", dim=4, span="triphone", rate=50.0):
  features, units, items = {}, {}, []
  for f in range(num_files):
    utt = f"u{f:02d}"
    seq = rng.choice(list(phones), 10)
    ends = np.cumsum(rng.integers(2, 6, len(seq))) / rate
    starts = np.concatenate([[0.0], ends[:-1]])
    segments = [(str(p), float(s), float(e)) for p, s, e in zip(seq, starts, ends)]
    n = int(round(ends[-1] * rate))
    features[utt] = rng.normal(size=(n, dim)).astype(np.float32)
    units[utt] = rng.integers(0, 3, n)
    items += abx_items.triphone_items({utt: segments}, {utt: f"s{f % 3}"}, span=span)
  return features, units, items


def _brute_error_rates(data, items, rate, distance):
  """θ by enumeration of every (a, b, x), no subsampling; means as the module doc says."""
  tokens = []
  for item in items:
    start, end = abx.item_frames(item.onset, item.offset, rate, len(data[item.file]))
    if end > start:
      tokens.append((item, data[item.file][start:end]))

  def dist(s, t):
    if distance == "identity":
      d = np.where(s[:, None] == t[None, :], 0.0, 0.5)
    else:
      sn = s / np.linalg.norm(s, axis=1, keepdims=True)
      tn = t / np.linalg.norm(t, axis=1, keepdims=True)
      d = np.arccos(np.clip(sn @ tn.T, -1, 1)) / np.pi
    # Exact DP (ties are real for units, so no path enumeration here), reference tie order.
    n, m = d.shape
    cost, length = np.full((n, m), np.inf), np.zeros((n, m), int)
    for i, j in itertools.product(range(n), range(m)):
      if i == 0 and j == 0:
        cost[i, j], length[i, j] = d[0, 0], 1
        continue
      up = cost[i - 1, j] if i else np.inf
      left = cost[i, j - 1] if j else np.inf
      diag = cost[i - 1, j - 1] if i and j else np.inf
      if diag <= left and diag <= up:
        prev = (i - 1, j - 1)
      elif left <= up:
        prev = (i, j - 1)
      else:
        prev = (i - 1, j)
      cost[i, j], length[i, j] = d[i, j] + cost[prev], length[prev] + 1
    return np.float32(cost[-1, -1]) / np.float32(length[-1, -1])

  cells = {}
  for item, frames in tokens:
    cells.setdefault((item.prev + "+" + item.next, item.speaker, item.phone), []).append(frames)
  per_triple = {}
  for (c, s, pa), a_set in cells.items():
    for (c2, s2, pb), b_set in cells.items():
      if c2 != c or s2 != s or pb == pa:
        continue
      for (c3, sx, px), x_set in cells.items():
        if c3 != c or px != pa:
          continue
        across = sx != s
        scores = []
        for ia, a in enumerate(a_set):
          for ix, x in enumerate(x_set):
            if not across and ia == ix:
              continue
            for b in b_set:
              dxa, dxb = dist(x, a), dist(x, b)
              scores.append(1.0 if dxa < dxb else 0.5 if dxa == dxb else 0.0)
        if scores:
          condition = "across-within" if across else "within-within"
          per_triple.setdefault(condition, {})[(s, pa, pb, c, sx)] = 1 - np.mean(scores)
  out = {}
  for condition, errors in per_triple.items():
    by_speaker = {}
    for (s, pa, pb, _, _), e in errors.items():
      by_speaker.setdefault((s, pa, pb), []).append(e)
    by_pair = {}
    for (s, pa, pb), values in by_speaker.items():
      by_pair.setdefault((pa, pb), []).append(np.mean(values))
    out[condition] = np.mean([np.mean(v) for v in by_pair.values()])
  return out


@pytest.mark.parametrize("kind", ["features", "units"])
def test_error_rates_match_enumeration(kind):
  features, units, items = _synthetic(np.random.default_rng(1), num_files=6, phones="abc")
  data = features if kind == "features" else units
  conditions = ("within-within", "across-within")
  got = abx.abx_error_rates(
      data, items, frame_rate=50.0, conditions=conditions, max_size_group=1000, max_x_across=1000
  )
  expected = _brute_error_rates(data, items, 50.0, "cosine" if kind == "features" else "identity")
  assert set(got) == set(expected) == set(conditions)
  for c in conditions:
    assert got[c] == pytest.approx(expected[c], abs=1e-6), c


def test_item_files_from_alignments(tmp_path):
  alignments = {
      "spk1-1-0": [("sil", 0, 0.1), ("a", 0.1, 0.2), ("b", 0.2, 0.3), ("c", 0.3, 0.4),
                   ("d", 0.4, 0.45), ("sil", 0.45, 0.6)],
  }
  speakers = abx_items.read_speakers(None, alignments)
  assert speakers == {"spk1-1-0": "spk1"}
  items = abx_items.triphone_items(alignments, speakers)
  # Only b (a_c) and c (b_d) have non-silence neighbours; triphone spans.
  assert [(i.phone, i.prev, i.next, i.onset, i.offset) for i in items] == [
      ("b", "a", "c", 0.1, 0.4), ("c", "b", "d", 0.2, 0.45)]
  phone_items = abx_items.triphone_items(alignments, speakers, span="phone")
  assert [(i.onset, i.offset) for i in phone_items] == [(0.2, 0.3), (0.3, 0.4)]
  path = abx_items.write_item_file(tmp_path / "x.item", items)
  assert path.read_text().splitlines()[0] == abx_items.HEADER
  assert abx_items.read_item_file(path) == items
  with pytest.raises(abx_items.ItemFileError, match="no speaker"):
    abx_items.triphone_items(alignments, {})
  # The reference's frame rule: frame i centred at (i + 1/2) / rate, end exclusive.
  assert abx.item_frames(0.1, 0.4, 50.0, 100) == (5, 19)


_INSTALL = (
    "READTHEDOCS=1 pip install --no-deps --no-build-isolation -r requirements-oracle.txt "
    "(the README's test command)"
)


def _load_reference():
  """zrc_abx2.eval_ABX without what its scoring does not use: its CPC model loader (which needs
  a torchaudio matching torch) and pandas (only its command line writes CSV with it). Both are
  stubbed for the import only, then taken out of sys.modules again."""
  try:
    import torch  # noqa: F401
    import libri_light_dtw  # noqa: F401
  except ImportError as e:
    if os.environ.get("JAXDISCO_REQUIRE_ORACLES") == "1":
      pytest.fail(f"the ABX oracle is required (JAXDISCO_REQUIRE_ORACLES=1): {e}. {_INSTALL}",
                  pytrace=False)
    pytest.skip(f"the ABX oracle is not installed ({e}). Install: {_INSTALL}")
  names = ("pandas", "zrc_abx2.cpc.feature_loader")
  saved = {k: sys.modules.get(k) for k in names}
  try:
    try:
      import pandas  # noqa: F401
    except ImportError:
      sys.modules["pandas"] = types.ModuleType("pandas")
    stub = types.ModuleType("zrc_abx2.cpc.feature_loader")
    stub.FeatureModule = stub.buildFeature = stub.loadModel = None
    sys.modules["zrc_abx2.cpc.feature_loader"] = stub
    return importlib.import_module("zrc_abx2.eval_ABX")
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k, None)
      else:
        sys.modules[k] = v


# Measured: max |ours - reference| 6.3e-8 over the 16 scores below (float32 sums in the
# reference's aggregation); the tolerance leaves room for other BLAS summation orders.
REFERENCE_TOLERANCE = 1e-6


@pytest.mark.parametrize("span,max_size_group", [("triphone", 3), ("phone", 10)])
def test_agrees_with_reference(tmp_path, span, max_size_group):
  """Same item file, same features (units as one-hot vectors for the reference), all four
  conditions; small caps so that the reference's random subsampling is exercised."""
  reference = _load_reference()
  features, units, items = _synthetic(
      np.random.default_rng(0), num_files=12, phones="abcde", dim=6, span=span
  )
  item_path = abx_items.write_item_file(tmp_path / "x.item", items)
  items = abx_items.read_item_file(item_path)
  for kind, data in (("features", features), ("units", units)):
    directory = tmp_path / kind
    directory.mkdir()
    for utt, x in data.items():
      np.save(directory / f"{utt}.npy", x if kind == "features" else np.eye(3, dtype=np.float32)[x])
    evaluator = reference.EvalABX()
    seq_list = evaluator._find_all_files(str(directory), ".npy")
    expected = evaluator._ABX(
        reference.Pooling.NONE, abx.SEED, reference._load_npy, str(item_path), seq_list,
        "cosine", 50.0, ["within", "across"], ["within", "any"], max_x_across=2,
        max_size_group=max_size_group,
    )
    got = abx.abx_error_rates(
        {utt: data[utt] for utt, _ in seq_list}, items, frame_rate=50.0,
        max_size_group=max_size_group, max_x_across=2,
    )
    assert set(got) == set(expected) == set(abx.CONDITIONS)
    for c in abx.CONDITIONS:
      assert abs(got[c] - expected[c]) <= REFERENCE_TOLERANCE, (kind, c, got[c], expected[c])
