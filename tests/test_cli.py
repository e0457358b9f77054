"""The `jaxdisco` command as a user meets it: `--help` and `--version` exit 0, and each kind of
user error (config, override typo, manifest, audio, alignment, checkpoint, tokenizer) prints
one line naming the file or field and exits 2, with no traceback. Every case stops before
anything is compiled, so each subprocess takes a second or two."""

import json
import subprocess
import sys

import pytest

from jaxdisco import cli
from jaxdisco.assets import demo_corpus_dir
from jaxdisco.errors import ConfigError

from conftest import REPO, load_config

DEMO = str(REPO / "configs" / "demo.py")

# A few flags of each command, as its --help must list them (with their help text).
COMMAND_FLAGS = {
    "pretrain": {"--config": "Path to a config file", "--workdir": "Directory for checkpoints"},
    "hubert-iterate": {"--config": "HuBERT config file", "--workdir": "every stage's outputs"},
    "export-tokenizer": {
        "--centroids": "save_centroids path prefix",
        "--hidden-states-convention": "transformers5",
        "--units": "<kmeans|codebook|vq_wav2vec|dinosr|best_rq>",
    },
    "tokenize": {"--tokenizer": "written by export-tokenizer", "--[no]deduplicate": "Merge"},
    "eval-units": {"--alignments": "JSONL phone alignments", "--frame-rate": "(default: '50.0')"},
    "prepare-data": {"--source": "Manifest .tsv", "--on-error": "<skip|fail>"},
    "probe-layers": {"--model": "fairseq .pt", "--k": "(default: '50')"},
    "plan": {"--topology": "TPU slice", "--[no]fit": "largest per-chip batch"},
    "fit-kmeans": {"--features": "Feature dump directory", "--passes": "(default: '20')"},
}


def _jaxdisco(*args, cwd=None):
  return subprocess.run(
      [sys.executable, "-m", "jaxdisco.cli", *map(str, args)],
      capture_output=True,
      text=True,
      timeout=300,
      cwd=cwd or REPO,
  )


def test_every_command_has_help():
  assert set(COMMAND_FLAGS) == set(cli.COMMANDS)
  for name, expected in COMMAND_FLAGS.items():
    run = _jaxdisco(name, "--help")
    assert run.returncode == 0, run.stderr
    assert f"jaxdisco {name}" in run.stdout and "flags:" in run.stdout
    for flag, help_text in expected.items():
      entry = run.stdout.split(f"\n  {flag}: ", 1)
      assert len(entry) == 2 and help_text in entry[1][:300], (name, flag, run.stdout)
    has_overrides = "--config.FIELD=VALUE" in run.stdout
    assert has_overrides == cli.COMMANDS[name].config_overrides, name
  top = _jaxdisco("--help")
  assert top.returncode == 0 and all(name in top.stdout for name in cli.COMMANDS)
  version = _jaxdisco("--version")
  assert version.returncode == 0 and version.stdout.strip() == f"jaxdisco {cli.version()}"
  assert cli.version()[0].isdigit()


def _assert_user_error(run, command: str, *expected: str, lines: int = 1) -> None:
  """Exit 2, `jaxdisco <command>: error: ...` naming what is wrong, no traceback."""
  assert run.returncode == 2, (run.returncode, run.stderr[-3000:])
  assert "Traceback" not in run.stderr, run.stderr[-3000:]
  stderr = [line for line in run.stderr.splitlines() if line.strip()]
  assert len(stderr) == lines, run.stderr
  assert stderr[0].startswith(f"jaxdisco {command}: error: "), stderr[0]
  for text in expected:
    assert text in run.stderr, (text, run.stderr)


def test_config_errors(tmp_path):
  work = tmp_path / "work"
  bad_value = _jaxdisco(
      "pretrain", "--config", DEMO, "--workdir", work, "--config.model.num_heads=5"
  )
  _assert_user_error(bad_value, "pretrain", "model.num_heads (5)")
  typo = _jaxdisco("pretrain", "--config", DEMO, "--workdir", work, "--config.model.num_layerz=3")
  _assert_user_error(
      typo, "pretrain", "--config.model.num_layerz", "did you mean --config.model.num_layers?"
  )
  missing = _jaxdisco("pretrain", "--config", DEMO)
  _assert_user_error(missing, "pretrain", "needs --config and --workdir")


