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
