"""python run.py --config=configs/prh.py --workdir=runs/prh

The Platonic study's measurement (Huh et al. 2024, seed 004; its release
``minyoungg/platonic-rep``): every vision model x every language model of the release's
``val`` set on the 1024 WIT image-caption pairs of Hugging Face ``minhuh/prh``
(revision ``wit_1024``), every configured metric maximised over all layer pairs, each
max calibrated against row permutations; the matrix, tables and the paper's figures in
``<workdir>/report/``. docs/prh.md documents every field below (a test checks it).

This file is the sweep's schema (it shares no field with the adapter experiments of
``configs/default.py``); ``experiment = "prh"`` makes run.py call
``platonic_jax.prh.sweep.run``. Models and the dataset download from the hub; set
``data.path`` to a local copy and ``HF_HUB_OFFLINE=1`` to work offline.
"""

import ml_collections

METRICS = ("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cka", "unbiased_cka",
           "cknna", "svcca")


def get_config(arg=None):
  if arg not in (None, ""):
    raise ValueError(f"configs/prh.py takes no option, got {arg!r}; override fields with "
                     "--config.FIELD=VALUE")
  c = ml_collections.ConfigDict()
  c.experiment = "prh"             # which runner run.py calls (not an input)
  c.data = ml_collections.ConfigDict(dict(
      repo="minhuh/prh",           # the Hugging Face dataset
      revision="wit_1024",         # its branch (the release's --subset)
      split="train",
      path="",                     # a local copy of the repository's files; "" = the hub
      num_samples=1024,            # the first N rows
      caption_idx=0,               # which caption of each row the language models read
  ))
  c.models = ml_collections.ConfigDict(dict(
      set="val",                   # the release's set ("val", "test", "custom") or ""
      vision=(),                   # non-empty: these vision models instead of the set's
      language=(),                 # non-empty: these language models instead of the set's
  ))
  c.features = ml_collections.ConfigDict(dict(
      source="",                   # "" = extract; or a directory of the release's .pt files
      vision_dtype="float32",      # as the release (timm models in fp32)
      language_dtype="bfloat16",   # as the release on a GPU (its auto dtype: bf16)
      text_max_length=1024,        # tokens per caption (longer ones truncated, counted)
      batch_size=32,               # rows per compiled encoder step (not an input)
      chunk_size=256,              # rows per resumable chunk (not an input)
      model_parallel=0,            # devices sharing one model; 0 = the fewest that fit
  ))
  c.scores = ml_collections.ConfigDict(dict(
      metrics=METRICS,
      k=10,                        # neighbours of the k-NN metrics and CKNNA
      q=0.95,                      # outlier clamp of metrics.prepare
      exact=True,                  # exact global quantile (the release's --precise)
      cca_dim=10,                  # SVCCA directions
      calibration_K=200,           # permutations per null; 0 = no calibration
      calibration_alpha=0.05,      # level of the null threshold tau
      calibration_seed=0,          # seed of the permutations (the same for every pair)
  ))
  c.report = ml_collections.ConfigDict(dict(
      top=10,                      # strongest pairs printed (not an input)
  ))
  c.lock()
  return c
