"""Errors that report a problem with what the user gave, not a bug in jaxdisco.

Every user-facing error class derives from `UserError`: a bad config field, a manifest, an audio
or alignment file, a checkpoint, a tokenizer directory. Their messages name the file or field
and say what was expected, so the `jaxdisco` command prints them as one line and exits 2;
any other exception is a bug and keeps its traceback. Each class also derives from the builtin
it replaced (`ValueError`, `FileNotFoundError`), so `except ValueError` in callers still works.

The classes of one module's inputs live in that module (`ManifestError` in
`jaxdisco.data.manifest`, `AudioError` in `jaxdisco.data.audio`, ...); those used across
packages live here.
"""

from __future__ import annotations


class UserError(Exception):
  """A problem with the user's input; the message names the file or field."""


class ConfigError(UserError, ValueError):
  """A config field has a value the run cannot use; the message names the field."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or directory the user named does not exist or is not what was expected."""


class CheckpointError(UserError, ValueError):
  """A model directory or checkpoint cannot be read, or does not fit the run."""


class TokenizerError(UserError, ValueError):
  """A tokenizer directory cannot be used, or an export was asked for what the model lacks."""
