"""The sweep's figures (matplotlib, Agg), each with the raw scores beside the calibrated:

- ``heatmap``: the language x vision matrix of a metric;
- ``vs_bpb``: alignment to each vision family against language-model quality
  1 − bits-per-byte, one line per family (each point: a language model; its value the
  mean over the family's vision models), as the paper's figure 3 (left);
- ``vs_params``: the same against the language model's parameter count (log axis).

The paper's x-axis is bits per byte on OpenWebText; the release's feature files (and
these) hold it on the WIT captions themselves (docs/prh.md).
"""

from __future__ import annotations

import numpy as np

from platonic_jax.prh import models as models_lib
from platonic_jax.prh.records import Sweep

PANELS = (("score", "raw"), ("calibrated", "calibrated"))


def _plt():
  import matplotlib  # noqa: PLC0415 - only when a report is written
  matplotlib.use("Agg", force=True)
  import matplotlib.pyplot as plt  # noqa: PLC0415
  return plt


def _panels(sweep: Sweep, metric: str):
  cal = any(s.calibrated is not None for s in sweep.scores if s.metric == metric)
  return PANELS if cal else PANELS[:1]


def matrix(sweep: Sweep, metric: str, field: str) -> np.ndarray:
  """[language, vision] float64 of ``field`` ("score" | "calibrated"), NaN where None."""
  out = np.full((len(sweep.language), len(sweep.vision)), np.nan)
  for i, lm in enumerate(sweep.language):
    for j, vm in enumerate(sweep.vision):
      v = getattr(sweep.get(metric, lm.name, vm.name), field)
      out[i, j] = np.nan if v is None else v
  return out


def heatmap(sweep: Sweep, metric: str, path: str) -> None:
  plt = _plt()
  panels = _panels(sweep, metric)
  nl, nv = len(sweep.language), len(sweep.vision)
  fig, axes = plt.subplots(1, len(panels), figsize=(len(panels) * (2.5 + 0.45 * nv),
                                                    1.8 + 0.35 * nl), squeeze=False)
  for ax, (field, title) in zip(axes[0], panels):
    m = matrix(sweep, metric, field)
    im = ax.imshow(m, cmap="viridis", aspect="auto")
    ax.set_xticks(range(nv), [models_lib.display(v.name) for v in sweep.vision], rotation=70,
                  ha="right", fontsize=6)
    ax.set_yticks(range(nl), [models_lib.display(v.name) for v in sweep.language], fontsize=6)
    if nl * nv <= 400:
      for i in range(nl):
        for j in range(nv):
          if np.isfinite(m[i, j]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=5, color="w")
    ax.set_title(f"{metric} ({title})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def family_curves(sweep: Sweep, metric: str, field: str):
  """{vision family: [language model index] -> mean of ``field`` over the family}."""
  m = matrix(sweep, metric, field)
  fams: dict[str, list[int]] = {}
  for j, vm in enumerate(sweep.vision):
    fams.setdefault(vm.family, []).append(j)
  return {f: np.nanmean(m[:, cols], axis=1) if np.isfinite(m[:, cols]).any() else
          np.full(m.shape[0], np.nan) for f, cols in fams.items()}


def _against(sweep: Sweep, metric: str, path: str, x: np.ndarray, xlabel: str, log_x: bool):
  plt = _plt()
  panels = _panels(sweep, metric)
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
  order = np.argsort(x)
  for ax, (field, title) in zip(axes[0], panels):
    for fam, y in family_curves(sweep, metric, field).items():
      ok = order[np.isfinite(x[order]) & np.isfinite(y[order])]
      if ok.size:
        ax.plot(x[ok], y[ok], "o-", label=fam, ms=4)
    if log_x:
      ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric} to the vision family ({title})")
    ax.set_title(f"{metric} ({title})", fontsize=9)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def vs_bpb(sweep: Sweep, metric: str, path: str) -> None:
  x = np.array([np.nan if m.bpb is None else 1.0 - m.bpb for m in sweep.language])
  _against(sweep, metric, path, x, "language model quality: 1 - bits per byte (captions)", False)


def vs_params(sweep: Sweep, metric: str, path: str) -> None:
  x = np.array([np.nan if not m.num_params else float(m.num_params) for m in sweep.language])
  _against(sweep, metric, path, x, "language model parameters", True)
