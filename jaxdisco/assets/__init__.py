"""Data shipped with the package (the demo corpus)."""

from etils import epath


def demo_corpus_dir() -> epath.Path:
  """Directory of the shipped demo corpus: train.tsv, valid.tsv, audio/, *.align.jsonl."""
  return epath.Path(__file__).parent / "demo_corpus"
