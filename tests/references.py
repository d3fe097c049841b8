"""Independent float64 NumPy references of the metrics, written from the definitions in
docs/design.md (full N x N matrices and argsorts, as the Platonic release computes them,
not from the tiled code). Shared by the metrics, evaluation and calibration tests."""

import numpy as np


def ref_knn(x, k):
  s = x.astype(np.float64) @ x.T.astype(np.float64)
  np.fill_diagonal(s, -np.inf)
  return np.argsort(-s, axis=1, kind="stable")[:, :k]  # ties toward the lower index


def ref_lcs(x, y):
  dp = np.zeros((len(x) + 1, len(y) + 1), int)
  for i in range(1, len(x) + 1):
    for j in range(1, len(y) + 1):
      dp[i, j] = dp[i - 1, j - 1] + 1 if x[i - 1] == y[j - 1] else max(dp[i - 1, j], dp[i, j - 1])
  return dp[-1, -1]


def ref_lev(x, y):
  dp = np.zeros((len(x) + 1, len(y) + 1), int)
  dp[:, 0], dp[0, :] = np.arange(len(x) + 1), np.arange(len(y) + 1)
  for i in range(1, len(x) + 1):
    for j in range(1, len(y) + 1):
      dp[i, j] = min(dp[i - 1, j] + 1, dp[i, j - 1] + 1, dp[i - 1, j - 1] + (x[i - 1] != y[j - 1]))
  return dp[-1, -1]


def ref_neighbour(name, a, b, k):
  na, nb = ref_knn(a, k), ref_knn(b, k)
  n = len(a)
  if name == "mutual_knn":
    return np.mean([len(set(na[i]) & set(nb[i])) / k for i in range(n)])
  if name == "cycle_knn":
    return np.mean([i in set(na[nb[i]].ravel()) for i in range(n)])
  if name == "lcs_knn":
    return np.mean([ref_lcs(na[i], nb[i]) / k for i in range(n)])
  return 1 - np.mean([ref_lev(na[i], nb[i]) / k for i in range(n)])


def hsic_biased(K, L):
  n = len(K)
  H = np.eye(n) - 1.0 / n
  return np.trace(K @ H @ L @ H)


def hsic_unbiased(K, L):
  n = len(K)
  Kt, Lt = K.copy(), L.copy()
  np.fill_diagonal(Kt, 0)
  np.fill_diagonal(Lt, 0)
  return (np.sum(Kt * Lt.T) + Kt.sum() * Lt.sum() / ((n - 1) * (n - 2))
          - 2 * np.sum(Kt @ Lt) / (n - 2)) / (n * (n - 3))


def ref_cka(a, b, kernel="linear", sigma=1.0):
  a, b = a.astype(np.float64), b.astype(np.float64)
  if kernel == "linear":
    K, L = a @ a.T, b @ b.T
  else:
    d = lambda x: ((x[:, None] - x[None]) ** 2).sum(-1)
    K, L = np.exp(-d(a) / (2 * sigma ** 2)), np.exp(-d(b) / (2 * sigma ** 2))
  return hsic_biased(K, L) / np.sqrt(hsic_biased(K, K) * hsic_biased(L, L))


def ref_unbiased_cka(a, b):
  K, L = a.astype(np.float64) @ a.T, b.astype(np.float64) @ b.T
  return hsic_unbiased(K, L) / np.sqrt(hsic_unbiased(K, K) * hsic_unbiased(L, L))


def ref_cknna(a, b, k):
  K, L = a.astype(np.float64) @ a.T, b.astype(np.float64) @ b.T
  n = len(K)

  def mask(x):
    m = np.zeros((n, n))
    m[np.arange(n)[:, None], ref_knn(x, k)] = 1
    return m

  ma, mb = mask(a), mask(b)
  m = ma * mb
  kl = hsic_unbiased(m * K, m * L)
  return kl / np.sqrt(hsic_unbiased(ma * K, ma * K) * hsic_unbiased(mb * L, mb * L))


def ref_svcca(a, b, d):
  def top(x):
    x = x.astype(np.float64)
    x = x - x.mean(0)
    x = x / x.std(0, ddof=1)
    return np.linalg.svd(x, full_matrices=False)[0][:, :d]
  return np.linalg.svd(top(a).T @ top(b), compute_uv=False).mean()


# --------------------------------------------------------------------------------------
# The measures of issue 16, each from its library's definition in float64 NumPy / scipy /
# scikit-learn. netrep (``ahwillia/netrep``) and ReSi (``mklabunde/resi``) are not on
# PyPI: their functions are transcribed here from their source (netrep ``utils.whiten``,
# ``LinearMetric``; ReSi ``repsim/measures/{nearest_neighbor,linear_regression}.py``).


def netrep_whiten(x, alpha, eigval_tol=1e-7):
  """netrep.utils.whiten(X, alpha, preserve_variance=True)."""
  if alpha > (1 - eigval_tol):
    return x
  lam, v = np.linalg.eigh(x.T @ x)
  lam = np.maximum(lam, eigval_tol)
  d = alpha + (1 - alpha) * lam ** (-1 / 2)
  new_var = np.sum((alpha ** 2) * lam + 2 * alpha * (1 - alpha) * (lam ** 0.5)
                   + ((1 - alpha) ** 2) * np.ones_like(lam))
  d *= np.sqrt(np.sum(lam) / new_var)
  return x @ ((v * d[None, :]) @ v.T)


