"""python run.py --config=configs/flickr.py --workdir=runs/flickr --config.data.manual_dir=/path/to/flickr30k

Seed 000's experiment: frozen ResNet-18 (images) and GPT-2 (text) aligned by linear
adapters trained with a contrastive loss on Flickr30k (each image with its longest
caption); kernel alignment to DINOv2 before vs after. `data.manual_dir` holds
`flickr30k-images/` and an annotation file (see docs/data.md: Flickr30k cannot be
downloaded automatically). Encoders download from the Hugging Face hub.

`get_config("tiny")` is the offline test variant (tiny local checkpoints, fake folder).
"""

import ml_collections


def get_config(arg=None):
  tiny = arg == "tiny"
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name="flickr30k",
      manual_dir="",             # required: flickr30k-images/ + dataset_flickr30k.json (or .token / .csv)
      data_dir="",               # TFDS data dir; "" = <workdir>/tfds
      caption_policy="longest",  # "longest" (seed 000), "first", "random", "all"
      skip_bad=False,
      num_workers=2,
  ))

  c.modalities = ml_collections.ConfigDict(dict(
      image=ml_collections.ConfigDict(dict(encoder="microsoft/resnet-18", layer=-1, pool="")),
      text=ml_collections.ConfigDict(dict(encoder="openai-community/gpt2", layer=-1, pool="")),
  ))
  c.reference = ml_collections.ConfigDict(dict(name="dinov2", encoder="facebook/dinov2-base",
                                               modality="image", layer=-1, pool=""))
  c.encoders = ml_collections.ConfigDict(dict(dtype="float32", batch_size=64,
                                              text_max_length=77))

  c.adapter = ml_collections.ConfigDict(dict(kind="linear", dim=512, bias=False,
                                             mlp_hidden=1024, dropout=0.0))
  c.loss = ml_collections.ConfigDict(dict(name="clip", tau=0.07, learn_tau=False,
                                          tau_min=0.01, pairs="all", anchor="image",
                                          siglip_bias=-10.0))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=20 if tiny else 5_000,
      batch_size=16 if tiny else 1024,
      lr=1e-3,
      warmup_steps=2 if tiny else 200,
      weight_decay=1e-4,
      grad_clip=1.0,
      ckpt_every=10 if tiny else 500,
      keep_ckpts=3,
      log_every=5 if tiny else 100,
      multihost=False,           # call jax.distributed.initialize() (TPU pods, multi-node GPU)
      coordinator_address="",    # multihost: "host:port" of process 0; "" = auto-detect
      num_processes=0,           # multihost: 0 = auto-detect
      process_id=-1,             # multihost: -1 = auto-detect
  ))
  c.eval = ml_collections.ConfigDict(dict(
      metrics=("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cka",
               "unbiased_cka", "cknna", "svcca"),
      k=3 if tiny else 10,       # tiny: the fake folder's test split needs > k images
      ks=(2, 3) if tiny else (5, 10, 20, 50), q=0.95,
      bootstrap=50 if tiny else 1000,
      retrieval_ks=(1, 5, 10),
      ci=0.95,                   # level of the bootstrap confidence interval of the verdict
      seed=0,                    # of the bootstrap resamples
      bootstrap_resample=5 if tiny else 50,   # kernel-metric intervals: full re-evaluations
      max_samples=0,             # evaluate on the first N test samples (0 = all)
      baselines=("procrustes", "cca", "perfect_alignment"),   # maps.* on the same features
      baseline_dim=0,            # shared dim of the baselines; 0 = adapter.dim (capped by ranks)
      feature_chunk_size=1024,   # rows per resumable chunk of the feature cache
  ))
  c.lock()
  return c
