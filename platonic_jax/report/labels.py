"""What the report names but no stored result holds: display names from the config."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Labels:
  """reference: the reference's display name; sources: {modality / "ref": what made its
  features (an encoder id, or "synthetic")}; data: the data source's name."""
  reference: str
  sources: dict[str, str]
  data: str


def fmt(x, digits: int = 3) -> str:
  """A table cell: "–" for missing / non-finite, yes/no for bools."""
  if x is None or (isinstance(x, float) and not np.isfinite(x)):
    return "–"
  if isinstance(x, (bool, np.bool_)):
    return "yes" if x else "no"
  if isinstance(x, (int, np.integer)):
    return str(int(x))
  return f"{x:.{digits}f}"


def side(name: str, ref: str) -> str:
  """A side's display name (the reference under its configured name)."""
  return ref if name == "ref" else name
