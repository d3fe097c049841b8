"""Alignment before/after, the verdict with a bootstrap interval, retrieval, baselines.

Every function takes the cached features (``features.extract_all``: ``{name: [N, D]}``
per split) and/or embeddings (the adapted sides, ``[N, d_e]``) as NumPy arrays and
returns plain JSON-able dicts (floats, lists, bools) for ``report``.

Notation (seed 000): X, Y the frozen features of the two modalities (names from
``config.modalities``, in order: "image", "text"), ref the reference model's features
(``config.reference.name``), K_A the kernel of A. Every metric m is computed as the
Platonic release does: ``metrics.prepare`` (outlier clamp at quantile ``eval.q``), then
``metrics.score`` (rows l2-normalised: cosine kernels).

The adapted representation
--------------------------
After training, sample i has two embeddings: u_i = W_x x_i (image side) and v_i = W_y y_i
(text side), both l2-normalised by the adapters. Seed 000 defines K_repr from u alone.
We report three representations:
- "image": u_i;  "text": v_i;
- "mean": r_i = (û_i + v̂_i) / ‖û_i + v̂_i‖ with û = u/‖u‖, v̂ = v/‖v‖ — the normalised
  average of the two unit-norm sides (the point on the sphere halfway between them; it is
  what a multimodal sample "is" in the shared space when both views are present).

The verdict
-----------
For each metric and representation R: Δ = m(K_R, K_ref) − ½ (m(K_X, K_ref) + m(K_Y,
K_ref)); the hypothesis of seed 000 holds for that metric when Δ > 0, and "significant"
when the whole ``eval.ci`` bootstrap interval of Δ is above 0. The bootstrap is paired
(the same resampled test samples for all terms of Δ):
- neighbour metrics (mutual/cycle/lcs/edit kNN) are means over query samples i of a
  per-sample score; the neighbour lists are computed once on the whole test set and the
  *queries* are resampled (``eval.bootstrap`` times; a query bootstrap, as for retrieval:
  resampling the whole set with replacement would put exact duplicates into every
  neighbour list and inflate all kNN scores);
- kernel metrics (cka, unbiased_cka, cknna, svcca) are recomputed on test sets resampled
  with replacement (``eval.bootstrap_resample`` times: each resample is a full metric
  evaluation). Duplicated rows are harmless for CKA/SVCCA; for CKNNA they are each
  other's nearest neighbours in every representation, which shifts all terms of Δ alike.
The interval is the percentile interval of the resampled Δ.
"""

from __future__ import annotations

import inspect
import math
from typing import Mapping, Sequence

import numpy as np

# ---------------------------------------------------------------------------------------
# Preparing features exactly as the metrics see them.


def _prepare(a: np.ndarray, q: float) -> np.ndarray:
  """metrics.prepare (outlier clamp) then l2-normalised rows, float32 [N, D]."""
  from platonic_jax import metrics
  return _l2n(metrics.prepare(a, q=q))  # prepare returns float32 numpy


def _l2n(a: np.ndarray) -> np.ndarray:
  a = np.asarray(a, np.float32)
  if a.ndim != 2:
    raise ValueError(f"expected [N, D] features or embeddings, got shape {a.shape}")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{int((~np.isfinite(a)).any(1).sum())} sample(s) have NaN/Inf "
                     "features or embeddings; check the encoder / adapter that made them.")
  norm = np.linalg.norm(a, axis=-1, keepdims=True)
  if np.any(norm == 0):
    raise ValueError(f"{int((norm == 0).sum())} sample(s) have all-zero features; cosine "
                     "kernels are undefined for them. Drop those samples.")
  return a / norm


