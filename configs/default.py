"""The config schema: every field of every experiment, with its default.

Not run directly: the experiment configs (``synthetic.py``, ``flickr.py``) start from
``get_config()`` here and override what differs, as flax/examples' ``configs/default.py``.
docs/configuration.md documents every field (a test checks the two agree), and
``platonic_jax.validate`` checks every value before any work starts.
"""

import ml_collections
from ml_collections import config_dict


def modality(encoder="", layer=-1, pool=""):
  """One ``modalities.<name>`` block. ``layer`` takes an int or "auto" (chosen by mutual
  k-NN, docs/training.md), hence a field of any type (``--config...layer=auto`` or ``=5``)."""
  return ml_collections.ConfigDict(dict(
      encoder=encoder, layer=config_dict.FieldReference(layer, field_type=object),
      pool=pool))


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0                     # synthetic world, adapter init, data order, dropout

  c.data = ml_collections.ConfigDict(dict(
      name="synthetic",          # "synthetic", "flickr30k", "image_text_folder"
      manual_dir="",             # flickr30k / image_text_folder: images + annotation file
      data_dir="",               # TFDS data dir; "" = <workdir>/tfds
      caption_policy="longest",  # "longest" (seed 000), "first", "random", "all"
      skip_bad=False,            # skip missing / corrupt images instead of failing
      num_workers=2,             # grain decode processes during feature extraction
      synthetic=ml_collections.ConfigDict(dict(
          preset="",             # "" or "seed003" (two 2-D clusters, 2000 samples)
          num_train=20_000,
          num_test=2_000,
          num_classes=10,
          latent_dim=16,
          nuisance_dim=16,
          # one width per view; every key but "reference" is an observed modality
          dims=ml_collections.ConfigDict(dict(image=512, text=768, reference=768)),
          map="mlp",             # "linear" (seed 003) or "mlp" (random nonlinear)
          noise=0.1,             # std of additive noise, relative to the signal's RMS
          reference_noise=0.02,  # the same for the reference view
          class_sep=1.0,         # std of the class means / within-class std of z
          nuisance_scale=1.5,    # std of each modality's private nuisance factors
          mlp_hidden=256,        # hidden width of the random MLP maps
          num_layers=0,          # > 0: every modality view also has this many "layers"
          aligned_layer=1,       # the layer the construction makes most aligned
      )),
  ))

  # One block per modality. `encoder`: hub id / local dir; "" = features come straight
  # from the data (the synthetic world).
  c.modalities = ml_collections.ConfigDict(dict(image=modality(), text=modality()))
  # modalities.<m>.layer = "auto": the layer with the highest mutual k-NN with the other
  # modality on a sample of training pairs (STRUCTURE's rule).
  c.layer_choice = ml_collections.ConfigDict(dict(
      samples=5000,              # training pairs sampled (seeded by `seed`)
      k_rule="rice",             # k of mutual k-NN: "rice" ceil(2 n^(1/3)), "sqrt",
                                 # "sturges" ceil(log2 n + 1), or "fixed" (= k)
      k=10,
  ))
  c.reference = ml_collections.ConfigDict(dict(name="reference", encoder="",
                                               modality="image", layer=-1, pool=""))
  # dtype "auto": bfloat16 on GPUs / TPUs (and AMX CPUs where bf16 measures faster),
  # float32 on other CPUs (encoders/auto_dtype.py);
  # the feature keys hold the resolved dtype.
  c.encoders = ml_collections.ConfigDict(dict(dtype="auto", batch_size=64,
                                              text_max_length=64))

  c.adapter = ml_collections.ConfigDict(dict(
      kind="linear",             # "linear" (seed 000), "mlp" or "glu" (SAIL)
      dim=128,                   # d_e, the shared space
      bias=False,                # linear adapter bias
      mlp_hidden=256,            # MLP / GLU head: hidden width
      dropout=0.0,               # MLP / GLU head: dropout
      identity="",               # a modality left unadapted (LiT-style); "" = none
  ))
  c.loss = ml_collections.ConfigDict(dict(
      name="clip",               # "clip" (symmetric InfoNCE), "clip_one_way", "siglip"
      tau=0.07,
      learn_tau=False,
      tau_min=0.01,
      # "all" pairs (a one-way loss queries from the modality listed first in
      # eval.pair, then by name), "anchor" (ImageBind style: loss.anchor -> each other),
      # or the directions spelt out: "image->text" or "image->text,audio->text".
      pairs="all",
      anchor="image",
      siglip_bias=-10.0,         # SigLIP logit bias (its init when learn_tau)
      positives="chosen",        # "chosen" caption, or "all_captions" of each image
      structure_weight=0.0,      # STRUCTURE regulariser λ (0 = off)
      structure_levels=1,        # its random-walk levels L
      structure_tau=0.07,        # its similarity temperature τ_s
  ))
  # Circular heads (seed 002): MLPs mapping modality to modality around a cycle.
  c.cycle = ml_collections.ConfigDict(dict(
      modalities=(),             # the cycle's order, e.g. ("audio", "image", "text"); () off
      hidden=256,                # hidden width of each head
      weight=1.0,                # cycle-consistency term
      hop_weight=1.0,            # contrastive term of each hop
  ))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=1_000,
      batch_size=1024,           # global batch, over every device of every host
      lr=1e-3,
      warmup_steps=50,
      weight_decay=1e-4,
      grad_clip=1.0,
      ckpt_every=200,            # not an input of the result: cadence only
      keep_ckpts=3,
      log_every=50,
  ))
  c.eval = ml_collections.ConfigDict(dict(
      pair=("image", "text"),    # the X, Y of the verdict; retrieval's query -> gallery
      metrics=("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cka",
               "unbiased_cka", "cknna", "svcca"),
      k=10,                      # k of the k-NN metrics
      ks=(5, 10, 20, 50),        # mutual_knn is also reported at these k
      q=0.95,                    # outlier clamp of metrics.prepare
      cca_dim=10,                # SVCCA directions, capped by each side's rank
      approx_recall=0.0,         # k-NN top-k: 0 = exact; r in (0, 1]: lax.approx_max_k (TPU)
      bootstrap=1000,            # query resamples of the k-NN metrics' verdict intervals
      bootstrap_resample=0,      # kernel-metric intervals: full re-evaluations; 0 = off
      baseline_resample=False,   # those intervals for the baselines too
      retrieval_ks=(1, 5, 10),
      ci=0.95,                   # level of the verdict's bootstrap interval
      seed=0,                    # of the bootstrap resamples
      max_samples=0,             # evaluate on the first N test samples (0 = all)
      baselines=("procrustes", "cca", "perfect_alignment"),
      baseline_dim=0,            # 0 = adapter.dim; always capped by the features' ranks
      calibration_K=200,         # permutations of each alignment number's null; 0 = off
      calibration_alpha=0.05,    # level of the null threshold tau of the calibrated scores
      n_curve=(250, 500, 1000, 2000, 5000, 10000),  # scale-curve sizes (then all rows)
      asif_k=800,                # ASIF: top-k anchors kept (capped by the anchors)
      asif_p=8.0,                # ASIF: power of the kept similarities
      gap_temperatures=(),       # modality gap vs temperature: one extra training each
  ))
  c.features = ml_collections.ConfigDict(dict(
      chunk_size=4096,           # rows per resumable chunk of an extraction in progress
  ))
  c.distributed = ml_collections.ConfigDict(dict(
      multihost=False,           # jax.distributed.initialize() (TPU pods, multi-node GPU)
      coordinator_address="",    # "host:port" of process 0; "" = auto-detect
      num_processes=0,           # 0 = auto-detect
      process_id=-1,             # -1 = auto-detect
  ))
  return c
