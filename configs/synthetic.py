"""python run.py --config=configs/synthetic.py --workdir=runs/synthetic

The offline default: no download, no encoder. Two modalities ("image", "text") and a
stronger "reference" view are drawn from the synthetic platonic world
(`platonic_jax.data.synthetic`): each observes the same latent events z plus private
nuisance factors of its own. Linear adapters are trained contrastively on the two
modalities, then kernel alignment to the reference is measured before and after.

`get_config("tiny")` is a seconds-long variant for tests.
"""

import ml_collections


def get_config(arg=None):
  tiny = arg == "tiny"
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "synthetic"
  c.data.synthetic = ml_collections.ConfigDict(dict(
      preset="",                 # "" or "seed003" (two 2-D clusters, 2000 samples)
      num_train=512 if tiny else 20_000,
      num_test=256 if tiny else 2_000,
      num_classes=10,
      latent_dim=16,
      nuisance_dim=16,
      dims=ml_collections.ConfigDict(dict(image=64 if tiny else 512,
                                          text=48 if tiny else 768,
                                          reference=64 if tiny else 768)),
      map="mlp",                 # "linear" (seed 003) or "mlp" (random nonlinear)
      noise=0.1,                 # std of additive noise, relative to the signal's RMS
      reference_noise=0.02,      # the same for the reference view (sees z more faithfully)
      class_sep=1.0,             # std of the class means, in units of the within-class std of z
      nuisance_scale=1.5,        # std of each modality's private nuisance factors
      mlp_hidden=256,            # hidden width of the random MLP maps
  ))

  # One entry per modality. `encoder` is a hub id / local dir; "" means the features come
  # straight from the data (the synthetic world).
  c.modalities = ml_collections.ConfigDict(dict(
      image=ml_collections.ConfigDict(dict(encoder="", layer=-1, pool="")),
      text=ml_collections.ConfigDict(dict(encoder="", layer=-1, pool="")),
  ))
  c.reference = ml_collections.ConfigDict(dict(name="reference", encoder="",
                                               modality="image", layer=-1, pool=""))
  c.encoders = ml_collections.ConfigDict(dict(dtype="float32", batch_size=64,
                                              text_max_length=64))

  c.adapter = ml_collections.ConfigDict(dict(
      kind="linear",             # "linear" (seed 000) or "mlp"
      dim=32 if tiny else 128,   # d_e
      bias=False,
      mlp_hidden=256,
      dropout=0.0,               # MLP head only
  ))
  c.loss = ml_collections.ConfigDict(dict(
      name="clip",               # "clip" (symmetric InfoNCE), "clip_one_way" (seed 000), "siglip"
      tau=0.07,
      learn_tau=False,
      tau_min=0.01,
      pairs="all",               # "all" pairs of modalities, or "anchor" (ImageBind style)
      anchor="image",
      siglip_bias=-10.0,         # SigLIP logit bias (init when learn_tau)
  ))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=40 if tiny else 1_000,
      batch_size=64 if tiny else 1024,   # global batch, over every device of every host
      lr=1e-3,
      warmup_steps=5 if tiny else 50,
      weight_decay=1e-4,
      grad_clip=1.0,
      ckpt_every=10 if tiny else 200,
      keep_ckpts=3,
      log_every=5 if tiny else 50,
      multihost=False,           # call jax.distributed.initialize() (TPU pods, multi-node GPU)
      coordinator_address="",    # multihost: "host:port" of process 0; "" = auto-detect
      num_processes=0,           # multihost: 0 = auto-detect
      process_id=-1,             # multihost: -1 = auto-detect
  ))
  c.eval = ml_collections.ConfigDict(dict(
      metrics=("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cka",
               "unbiased_cka", "cknna", "svcca"),
      k=10,                      # k of the kNN metrics
      ks=(5, 10, 20, 50),        # mutual_knn is also reported at these k
      q=0.95,                    # outlier clamp of metrics.prepare
      bootstrap=200 if tiny else 1000,
      retrieval_ks=(1, 5, 10),
      ci=0.95,                   # level of the bootstrap confidence interval of the verdict
      seed=0,                    # of the bootstrap resamples
      bootstrap_resample=0,      # kernel-metric intervals: full re-evaluations each; 0 = off
                                 # (k-NN metrics always get `bootstrap` query resamples)
      max_samples=0,             # evaluate on the first N test samples (0 = all)
      baselines=("procrustes", "cca", "perfect_alignment"),   # maps.* on the same features
      baseline_dim=0,            # shared dim of the baselines; 0 = adapter.dim (capped by ranks)
      feature_chunk_size=4096,   # rows per resumable chunk of the feature cache
  ))
  c.lock()
  return c
