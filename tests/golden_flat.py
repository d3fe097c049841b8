"""Flattens ``evaluation.records.Results`` into the golden files' {path: number} form.

The golden file ``tests/golden/synthetic_tiny.json`` was written from the report of the
pipeline *before* the evaluators were rebuilt (same config, 8 fake devices): the
rebuilt pipeline must give the same numbers for the same config.
"""

import dataclasses


def flatten(res) -> dict:
  flat = {}

  def put(path, v):
    flat["|".join(map(str, path))] = v

  for r in res.before.rows:
    for m, v in r.to_ref.items():
      put(("before", r.spec.label, "to_ref", m), v)
    put(("before", r.spec.label, "avg"), r.avg)
    for c in r.cross:
      put(("before", r.spec.label, "cross", c.a, c.b), c.value)
  for sp in res.spaces:
    for r in sp.alignment.rows:
      for s, v in r.to_ref.items():
        put((sp.name, "alignment", r.spec.label, "to_ref", s), v)
      for c in r.cross:
        put((sp.name, "alignment", r.spec.label, "cross", c.a, c.b), c.value)
    for r in sp.verdict.rows:
      for rep, e in r.entries.items():
        iv = e.interval
        put((sp.name, "verdict", r.spec.label, rep, "delta"), e.delta)
        put((sp.name, "verdict", r.spec.label, rep, "ci_low"), iv.low if iv else None)
        put((sp.name, "verdict", r.spec.label, rep, "ci_high"), iv.high if iv else None)
        put((sp.name, "verdict", r.spec.label, rep, "num_bootstrap"),
            iv.num_bootstrap if iv else 0)
        put((sp.name, "verdict", r.spec.label, rep, "holds"), e.holds)
        put((sp.name, "verdict", r.spec.label, rep, "significant"), bool(e.significant))
    for p in sp.retrieval.protocols:
      for d in p.directions:
        base = (sp.name, "retrieval", p.name, f"{d.query}->{d.gallery}")
        for k, v in d.ranks.recall.items():
          put(base + (f"R@{k}",), v)
        for f in ("median_rank", "mean_rank", "num_queries"):
          put(base + (f,), getattr(d.ranks, f))
    if sp.transfer is not None:
      for e in sp.transfer.entries:
        for f in ("transfer_acc", "chance", "within_acc"):
          put((sp.name, "transfer", f"{e.source}->{e.target}", f), getattr(e, f))
    if sp.info is not None:
      for f, v in dataclasses.asdict(sp.info).items():
        put((sp.name, "info", f), list(v) if isinstance(v, tuple) else v)
  for h in res.history:
    for f in ("loss", "grad_norm", "lr"):
      put(("train", h.step, f), getattr(h, f))
  return flat
