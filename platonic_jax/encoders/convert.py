"""Strict Hugging Face checkpoint -> Flax parameter conversion helpers.

Every architecture's ``convert(state_dict, hf_config)`` reads the checkpoint through a
:class:`StateDict`, which records every key it hands out; :meth:`StateDict.finish` then
raises one :class:`ConversionError` listing the missing, unexpected and misshaped keys
(never a silent partial load: the 4.x Flax ResNet did exactly that, docs/design.md).

Also here: reading a checkpoint directory into ``{name: np.ndarray}``
(``model.safetensors``, sharded safetensors, or ``pytorch_model.bin`` when torch is
installed), and :func:`check_params`, which compares a converted pytree with the
module's own ``jax.eval_shape`` init so every parameter is known to be filled.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping, Sequence

import jax
import numpy as np

from platonic_jax import errors


class ConversionError(errors.InputError):
  """A checkpoint does not match the architecture: lists every offending key."""

  def __init__(self, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
               misshaped: Sequence[tuple[str, tuple, tuple]] = (), what: str = "checkpoint"):
    self.missing = sorted(missing)
    self.unexpected = sorted(unexpected)
    self.misshaped = sorted(misshaped)
    lines = [f"{what} does not match the model config (strict conversion):"]
    if self.missing:
      lines.append(f"  missing keys ({len(self.missing)}): " + ", ".join(self.missing))
    if self.unexpected:
      lines.append(f"  unexpected keys ({len(self.unexpected)}): " + ", ".join(self.unexpected))
    if self.misshaped:
      lines.append(f"  misshaped keys ({len(self.misshaped)}): " + ", ".join(
          f"{k} has shape {tuple(got)}, expected {tuple(want)}" for k, got, want in self.misshaped))
    lines.append("  Fix: use the config.json that was saved with these weights, or a "
                 "checkpoint of a supported architecture.")
    super().__init__("\n".join(lines))


class StateDict:
  """Strict reader of a ``{name: array}`` checkpoint.

  Args:
    state_dict: HF names -> arrays (numpy, or anything ``np.asarray`` accepts).
    prefixes: optional model prefixes (e.g. ``"resnet."`` of ``ResNetForImageClassification``,
      ``"transformer."`` of ``GPT2LMHeadModel``) stripped from keys that carry them, so a
      base model and a model-with-head checkpoint read the same.
    ignore: regular expressions (``re.fullmatch`` on the stripped name) of keys that are
      known and deliberately unused (task heads, non-persistent buffers); never reported.

  ``take(name, shape)`` returns float32 numpy; after all takes, ``finish()`` raises
  :class:`ConversionError` if any key was missing, misshaped, or never taken.
  """

  def __init__(self, state_dict: Mapping[str, Any], prefixes: Iterable[str] = (),
               ignore: Iterable[str] = ()):
    prefixes = tuple(prefixes)
    self._arrays: dict[str, Any] = {}
    for key, value in state_dict.items():
      name = key
      for p in prefixes:
        if name.startswith(p):
          name = name[len(p):]
          break
      if name in self._arrays:
        raise ConversionError(unexpected=[key], what="checkpoint (duplicate key after "
                              f"stripping prefixes {prefixes})")
      self._arrays[name] = value
    self._ignore = [re.compile(r) for r in ignore]
    self._taken: set[str] = set()
    self.missing: list[str] = []
    self.misshaped: list[tuple[str, tuple, tuple]] = []

  def __contains__(self, name: str) -> bool:
    return name in self._arrays

  def take(self, name: str, shape: Sequence[int] | None = None) -> np.ndarray:
    """The float32 array stored under ``name`` (its HF layout), checked against ``shape``.

    A missing or misshaped key is recorded (reported by ``finish``) and a zero array of
    ``shape`` is returned so conversion can go on and report every problem at once.
    """
    if name not in self._arrays:
      self.missing.append(name)
      return np.zeros(shape or (), np.float32)
    self._taken.add(name)
    value = to_numpy(self._arrays[name])
    if shape is not None and tuple(value.shape) != tuple(shape):
      self.misshaped.append((name, tuple(value.shape), tuple(shape)))
      return np.zeros(shape, np.float32)
    return value

  def view(self, name: str, shape: Sequence[int] | None = None) -> Any:
    """Like :meth:`take`, but the tensor as stored -- a ``lazy`` view that reads nothing
    yet, or the eager array -- so ``partition.place`` can read each device's slice only.
    A missing / misshaped key is recorded and a float32 zero array returned."""
    if name not in self._arrays:
      self.missing.append(name)
      return np.zeros(shape or (), np.float32)
    self._taken.add(name)
    value = self._arrays[name]
    if hasattr(value, "detach"):   # torch tensors (pytorch_model.bin): numpy once
      value = to_numpy(value)
    if shape is not None and tuple(value.shape) != tuple(shape):
      self.misshaped.append((name, tuple(value.shape), tuple(shape)))
      return np.zeros(shape, np.float32)
    return value

  def unused(self) -> list[str]:
    return [k for k in self._arrays if k not in self._taken
            and not any(r.fullmatch(k) for r in self._ignore)]

  def finish(self, what: str = "checkpoint") -> None:
    unexpected = self.unused()
    if self.missing or unexpected or self.misshaped:
      raise ConversionError(self.missing, unexpected, self.misshaped, what)


def to_numpy(x: Any) -> np.ndarray:
  """float32 numpy from numpy / jax / torch tensors (bf16 and fp16 upcast)."""
  if hasattr(x, "detach"):  # torch.Tensor: numpy() cannot take bf16, go through float32
    x = x.detach().float().cpu().numpy()
  return np.asarray(x, dtype=np.float32)


def check_params(params: Any, expected: Any, what: str = "converted parameters") -> None:
  """Raises :class:`ConversionError` unless ``params`` has exactly ``expected``'s leaves.

  ``expected`` is usually ``jax.eval_shape(module.init, ...)['params']``: this guards the
  converter itself (a parameter the module declares but convert forgot, or the reverse).
  """
  got = {jax.tree_util.keystr(p): np.shape(v)
         for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  want = {jax.tree_util.keystr(p): tuple(v.shape)
          for p, v in jax.tree_util.tree_flatten_with_path(expected)[0]}
  missing = [k for k in want if k not in got]
  unexpected = [k for k in got if k not in want]
  misshaped = [(k, got[k], want[k]) for k in want if k in got and tuple(got[k]) != want[k]]
  if missing or unexpected or misshaped:
    raise ConversionError(missing, unexpected, misshaped, what)


def lazy_state_dict(directory: str) -> Mapping[str, Any]:
  """The weights of a HF checkpoint directory as ``{name: lazy view}`` (nothing read yet).

  safetensors (``model.safetensors`` or the shards of ``model.safetensors.index.json``)
  give ``lazy.SafetensorsTensor`` views that read by slices (``np.asarray`` reads one
  whole; no pickle is ever executed); a ``pytorch_model.bin`` is read eagerly with
  torch (``weights_only=True``).
  """
  from platonic_jax.encoders import lazy
  files = lazy.safetensors_files(directory)
  if files is not None:
    return lazy.open_safetensors(files)
  return read_state_dict(directory)


def read_state_dict(directory: str) -> dict[str, np.ndarray]:
  """Reads the weights of a HF checkpoint directory as ``{name: float32 np.ndarray}``.

  Looks for ``model.safetensors``, then a sharded ``model.safetensors.index.json``,
  then ``pytorch_model.bin`` (needs torch; loaded with ``weights_only=True``).
  """
  from platonic_jax.encoders import lazy
  files = lazy.safetensors_files(directory)
  if files is not None:
    return {k: to_numpy(v) for k, v in lazy.open_safetensors(files).items()}
  binary = os.path.join(directory, "pytorch_model.bin")
  if os.path.exists(binary):
    try:
      import torch
    except ImportError as e:
      raise ValueError(f"{directory} holds only pytorch_model.bin, which needs torch to read; "
                       "install torch or convert it to model.safetensors") from e
    sd = torch.load(binary, map_location="cpu", weights_only=True)
    return {k: to_numpy(v) for k, v in sd.items()}
  raise ValueError(f"no weights in {directory}: expected model.safetensors, "
                   "model.safetensors.index.json or pytorch_model.bin")
