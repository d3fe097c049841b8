"""The user-facing errors: problems with what the user gave (config, data, checkpoints,
caches, the workdir), each with a message that names the problem and the fix.

``run.py`` prints these alone (no traceback) and exits with status 2; every other
exception is a bug of this code and keeps its traceback. Library functions raise the
subclasses that also derive from the built-in a caller would expect (``ValueError`` for
bad values, ``RuntimeError`` for unusable state), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class UserError(Exception):
  """A problem with the user's input whose message says what to change."""


class ConfigError(UserError, ValueError):
  """One or more config fields have unusable values (each named with the allowed ones)."""


class InputError(UserError, ValueError):
  """Data, features, checkpoints or files that cannot be used as given."""


class CacheError(UserError, RuntimeError):
  """A stored artifact (feature cache, stage result) that cannot be used as it is."""


class WorkdirBusy(UserError, RuntimeError):
  """Another process holds the workdir."""