def test_manifest_error(tmp_path):
  nope = tmp_path / "nope.tsv"
  run = _jaxdisco(
      "pretrain",
      "--config",
      DEMO,
      "--workdir",
      tmp_path / "w",
      f"--config.data.train_manifest={nope}",
  )
  _assert_user_error(run, "pretrain", f"{nope}: manifest file not found")


def test_audio_error(tmp_path):
  audio = demo_corpus_dir() / "audio"
  (tmp_path / "corpus").mkdir()
  (tmp_path / "corpus" / "good.flac").write_bytes((audio / "demo-0129.flac").read_bytes())
  (tmp_path / "corpus" / "broken.flac").write_bytes((audio / "demo-0130.flac").read_bytes()[:3000])
  manifest = tmp_path / "bad.tsv"
  manifest.write_text(f"{tmp_path / 'corpus'}\ngood.flac\t49877\nbroken.flac\t42320\n")
  run = _jaxdisco(
      "hubert-iterate",
      "--config",
      REPO / "configs" / "hubert_demo.py",
      "--workdir",
      tmp_path / "loop",
      f"--config.data.train_manifest={manifest}",
      f"--config.data.valid_manifest={manifest}",
  )
  _assert_user_error(run, "hubert-iterate", "broken.flac: expected a readable audio file")


def test_alignment_error(tmp_path):
  (tmp_path / "x.km").write_text("1 2 3\n4 5\n")
  (tmp_path / "x.km.ids").write_text("u1\nu2\n")
  alignments = tmp_path / "bad.align.jsonl"
  alignments.write_text('{"id": "u1", "phones": [["a", 0.0, 0.1]]}\n{"id": "u2", "phones": 7}\n')
  run = _jaxdisco("eval-units", "--units", tmp_path / "x.km", "--alignments", alignments)
  _assert_user_error(run, "eval-units", f"{alignments}:2: expected")


def test_checkpoint_errors(tmp_path):
  (tmp_path / "empty").mkdir()
  missing = _jaxdisco("export-tokenizer", "--workdir", tmp_path / "empty", "--out", tmp_path / "t")
  _assert_user_error(missing, "export-tokenizer", "no jaxdisco checkpoint found")
  # A workdir written under another model config: refused before anything is built, naming
  # the field (one line per mismatched field, indented under the error line).
  work = tmp_path / "work"
  work.mkdir()
  written = json.loads(load_config("demo").to_json())
  written["model"]["num_layers"] += 1
  (work / "config.json").write_text(json.dumps(written))
  mismatch = _jaxdisco("pretrain", "--config", DEMO, "--workdir", work)
  _assert_user_error(
      mismatch, "pretrain", "incompatible config", "model.num_layers: checkpoint has", lines=3
  )


def test_tokenizer_error(tmp_path):
  (tmp_path / "tok").mkdir()
  (tmp_path / "tok" / "tokenizer.json").write_text('{"format": "something-else"}')
  clip = demo_corpus_dir() / "audio" / "demo-0001.flac"
  run = _jaxdisco("tokenize", "--tokenizer", tmp_path / "tok", clip, "--out", tmp_path / "u.jsonl")
  _assert_user_error(run, "tokenize", "tokenizer.json: 'format' is 'something-else'")


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(capsys):
  def config_problem(argv):
    raise ConfigError("model.num_heads: expected a divisor of model.embed_dim")

  def bug(argv):
    raise KeyError("a bug")

  with pytest.raises(SystemExit) as stop:
    cli._reporting_user_errors("pretrain", config_problem)(["jaxdisco pretrain"])
  assert stop.value.code == cli.USER_ERROR_EXIT
  assert capsys.readouterr().err == (
      "jaxdisco pretrain: error: model.num_heads: expected a divisor of model.embed_dim\n"
  )
  with pytest.raises(KeyError, match="a bug"):
    cli._reporting_user_errors("pretrain", bug)(["jaxdisco pretrain"])
