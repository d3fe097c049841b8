"""Typed records (dataclasses) to strict JSON and back, guided by their type hints.

    doc = typed_json.dump(record)            # plain JSON values
    record = typed_json.load(Record, doc)    # the same record

Stage parameters are hashed in this form (``dump`` is canonical: dict keys sorted with
``sort_keys=True``) and stage results are stored in it. Supported field types: bool,
int, float (NaN / Inf become null), str, None, ``X | None``, ``tuple[X, ...]``,
``tuple[X, Y]``, ``dict[K, V]`` with str / int keys, nested dataclasses, and unions of
dataclasses (each member class sets ``TAGGED = True`` and is stored with a ``"type"``
tag naming it). A field declared with ``metadata=OPTIONAL`` (and a default) is left out
of the JSON while it holds its default, and ``load`` gives it the default back: a new
optional stage parameter then leaves every existing key unchanged. Hand-written because the records are plain
frozen dataclasses that numpy and jax code builds directly; pydantic would add a
dependency and a second way of declaring them for ~60 lines.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any

import numpy as np

OPTIONAL = {"omit_default": True}  # ``dataclasses.field(default=..., metadata=OPTIONAL)``


def _omitted(f: dataclasses.Field, value) -> bool:
  return bool(f.metadata.get("omit_default")) and value == f.default


def dump(x: Any, *, sort_keys: bool = False) -> Any:
  """``x`` (records, tuples, dicts, numpy values) as plain JSON values."""
  rec = functools.partial(dump, sort_keys=sort_keys)
  if dataclasses.is_dataclass(x) and not isinstance(x, type):
    out = {"type": type(x).__name__} if getattr(type(x), "TAGGED", False) else {}
    out.update({f.name: rec(getattr(x, f.name)) for f in dataclasses.fields(x)
                if not _omitted(f, getattr(x, f.name))})
    return out
  if isinstance(x, dict):
    items = sorted(x.items(), key=lambda kv: str(kv[0])) if sort_keys else x.items()
    return {str(k): rec(v) for k, v in items}
  if isinstance(x, (list, tuple)):
    return [rec(v) for v in x]
  if isinstance(x, np.ndarray):
    return rec(x.tolist())
  if isinstance(x, np.generic):
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _is_union(t) -> bool:
  return typing.get_origin(t) in (typing.Union, types.UnionType)


def load(t: Any, x: Any) -> Any:
  """The value of type ``t`` that ``dump`` turned into ``x``; TypeError if it does not fit."""
  if t is Any:
    return x
  if _is_union(t):
    args = typing.get_args(t)
    if x is None and type(None) in args:
      return None
    classes = [a for a in args if dataclasses.is_dataclass(a)]
    if len(classes) > 1:
      tag = x.get("type") if isinstance(x, dict) else None
      match = [c for c in classes if c.__name__ == tag]
      if not match:
        raise TypeError(f"no record type {tag!r} among {[c.__name__ for c in classes]}")
      return load(match[0], x)
    rest = [a for a in args if a is not type(None)]
    if len(rest) == 1:
      return load(rest[0], x)
    if x is None and float in rest:
      return math.nan
    return x  # a union of scalars, e.g. int | float
  if dataclasses.is_dataclass(t):
    if not isinstance(x, dict):
      raise TypeError(f"{t.__name__}: expected an object, got {type(x).__name__}")
    hints = _hints(t)
    kw = {f.name: load(hints[f.name], x[f.name]) for f in dataclasses.fields(t)
          if f.name in x}
    return t(**kw)
  origin, args = typing.get_origin(t), typing.get_args(t)
  if origin is tuple:
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(load(args[0], v) for v in x)
    return tuple(load(a, v) for a, v in zip(args, x))
  if origin is dict:
    kt, vt = args
    return {kt(k): load(vt, v) for k, v in x.items()}
  if t is float:
    return math.nan if x is None else float(x)
  if t in (int, str, bool):
    if not isinstance(x, t) and not (t is int and isinstance(x, int)):
      raise TypeError(f"expected {t.__name__}, got {x!r}")
    return x
  return x

