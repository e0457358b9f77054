"""jaxdisco: self-supervised discrete speech units in JAX.

wav2vec 2.0, vq-wav2vec and HuBERT pretraining, from one CPU to a TPU pod, exported as frozen
tokenizers (audio in, unit ids out).
"""

__version__ = "0.1.0"


def load_pretrained(path):
  """Loads a Hugging Face directory or a jaxdisco workdir/checkpoint; see `jaxdisco.pretrained`."""
  from jaxdisco.pretrained import load_pretrained as _load

  return _load(path)
