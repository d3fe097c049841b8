"""The Platonic release's scoring code, the reference of the sweep's numbers.

Transcribed from ``minyoungg/platonic-rep`` (MIT, per its setup.py; commit dcd76ba):
``metrics.py`` (``AlignmentMetrics``, ``hsic_*``, ``compute_nearest_neighbors``,
``compute_knn_accuracy``, ``longest_ordinal_sequence``, ``compute_distance``,
``remove_outliers``) and ``measure_alignment.py`` (``prepare_features``,
``compute_score``, the loop of ``compute_alignment``). Edits, and only these, so that
it runs on this CPU without network:

- ``.cuda()`` / ``map_location="cuda:0"`` -> CPU;
- ``torchaudio.functional.edit_distance`` (torchaudio is not installed) -> ``_edit_distance``,
  the same Levenshtein distance (unit insert / delete / substitute);
- pymp (optional in the release) is not used: its serial loop runs;
- ``compute_alignment``'s file naming, tqdm and ``args`` are dropped; its loop is kept;
- the ``similarity`` closure of ``cknna`` is a module-level function (same code), so a
  test can evaluate the ratio without the +1e-6.

Nothing else is changed: the +1e-6 in the CKA / CKNNA denominators, ``fill_diagonal_(-1e8)``,
the randomised SVCCA, ``compute_score`` starting from 0 and passing ``topk`` only to the
``*knn*`` metrics (so its CKNNA raises TypeError: ``None < 2``) are the release's.
"""

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cross_decomposition import CCA


def _edit_distance(seq1, seq2):
  """torchaudio.functional.edit_distance: Levenshtein distance of two sequences."""
  len1, len2 = len(seq1), len(seq2)
  dold = list(range(len2 + 1))
  for i in range(1, len1 + 1):
    dnew = [i] + [0] * len2
    for j in range(1, len2 + 1):
      if seq1[i - 1] == seq2[j - 1]:
        dnew[j] = dold[j - 1]
      else:
        dnew[j] = min(dold[j - 1], dold[j], dnew[j - 1]) + 1
    dold = dnew
  return int(dold[-1])


