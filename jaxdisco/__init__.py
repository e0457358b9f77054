"""jaxdisco: self-supervised discrete speech units in JAX.

wav2vec 2.0, vq-wav2vec and HuBERT pretraining, from one CPU to a TPU pod, exported as frozen
tokenizers (audio in, unit ids out).
"""

__version__ = "0.1.0"


def load_pretrained(path):
  """Loads a Hugging Face directory or a jaxdisco workdir/checkpoint; see `jaxdisco.pretrained`."""
  from jaxdisco.pretrained import load_pretrained as _load

  return _load(path)


def __getattr__(name):
  # `jaxdisco.Tokenizer` without importing jax at `import jaxdisco`.
  if name == "Tokenizer":
    from jaxdisco.tokenizer import Tokenizer

    return Tokenizer
  raise AttributeError(f"module 'jaxdisco' has no attribute {name!r}")