def mean_representation(u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """r_i = (û_i + v̂_i) / ‖û_i + v̂_i‖: the normalised average of the two unit sides.

  u, v: [N, d_e] -> [N, d_e]. Antipodal pairs (û = −v̂, sum 0) have no midpoint; they
  get û (documented, and only reachable by a degenerate adapter).
  """
  uh, vh = _l2n(u), _l2n(v)
  s = uh + vh
  norm = np.linalg.norm(s, axis=1, keepdims=True)
  return np.where(norm > 1e-6, s / np.maximum(norm, 1e-12), uh)


def metric_specs(config) -> list[tuple[str, str, dict]]:
  """(label, metric name, kwargs) for every number of an alignment table.

  Every metric of ``eval.metrics`` at ``eval.k`` (label = the name), plus mutual_knn at
  each k of ``eval.ks`` (label "mutual_knn@k"), skipping k already covered.
  """
  from platonic_jax import metrics
  ev = config.eval
  unknown = [m for m in ev.metrics if m not in metrics.METRICS]
  if unknown:
    raise ValueError(f"config.eval.metrics has unknown metric(s) {unknown}; known: "
                     f"{sorted(metrics.METRICS)}")
  specs = []
  for name in ev.metrics:
    params = inspect.signature(metrics.METRICS[name]).parameters
    specs.append((name, name, {"k": int(ev.k)} if "k" in params else {}))
  for k in ev.ks:
    if int(k) != int(ev.k) or "mutual_knn" not in ev.metrics:
      specs.append((f"mutual_knn@{int(k)}", "mutual_knn", {"k": int(k)}))
  return specs


def _check_k(specs, n: int) -> None:
  too_big = [(lab, kw["k"]) for lab, _, kw in specs if kw.get("k", 0) >= n]
  if too_big:
    raise ValueError(f"k must be smaller than the number of test samples ({n}) but "
                     f"{too_big} are not; lower config.eval.k / config.eval.ks or use more "
                     "test samples.")


def _m(a: np.ndarray, b: np.ndarray, name: str, kw: dict) -> float:
  from platonic_jax import metrics
  fn = metrics.METRICS[name]
  if name == "svcca":
    # SVCCA keeps cca_dim singular directions per side; a low-dimensional side (a 2-D
    # baseline, a small d_e) has fewer, so the subspace is capped at what exists.
    limit = min(a.shape[1], b.shape[1], a.shape[0] - 1)
    kw = {**kw, "cca_dim": min(int(kw.get("cca_dim", 10)), limit)}
  return float(fn(a, b, **kw))


# ---------------------------------------------------------------------------------------
# Stage 2 and 4: alignment tables.


def _num_test(test: Mapping[str, np.ndarray], config) -> int:
  """Test samples evaluated: the first ``eval.max_samples`` (0: all)."""
  return int(config.eval.max_samples) or test[config.reference.name].shape[0]


def _test_views(test: Mapping[str, np.ndarray], config) -> tuple[list[str], dict, np.ndarray]:
  """(modalities, {modality: prepared [n, D]}, prepared reference [n, D]) of the test
  split: ``prepare`` + l2 normalisation, ~1 s per 20k x 768 array, so the functions
  below take it precomputed (``prepared=``) when one caller needs it more than once."""
  mods = list(config.modalities)
  if len(mods) < 2:
    raise ValueError(f"need at least two modalities, config.modalities has {mods}")
  ref_name = config.reference.name
  missing = [n for n in mods + [ref_name] if n not in test]
  if missing:
    raise ValueError(f"test features lack {missing} (have {sorted(test)}); re-run the "
                     "feature stage")
  n = _num_test(test, config)
  q = float(config.eval.q)
  views = {m: _prepare(test[m][:n], q) for m in mods}
  return mods, views, _prepare(test[ref_name][:n], q)


def alignment_before(test: Mapping[str, np.ndarray], config) -> dict:
  """Stage 2: ``{label: {"<mod>_ref": m(K_mod, K_ref) for each modality, "avg": their
  mean, "<a>_<b>": m(K_a, K_b) for each modality pair}}`` on the test split."""
  mods, views, ref = _test_views(test, config)
  specs = metric_specs(config)
  _check_k(specs, ref.shape[0])
  out = {}
  for label, name, kw in specs:
    row = {f"{m}_ref": _m(views[m], ref, name, kw) for m in mods}
    row["avg"] = float(np.mean([row[f"{m}_ref"] for m in mods]))
    for i, a in enumerate(mods):
      for b in mods[i + 1:]:
        row[f"{a}_{b}"] = _m(views[a], views[b], name, kw)
    out[label] = row
  return out


def adapted_views(emb: Mapping[str, np.ndarray], mods: Sequence[str], n: int | None = None
                  ) -> dict[str, np.ndarray]:
  """The representations of the verdict: each modality's adapted side, and "mean"."""
  missing = [m for m in mods if m not in emb]
  if missing:
    raise ValueError(f"embeddings lack {missing} (have {sorted(emb)})")
  sides = {m: _l2n(np.asarray(emb[m])[:n]) for m in mods}
  if len(mods) == 2:
    mean = mean_representation(sides[mods[0]], sides[mods[1]])
  else:
    mean = _l2n(sum(sides.values()))
  return {**sides, "mean": mean}


def alignment_after(test: Mapping[str, np.ndarray], emb: Mapping[str, np.ndarray],
                    config, *, prepared: tuple | None = None) -> dict:
  """Stage 4: ``{label: {"<side>_ref": m(K_side, K_ref) for side in modalities + "mean",
  "<a>_<b>": m(W_a A, W_b B)}}``; ``emb`` holds the adapted test embeddings per modality.

  Adapted embeddings are not outlier-clamped (``prepare``): the clamp is for raw network
  features with emergent outlier dimensions; the adapters' outputs are only normalised.
  """
  mods, _, ref = _test_views(test, config) if prepared is None else prepared
  reps = adapted_views(emb, mods, ref.shape[0])
  specs = metric_specs(config)
  _check_k(specs, ref.shape[0])
  out = {}
  for label, name, kw in specs:
    row = {f"{s}_ref": _m(r, ref, name, kw) for s, r in reps.items()}
    for i, a in enumerate(mods):
      for b in mods[i + 1:]:
        row[f"{a}_{b}"] = _m(reps[a], reps[b], name, kw)
    out[label] = row
  return out


# ---------------------------------------------------------------------------------------
# Per-sample neighbour scores (the query bootstrap).


def _per_sample(name: str, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
  """[N] per-query scores whose mean is the metric: ia, ib [N, k] ordered neighbour lists."""
  from platonic_jax.metrics import knn
  return knn.per_sample(name, ia, ib)


def _neighbours(a: np.ndarray, k: int) -> np.ndarray:
  from platonic_jax import metrics
  _, idx = metrics.nearest_neighbors(a, k)
  return np.asarray(idx)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
  """The central ``level`` percentile interval of bootstrap ``samples``."""
  if not 0 < level < 1:
    raise ValueError(f"config.eval.ci={level} must be in (0, 1)")
  lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
  return float(lo), float(hi)


def bootstrap_mean_diff(per_sample: Mapping[str, np.ndarray], weights: Mapping[str, float],
                        num: int, seed: int) -> np.ndarray:
  """Query bootstrap of Σ_s w_s · mean(per_sample[s]): [num] resampled values.

  All arrays are resampled with the *same* indices (paired). Deterministic for ``seed``.
  """
  n = next(iter(per_sample.values())).shape[0]
  rng = np.random.default_rng(seed)
  combo = sum(w * np.asarray(per_sample[s], np.float64) for s, w in weights.items())
  out = np.empty(num)
  for b in range(num):  # a loop, not [num, n] indices: O(n) memory for any num
    out[b] = combo[rng.integers(0, n, n)].mean()
  return out


def verdict(test: Mapping[str, np.ndarray], emb: Mapping[str, np.ndarray], config,
            *, resample: bool = True, before: Mapping | None = None,
            after: Mapping | None = None, prepared: tuple | None = None) -> dict:
  """Seed 000's hypothesis per metric and representation, with a bootstrap interval.

  Returns ``{label: {rep: {"delta", "ci_low", "ci_high", "holds", "significant"}}}`` for
  rep in modalities + "mean" (see the module docstring). The point estimates equal the
  ``alignment_before`` / ``alignment_after`` numbers (the same metric calls).
  ``resample=False`` skips the (costly: ``eval.bootstrap_resample`` full evaluations per
  term) intervals of the kernel metrics: their entries then have ``ci_low = ci_high =
  None`` and ``significant`` False. ``before`` / ``after``: the tables of
  ``alignment_before`` / ``alignment_after`` for the same inputs, if already computed —
  the kernel metrics' point estimates are taken from them instead of recomputed.
  ``prepared``: ``_test_views(test, config)``, if already computed.
  """
  from platonic_jax import metrics
  ev = config.eval
  mods, views, ref = _test_views(test, config) if prepared is None else prepared
  reps = adapted_views(emb, mods, ref.shape[0])
  n = ref.shape[0]
  level = float(ev.ci)
  rng = np.random.default_rng(int(ev.seed))
  out = {}
  knn_cache: dict[tuple[str, int], np.ndarray] = {}

  def nb(key, arr, k):
    if (key, k) not in knn_cache:
      knn_cache[(key, k)] = _neighbours(arr, k)
    return knn_cache[(key, k)]

  specs = metric_specs(config)
  _check_k(specs, n)
  for label, name, kw in specs:
    row = {}
    if name in metrics.NEIGHBOUR_METRICS:
      k = kw["k"]
      ref_nb = nb("__ref__", ref, k)
      ps = {f"raw:{m}": _per_sample(name, nb(f"raw:{m}", views[m], k), ref_nb) for m in mods}
      for rep, r in reps.items():
        ps[rep] = _per_sample(name, nb(rep, r, k), ref_nb)
      for rep in reps:
        w = {rep: 1.0, **{f"raw:{m}": -1.0 / len(mods) for m in mods}}
        delta = float(sum(wt * ps[s].mean() for s, wt in w.items()))
        boots = bootstrap_mean_diff(ps, w, int(ev.bootstrap), int(rng.integers(2**31)))
        row[rep] = _verdict_entry(delta, boots, level)
    else:
      num = int(ev.bootstrap_resample) if resample else 0
      terms = {**{f"raw:{m}": views[m] for m in mods}, **reps}
      known = {}
      if before is not None and label in before:
        known.update({f"raw:{m}": before[label][f"{m}_ref"] for m in mods})
      if after is not None and label in after:
        known.update({rep: after[label][f"{rep}_ref"] for rep in reps})
      point = {s: known[s] if s in known else _m(a, ref, name, kw) for s, a in terms.items()}
      boots = {s: np.full(num, np.nan) for s in terms}
      for b in range(num):
        idx = rng.integers(0, n, n)
        ref_b = ref[idx]  # one gather per draw, shared by every term
        try:
          for s, a in terms.items():
            boots[s][b] = _m(a[idx], ref_b, name, kw)
        except ValueError:
          # A degenerate draw (tiny N: duplicated rows leave SVCCA rank-deficient) has no
          # value; it is dropped and num_bootstrap counts the draws that remain.
          for s in terms:
            boots[s][b] = np.nan
      base = sum(point[f"raw:{m}"] for m in mods) / len(mods)
      base_b = sum(boots[f"raw:{m}"] for m in mods) / len(mods)
      for rep in reps:
        d = boots[rep] - base_b
        row[rep] = _verdict_entry(point[rep] - base, d[np.isfinite(d)], level)
    out[label] = row
  return out


def _verdict_entry(delta: float, boots: np.ndarray, level: float) -> dict:
  lo = hi = None  # no interval computed (JSON null; the report prints "–")
  if boots.size:
    lo, hi = percentile_interval(boots, level)
  return {"delta": float(delta), "ci_low": lo, "ci_high": hi, "holds": bool(delta > 0),
          "significant": bool(boots.size > 0 and lo > 0), "num_bootstrap": int(boots.size)}


# ---------------------------------------------------------------------------------------
# Stage 5: retrieval.


def retrieval_ranks(queries: np.ndarray, gallery: np.ndarray, query_ids: np.ndarray,
                    gallery_ids: np.ndarray, *, block: int = 1024) -> np.ndarray:
  """1-based rank of the best-ranked correct gallery item for every query, [Q] int.

  queries: [Q, D], gallery: [G, D] (cosine similarity: both are l2-normalised here);
  item g is correct for query q when ``gallery_ids[g] == query_ids[q]``. Ties count
  against the query (rank = 1 + the number of *wrong* items scoring >= the best correct
  one), so a collapsed embedding cannot score well by luck of the sort order. Every
  query needs at least one correct item.
  """
  qe, ge = _l2n(queries), _l2n(gallery)
  query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
  if not np.isin(query_ids, gallery_ids).all():
    raise ValueError("some queries have no correct item in the gallery")
  ranks = np.empty(qe.shape[0], np.int64)
  for s in range(0, qe.shape[0], block):
    sim = qe[s:s + block] @ ge.T  # [B, D] x [D, G] -> [B, G]
    correct = gallery_ids[None, :] == query_ids[s:s + block, None]  # [B, G]
    best = np.where(correct, sim, -np.inf).max(1)
    ranks[s:s + block] = 1 + ((sim >= best[:, None]) & ~correct).sum(1)
  return ranks


def _summary(ranks: np.ndarray, ks: Sequence[int]) -> dict:
  out = {f"R@{int(k)}": float((ranks <= int(k)).mean()) for k in ks}
  out["median_rank"] = float(np.median(ranks))
  out["mean_rank"] = float(ranks.mean())
  out["num_queries"] = int(ranks.size)
  return out


def retrieval(image: np.ndarray, text: np.ndarray, *, ks: Sequence[int] = (1, 5, 10),
              text_image: np.ndarray | None = None) -> dict:
  """Image→text and text→image recall@K (fractions) and median / mean rank.

  image: [N, d] embeddings; text: [M, d]; text_image: [M] the image row of each text
  (default: arange(N), the 1:1 protocol with M = N). With five captions per image
  (M = 5N) this is the standard Flickr30k/COCO protocol: an image query is correct at
  rank r when its best-ranked own caption is at r; each caption query has one image.
  """
  n = image.shape[0]
  if text_image is None:
    if text.shape[0] != n:
      raise ValueError(f"1:1 retrieval needs as many texts as images: {text.shape[0]} vs "
                       f"{n}; pass text_image for several captions per image")
    text_image = np.arange(n)
  text_image = np.asarray(text_image)
  if text_image.shape != (text.shape[0],):
    raise ValueError(f"text_image must have shape ({text.shape[0]},), got {text_image.shape}")
  if text_image.min() < 0 or text_image.max() >= n:
    raise ValueError(f"text_image indexes images 0..{n - 1}, got {text_image.min()}.."
                     f"{text_image.max()}")
  img_ids = np.arange(n)
  return {"i2t": _summary(retrieval_ranks(image, text, img_ids, text_image), ks),
          "t2i": _summary(retrieval_ranks(text, image, text_image, img_ids), ks)}


# ---------------------------------------------------------------------------------------
# One shared space, evaluated in full (trained adapters and every baseline alike).


def evaluate_space(test: Mapping[str, np.ndarray], emb: Mapping[str, np.ndarray], config,
                   *, captions_emb: np.ndarray | None = None,
                   caption_image: np.ndarray | None = None,
                   train_emb: Mapping[str, np.ndarray] | None = None,
                   train_labels: np.ndarray | None = None, with_verdict: bool = True,
                   resample: bool = True, before: Mapping | None = None,
                   prepared: tuple | None = None) -> dict:
  """Stages 4-5 (+ transfer) for one shared space: alignment after, verdict, retrieval.

  test: the cached test features; emb: ``{modality: [N, d]}`` adapted test embeddings;
  captions_emb / caption_image: every caption's text-side embedding and its image row
  (the five-captions protocol; skipped when None); train_emb + train_labels: the
  adapted *train* embeddings for cross-modal transfer (a classifier fit on one modality's
  train embeddings, scored on the other's test embeddings), when the data has labels;
  before: the ``alignment_before`` table (reused for the verdict's point estimates);
  prepared: ``_test_views(test, config)``, if already computed.
  """
  from platonic_jax import maps
  mods = list(config.modalities)
  if prepared is None:
    prepared = _test_views(test, config)
  out = {"after": alignment_after(test, emb, config, prepared=prepared)}
  if with_verdict:
    out["verdict"] = verdict(test, emb, config, resample=resample, before=before,
                             after=out["after"], prepared=prepared)
  n = _num_test(test, config)
  ks = tuple(int(k) for k in config.eval.retrieval_ks)
  a, b = mods[0], mods[1]
  out["retrieval"] = {"1:1": retrieval(np.asarray(emb[a])[:n], np.asarray(emb[b])[:n], ks=ks)}
  if captions_emb is not None and caption_image is not None:
    keep = np.asarray(caption_image) < n
    out["retrieval"]["5captions"] = retrieval(
        np.asarray(emb[a])[:n], np.asarray(captions_emb)[keep], ks=ks,
        text_image=np.asarray(caption_image)[keep])
  if train_emb is not None and train_labels is not None and "labels" in test:
    labels = np.asarray(test["labels"])[:n]
    tr = {}
    for src, tgt in ((a, b), (b, a)):
      tr[f"{src}->{tgt}"] = maps.cross_modal_transfer(
          train_emb[src], train_labels, np.asarray(emb[tgt])[:n], labels,
          src_test=np.asarray(emb[src])[:n])
    out["transfer"] = tr
  return out


def _baseline_dim(config, train: Mapping[str, np.ndarray]) -> int:
  mods = list(config.modalities)
  d = int(config.eval.baseline_dim) or int(config.adapter.dim)
  n = train[mods[0]].shape[0]
  return max(1, min([d, n - 1] + [train[m].shape[1] for m in mods[:2]]))


def fit_baseline(kind: str, train: Mapping[str, np.ndarray], config) -> dict:
  """Fits a closed-form shared space on the *train* features of the first two modalities.

  Returns ``{"embed": {modality: fn([M, D_mod]) -> [M, d]}, "info": {...}}``:
  - "procrustes": each modality reduced to d dims by its own PCA, then the orthogonal
    Procrustes map with mean shift from the image PCA space onto the text PCA space
    (seed 001's map; here between modalities, as in "Escaping Plato's Cave"). Text side =
    its PCA coordinates; image side = the mapped image coordinates.
  - "cca": the top-d canonical variates of each side, each scaled by its canonical
    correlation (ridge ``1e-3`` keeps it stable when D approaches N).
  - "perfect_alignment": seed 003's left-null-space solution with d = min(dim, D_x + D_y
    − 1) on centred features; info holds its alignment error (and reconstruction error
    against the true latents "z" when the data has them).
  """
  from platonic_jax import maps
  mods = list(config.modalities)
  a, b = mods[0], mods[1]
  xa, xb = np.asarray(train[a], np.float64), np.asarray(train[b], np.float64)
  d = _baseline_dim(config, train)
  if kind == "procrustes":
    pa, pb = maps.pca(xa, d), maps.pca(xb, d)
    m = maps.procrustes(pa.apply(xa), pb.apply(xb))
    return {"embed": {a: lambda x: m.apply(pa.apply(x)), b: pb.apply},
            "info": {"dim": d, "train_residual": m.residual}}
  if kind == "cca":
    if xa.shape[0] <= max(xa.shape[1], xb.shape[1]):
      # Fewer samples than features (tiny runs): CCA has at most min(rank) directions.
      d = min(d, *(np.linalg.matrix_rank(v - v.mean(0)) for v in (xa, xb)))
    m = maps.cca(xa, xb, d, reg=1e-3)
    # Variates weighted by their canonical correlation: unweighted, the d-th (nearly
    # uncorrelated) variate would count as much as the first in every cosine.
    rho = m.correlations
    return {"embed": {a: lambda x: m.apply_x(x) * rho, b: lambda y: m.apply_y(y) * rho},
            "info": {"dim": d, "correlations": m.correlations.tolist()}}
  if kind == "perfect_alignment":
    z = train.get("z")
    if z is not None and z.shape[1] < xa.shape[1] + xb.shape[1]:
      d = int(z.shape[1])  # seed 003: the latent dimension is known
    m = maps.perfect_alignment(xa, xb, d, center=True)
    info = {"dim": d, "train_alignment_error": m.alignment_error(xa, xb),
            "singular_values": m.singular_values.tolist(),
            "norm_W1": float(np.linalg.norm(m.W1)), "norm_W2": float(np.linalg.norm(m.W2))}
    if z is not None and z.shape[1] == d:
      info["train_reconstruction_error"] = {
          a: m.reconstruction_error(xa, np.asarray(z, np.float64), side="x"),
          b: m.reconstruction_error(xb, np.asarray(z, np.float64), side="y")}
    return {"embed": {a: m.apply_x, b: m.apply_y}, "info": info, "map": m}
  raise ValueError(f"unknown baseline {kind!r}; config.eval.baselines takes "
                   "'procrustes', 'cca', 'perfect_alignment'")


def baselines(train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray], config,
              *, with_verdict: bool = True, resample: bool = False,
              before: Mapping | None = None) -> dict:
  """Stage 6: every baseline of ``config.eval.baselines``, evaluated by ``evaluate_space``
  exactly like the trained adapters (same test samples, metrics, retrieval, transfer).

  By default the kernel metrics' verdict intervals (full re-evaluations) are computed for
  the trained adapters only; ``resample=True`` computes them for every baseline too."""
  if not config.eval.baselines:
    return {}
  mods = list(config.modalities)
  out = {}
  n = _num_test(test, config)
  config2 = _two_modalities(config)
  prepared = _test_views(test, config2)  # the same prepared test features for every kind
  for kind in config.eval.baselines:
    fit = fit_baseline(kind, train, config)
    emb = {m: np.asarray(fit["embed"][m](test[m][:n]), np.float32) for m in mods[:2]}
    train_emb = {m: np.asarray(fit["embed"][m](train[m]), np.float32) for m in mods[:2]}
    caps = test.get(f"{mods[1]}@captions")
    caps_emb = None if caps is None else np.asarray(fit["embed"][mods[1]](caps), np.float32)
    res = evaluate_space(test, emb, config2, captions_emb=caps_emb,
                         caption_image=test.get("caption_image"),
                         train_emb=train_emb, train_labels=train.get("labels"),
                         with_verdict=with_verdict, resample=resample, before=before,
                         prepared=prepared)
    res["info"] = fit["info"]
    if kind == "perfect_alignment":
      m = fit["map"]
      xa, xb = (np.asarray(test[mm][:n], np.float64) for mm in mods[:2])
      res["info"]["test_alignment_error"] = m.alignment_error(xa, xb)
      if "z" in test and test["z"].shape[1] == m.W1.shape[0]:
        z = np.asarray(test["z"][:n], np.float64)
        res["info"]["test_reconstruction_error"] = {
            mods[0]: m.reconstruction_error(xa, z, side="x"),
            mods[1]: m.reconstruction_error(xb, z, side="y")}
    out[kind] = res
  return out


def _two_modalities(config):
  """``config`` restricted to its first two modalities (baselines are pairwise)."""
  mods = list(config.modalities)
  if len(mods) == 2:
    return config
  c = config.copy_and_resolve_references()
  c.unlock()
  for m in mods[2:]:
    del c.modalities[m]
  return c


def finite_or_raise(tree, where: str = "results") -> None:
  """Raises ValueError naming the first NaN/Inf number in a nested result dict."""
  def walk(x, path):
    if isinstance(x, Mapping):
      for k, v in x.items():
        walk(v, f"{path}.{k}")
    elif isinstance(x, (list, tuple)):
      for i, v in enumerate(x):
        walk(v, f"{path}[{i}]")
    elif isinstance(x, float) and not math.isfinite(x):
      raise ValueError(f"{path} is {x}")
  walk(tree, where)


# ---------------------------------------------------------------------------------------
# Stages with results cached in the workdir (a re-run skips what is done).

STAGES_DIR = "stages"


def stage_key(config, stage: str) -> str:
  """What a stage's result depends on, hashed: the features' spec and the eval block, plus
  (for "trained") the adapter, loss and train blocks and the seed."""
  from platonic_jax import features
  spec = {"features": features.feature_spec(config), "eval": features.jsonable(config.eval),
          "stage": stage}
  if stage == "trained":
    spec.update(adapter=features.jsonable(config.adapter),
                loss=features.jsonable(config.loss), train=features.jsonable(config.train),
                seed=int(config.seed))
  return features.spec_key(spec)


def cached_stage(workdir: str, name: str, key: str, fn, *, log=None) -> dict:
  """``fn()``'s result, computed once: stored in ``<workdir>/stages/<name>.json`` with
  ``key``; a stored result with another key (a different config) is recomputed."""
  import json
  import logging
  import os
  from platonic_jax import features
  path = os.path.join(workdir, STAGES_DIR, f"{name}.json")
  log = log or logging.info
  if os.path.exists(path):
    with open(path) as f:
      try:
        stored = json.load(f)
      except json.JSONDecodeError:
        stored = {}
    if stored.get("key") == key:
      log(f"stage {name}: done ({path})")
      return stored["result"]
  result = features.jsonable(fn(), nonfinite_to_none=True, sort_keys=False)
  doc = json.dumps({"key": key, "result": result}, allow_nan=False)
  features.atomic_write_bytes(path, doc.encode())
  return json.loads(doc)["result"]  # the same form as a cached result


def stage_before(config, workdir: str, feats: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
  """Stage 2, cached: ``alignment_before`` on the test split."""
  return cached_stage(workdir, "before", stage_key(config, "before"),
                      lambda: alignment_before(feats["test"], config))


def stage_trained(config, workdir: str, feats: Mapping[str, Mapping[str, np.ndarray]],
                  embed, *, before: Mapping | None = None) -> dict:
  """Stages 4-5 (+ transfer), cached: the trained adapters evaluated by ``evaluate_space``.

  embed: ``embed(modality, features [N, D]) -> [N, d_e]`` with the trained adapters, e.g.
  ``lambda m, x: result.embed(result.params, m, x)`` for a ``train.TrainResult``.
  Embeds the test split, every test caption when cached ("<text>@captions"), and the train
  split when it has labels (cross-modal transfer).
  """
  def run():
    mods = list(config.modalities)
    test, train = feats["test"], feats["train"]
    emb = {m: np.asarray(embed(m, test[m])) for m in mods}
    caps = test.get(f"{mods[1]}@captions")
    caps_emb = None if caps is None else np.asarray(embed(mods[1], caps))
    train_emb = ({m: np.asarray(embed(m, train[m])) for m in mods[:2]}
                 if "labels" in train else None)
    return evaluate_space(test, emb, config, captions_emb=caps_emb,
                          caption_image=test.get("caption_image"), train_emb=train_emb,
                          train_labels=train.get("labels"), before=before)
  return cached_stage(workdir, "trained", stage_key(config, "trained"), run)


def stage_baselines(config, workdir: str, feats: Mapping[str, Mapping[str, np.ndarray]],
                    *, before: Mapping | None = None) -> dict:
  """Stage 6, cached: ``baselines`` (empty when ``eval.baselines`` is empty)."""
  if not config.eval.baselines:
    return {}
  return cached_stage(workdir, "baselines", stage_key(config, "baselines"),
                      lambda: baselines(feats["train"], feats["test"], config,
                                        before=before))