class AlignmentMetrics:

  SUPPORTED_METRICS = ["cycle_knn", "mutual_knn", "lcs_knn", "cka", "unbiased_cka", "cknna",
                       "svcca", "edit_distance_knn"]

  @staticmethod
  def measure(metric, *args, **kwargs):
    if metric not in AlignmentMetrics.SUPPORTED_METRICS:
      raise ValueError(f"Unrecognized metric: {metric}")
    return getattr(AlignmentMetrics, metric)(*args, **kwargs)

  @staticmethod
  def cycle_knn(feats_A, feats_B, topk):
    knn_A = compute_nearest_neighbors(feats_A, topk)
    knn_B = compute_nearest_neighbors(feats_B, topk)
    return compute_knn_accuracy(knn_A[knn_B]).item()

  @staticmethod
  def mutual_knn(feats_A, feats_B, topk):
    knn_A = compute_nearest_neighbors(feats_A, topk)
    knn_B = compute_nearest_neighbors(feats_B, topk)
    n = knn_A.shape[0]
    topk = knn_A.shape[1]
    range_tensor = torch.arange(n, device=knn_A.device).unsqueeze(1)
    lvm_mask = torch.zeros(n, n, device=knn_A.device)
    llm_mask = torch.zeros(n, n, device=knn_A.device)
    lvm_mask[range_tensor, knn_A] = 1.0
    llm_mask[range_tensor, knn_B] = 1.0
    acc = (lvm_mask * llm_mask).sum(dim=1) / topk
    return acc.mean().item()

  @staticmethod
  def lcs_knn(feats_A, feats_B, topk):
    knn_A = compute_nearest_neighbors(feats_A, topk)
    knn_B = compute_nearest_neighbors(feats_B, topk)
    score = longest_ordinal_sequence(knn_A, knn_B).float().mean()
    return score

  @staticmethod
  def cka(feats_A, feats_B, kernel_metric='ip', rbf_sigma=1.0, unbiased=False):
    if kernel_metric == 'ip':
      K = torch.mm(feats_A, feats_A.T)
      L = torch.mm(feats_B, feats_B.T)
    elif kernel_metric == 'rbf':
      K = torch.exp(-torch.cdist(feats_A, feats_A) ** 2 / (2 * rbf_sigma ** 2))
      L = torch.exp(-torch.cdist(feats_B, feats_B) ** 2 / (2 * rbf_sigma ** 2))
    else:
      raise ValueError(f"Invalid kernel metric {kernel_metric}")
    hsic_fn = hsic_unbiased if unbiased else hsic_biased
    hsic_kk = hsic_fn(K, K)
    hsic_ll = hsic_fn(L, L)
    hsic_kl = hsic_fn(K, L)
    cka_value = hsic_kl / (torch.sqrt(hsic_kk * hsic_ll) + 1e-6)
    return cka_value.item()

  @staticmethod
  def unbiased_cka(*args, **kwargs):
    kwargs['unbiased'] = True
    return AlignmentMetrics.cka(*args, **kwargs)

  @staticmethod
  def svcca(feats_A, feats_B, cca_dim=10):
    def preprocess_activations(act):
      act = act - torch.mean(act, axis=0)
      act = act / (torch.std(act, axis=0) + 1e-8)
      return act
    feats_A = preprocess_activations(feats_A)
    feats_B = preprocess_activations(feats_B)
    U1, _, _ = torch.svd_lowrank(feats_A, q=cca_dim)
    U2, _, _ = torch.svd_lowrank(feats_B, q=cca_dim)
    U1 = U1.cpu().detach().numpy()
    U2 = U2.cpu().detach().numpy()
    cca = CCA(n_components=cca_dim)
    cca.fit(U1, U2)
    U1_c, U2_c = cca.transform(U1, U2)
    U1_c += 1e-10 * np.random.randn(*U1_c.shape)
    U2_c += 1e-10 * np.random.randn(*U2_c.shape)
    svcca_similarity = np.mean(
        [np.corrcoef(U1_c[:, i], U2_c[:, i])[0, 1] for i in range(cca_dim)])
    return svcca_similarity

  @staticmethod
  def edit_distance_knn(feats_A, feats_B, topk):
    knn_A = compute_nearest_neighbors(feats_A, topk)
    knn_B = compute_nearest_neighbors(feats_B, topk)
    n = knn_A.shape[0]
    topk = knn_A.shape[1]
    edit_distance = compute_distance(knn_A, knn_B, _edit_distance)
    return 1 - torch.mean(edit_distance) / topk

  @staticmethod
  def cknna(feats_A, feats_B, topk=None, distance_agnostic=False, unbiased=True):
    n = feats_A.shape[0]
    if topk < 2:
      raise ValueError("CKNNA requires topk >= 2")
    if topk is None:
      topk = feats_A.shape[0] - 1
    K = feats_A @ feats_A.T
    L = feats_B @ feats_B.T
    sim_kl = cknna_similarity(K, L, topk, unbiased, distance_agnostic)
    sim_kk = cknna_similarity(K, K, topk, unbiased, distance_agnostic)
    sim_ll = cknna_similarity(L, L, topk, unbiased, distance_agnostic)
    return sim_kl.item() / (torch.sqrt(sim_kk * sim_ll) + 1e-6).item()


def cknna_similarity(K, L, topk, unbiased=True, distance_agnostic=False):
  """The release's ``similarity`` closure inside ``cknna``, lifted to module level (same
  code) so a test can form the ratio without the +1e-6."""
  n, device = K.shape[0], K.device
  if unbiased:
    K_hat = K.clone().fill_diagonal_(float("-inf"))
    L_hat = L.clone().fill_diagonal_(float("-inf"))
  else:
    K_hat, L_hat = K, L
  _, topk_K_indices = torch.topk(K_hat, topk, dim=1)
  _, topk_L_indices = torch.topk(L_hat, topk, dim=1)
  mask_K = torch.zeros(n, n, device=device).scatter_(1, topk_K_indices, 1)
  mask_L = torch.zeros(n, n, device=device).scatter_(1, topk_L_indices, 1)
  mask = mask_K * mask_L
  if distance_agnostic:
    sim = mask * 1.0
  else:
    if unbiased:
      sim = hsic_unbiased(mask * K, mask * L)
    else:
      sim = hsic_biased(mask * K, mask * L)
  return sim


def hsic_unbiased(K, L):
  m = K.shape[0]
  K_tilde = K.clone().fill_diagonal_(0)
  L_tilde = L.clone().fill_diagonal_(0)
  HSIC_value = (
      (torch.sum(K_tilde * L_tilde.T))
      + (torch.sum(K_tilde) * torch.sum(L_tilde) / ((m - 1) * (m - 2)))
      - (2 * torch.sum(torch.mm(K_tilde, L_tilde)) / (m - 2))
  )
  HSIC_value /= m * (m - 3)
  return HSIC_value


def hsic_biased(K, L):
  H = torch.eye(K.shape[0], dtype=K.dtype, device=K.device) - 1 / K.shape[0]
  return torch.trace(K @ H @ L @ H)