def netrep_linear_metric(a, b, alpha):
  """netrep.metrics.LinearMetric(alpha, center_columns=True, zero_pad=True,
  score_method="angular").fit(a, b).score(a, b): the angular distance."""
  a, b = a.astype(np.float64), b.astype(np.float64)
  d = max(a.shape[1], b.shape[1])  # zero_pad the narrower side
  a = np.pad(a, ((0, 0), (0, d - a.shape[1])))
  b = np.pad(b, ((0, 0), (0, d - b.shape[1])))
  xw = netrep_whiten(a - a.mean(0), alpha)
  yw = netrep_whiten(b - b.mean(0), alpha)
  u, _, vt = np.linalg.svd(xw.T @ yw)
  tx, ty = xw @ u, yw @ vt.T
  corr = np.dot(tx.ravel(), ty.ravel()) / (np.linalg.norm(tx) * np.linalg.norm(ty))
  return np.arccos(np.clip(corr, -1.0, 1.0))


def ref_rsa(a, b, rdm, compare, pairs=None):
  """scipy pdist RDMs (rsatoolbox's kinds: correlation, cosine, squared euclidean) and
  scipy's pearsonr / spearmanr over the pairs i < j (or the given (i, j) pairs)."""
  import scipy.spatial.distance as ssd
  import scipy.stats
  kind = {"correlation": "correlation", "cosine": "cosine", "euclidean": "sqeuclidean"}[rdm]
  a, b = a.astype(np.float64), b.astype(np.float64)
  if pairs is None:
    da, db = ssd.pdist(a, kind), ssd.pdist(b, kind)
  else:
    i, j = pairs
    f = lambda x: np.array([ssd.pdist(x[[p, q]], kind)[0] for p, q in zip(i, j)])
    da, db = f(a), f(b)
  fn = scipy.stats.pearsonr if compare == "pearson" else scipy.stats.spearmanr
  return fn(da, db)[0]


def ref_canonical_correlations(a, b):
  """cos of the principal angles between the centred column spaces (scipy)."""
  import scipy.linalg
  a, b = a.astype(np.float64), b.astype(np.float64)
  return np.sort(np.cos(scipy.linalg.subspace_angles(a - a.mean(0), b - b.mean(0))))[::-1]


def ref_pwcca(a, b):
  """Morcos et al. 2018 from the definition: canonical variates h_i of a (orthonormalised
  in sample space by QR), α_i = Σ_j |<h_i, a_j>| over a's centred neurons."""
  a, b = a.astype(np.float64), b.astype(np.float64)
  ac, bc = a - a.mean(0), b - b.mean(0)
  qa, _ = np.linalg.qr(ac)
  qb, _ = np.linalg.qr(bc)
  u, rho, _ = np.linalg.svd(qa.T @ qb, full_matrices=False)
  h, _ = np.linalg.qr(qa @ u)  # the variates, orthonormalised (a sign per column only)
  alpha = np.abs(h.T @ ac).sum(1)
  return np.sum(alpha * rho) / np.sum(alpha)


def resi_linear_reg(r, rp):
  """ReSi linear_reg(R, Rp): R predicted from Rp."""
  import scipy.linalg
  r, rp = r.astype(np.float64), rp.astype(np.float64)
  r, rp = r - r.mean(0), rp - rp.mean(0)
  base = rp @ scipy.linalg.inv(scipy.linalg.sqrtm(rp.T @ rp))
  return np.linalg.norm(base.T @ r) ** 2 / np.linalg.norm(r) ** 2


def ref_rv(a, b, adjusted=False):
  a, b = a.astype(np.float64), b.astype(np.float64)
  k, l = (a - a.mean(0)) @ (a - a.mean(0)).T, (b - b.mean(0)) @ (b - b.mean(0)).T
  if adjusted:
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
  return np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))


def resi_top_k(x, k):
  import sklearn.neighbors
  nns = sklearn.neighbors.NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x)
  return nns.kneighbors(x)[1][:, 1:]


def resi_jaccard(a, b, k):
  na, nb = resi_top_k(a, k), resi_top_k(b, k)
  return np.mean([len(set(x) & set(y)) / len(set(x) | set(y)) for x, y in zip(na, nb)])


def resi_rank_similarity(a, b, k):
  na, nb = resi_top_k(a, k), resi_top_k(b, k)
  out = []
  for ra, rb in zip(na, nb):
    joint = list(set(ra) & set(rb))
    if not joint:
      out.append(0.0)
      continue
    norm = sum(1 / m for m in range(1, len(joint) + 1))
    s = 0.0
    for j in joint:
      pa, pb = np.argwhere(ra == j)[0][0] + 1, np.argwhere(rb == j)[0][0] + 1
      s += 2 / ((1 + abs(pa - pb)) * (pa + pb))
    out.append(s / norm)
  return np.mean(out)


def resi_second_order_cosine(a, b, k):
  import scipy.spatial.distance
  import sklearn.metrics
  na, nb = resi_top_k(a, k), resi_top_k(b, k)
  da = sklearn.metrics.pairwise_distances(a.astype(np.float64), metric="cosine")
  db = sklearn.metrics.pairwise_distances(b.astype(np.float64), metric="cosine")
  union = [list(set(x) | set(y)) for x, y in zip(na, nb)]
  return np.mean([1 - scipy.spatial.distance.cosine(da[i, u], db[i, u])
                  for i, u in enumerate(union)])