def compute_knn_accuracy(knn):
  n = knn.shape[0]
  acc = knn == torch.arange(n, device=knn.device).view(-1, 1, 1)
  acc = acc.float().view(n, -1).max(dim=1).values.mean()
  return acc


def compute_nearest_neighbors(feats, topk=1):
  assert feats.ndim == 2, f"Expected feats to be 2D, got {feats.ndim}"
  knn = (feats @ feats.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :topk]
  return knn


def longest_ordinal_sequence(X, Y):
  def lcs_length(x, y):
    m, n = len(x), len(y)
    dp = [[0] * (n + 1) for _ in range(m + 1)]
    for i in range(1, m + 1):
      for j in range(1, n + 1):
        if x[i - 1] == y[j - 1]:
          dp[i][j] = dp[i - 1][j - 1] + 1
        else:
          dp[i][j] = max(dp[i - 1][j], dp[i][j - 1])
    return dp[m][n]
  lcs = compute_distance(X, Y, lcs_length)
  return lcs


def compute_distance(X, Y, dist_fn):
  B, N = X.shape
  distances = np.zeros(B)
  X, Y = X.cpu().numpy(), Y.cpu().numpy()
  for i in range(B):
    distances[i] = dist_fn(X[i], Y[i])
  return torch.tensor(distances)


def remove_outliers(feats, q, exact=False, max_threshold=None):
  if q == 1:
    return feats
  if exact:
    q_val = feats.view(-1).abs().sort().values[int(q * feats.numel())]
  else:
    q_val = torch.quantile(feats.abs().flatten(start_dim=1), q, dim=1).mean()
  if max_threshold is not None:
    max_threshold = max(max_threshold, q_val)
  return feats.clamp(-q_val, q_val)


# ----- measure_alignment.py ----------------------------------------------------------------

def prepare_features(feats, q=0.95, exact=False):
  if isinstance(feats, torch.Tensor):
    return remove_outliers(feats.float(), q=q, exact=exact)
  elif isinstance(feats, list):
    return [remove_outliers(f.float(), q=q, exact=exact) for f in feats]
  else:
    raise ValueError(f"Unsupported input type for prepare_features: {type(feats)}")


def compute_score(x_feats, y_feats, metric="mutual_knn", topk=10, normalize=True):
  if isinstance(x_feats, torch.Tensor):
    x_feats = [x_feats[:, i, :] for i in range(x_feats.shape[1])]
  if isinstance(y_feats, torch.Tensor):
    y_feats = [y_feats[:, j, :] for j in range(y_feats.shape[1])]
  best_alignment_indices = None
  best_alignment_score = 0
  for i, x in enumerate(x_feats):
    for j, y in enumerate(y_feats):
      if normalize:
        x_aligned = F.normalize(x, p=2, dim=-1)
        y_aligned = F.normalize(y, p=2, dim=-1)
      else:
        x_aligned = x
        y_aligned = y
      kwargs = {}
      if 'knn' in metric:
        kwargs['topk'] = topk
      score = AlignmentMetrics.measure(metric, x_aligned, y_aligned, **kwargs)
      if score > best_alignment_score:
        best_alignment_score = score
        best_alignment_indices = (i, j)
  return best_alignment_score, best_alignment_indices


def load_prepared(path, precise):
  """compute_alignment's per-file step: torch.load(...)["feats"], then prepare_features
  (the whole tensor, or each layer of a list)."""
  raw = torch.load(path, map_location="cpu")["feats"]
  if isinstance(raw, torch.Tensor):
    return prepare_features(raw.float(), exact=precise)
  return [prepare_features(layer.float(), exact=precise) for layer in raw]


def compute_alignment(x_feat_paths, y_feat_paths, metric, topk, precise=True):
  """compute_alignment's loop (x = language, y = vision, as the release's README runs it):
  scores [len(x), len(y)] and indices [len(x), len(y), 2] = (vision layer, language layer)."""
  scores = np.zeros((len(x_feat_paths), len(y_feat_paths)))
  indices = np.zeros((len(x_feat_paths), len(y_feat_paths), 2))
  for i, x_fp in enumerate(x_feat_paths):
    x_feats = load_prepared(x_fp, precise)
    for j, y_fp in enumerate(y_feat_paths):
      y_feats = load_prepared(y_fp, precise)
      best_score, best_indices = compute_score(y_feats, x_feats, metric=metric, topk=topk)
      scores[i, j] = best_score
      indices[i, j] = best_indices
  return scores, indices
