"""python run.py --config=configs/flickr.py --workdir=runs/flickr --config.data.manual_dir=/path/to/flickr30k

Seed 000's experiment: frozen ResNet-18 (images) and GPT-2 (text) aligned by linear
adapters trained with a contrastive loss on Flickr30k (each image with its longest
caption); kernel alignment to DINOv2 before vs after. `data.manual_dir` holds
`flickr30k-images/` and an annotation file (see docs/data.md: Flickr30k cannot be
downloaded automatically). Encoders download from the Hugging Face hub.

`get_config("tiny")` is the offline test variant (tiny local checkpoints, fake folder).
"""

from configs import default


def get_config(arg=None):
  if arg not in (None, "", "tiny"):
    raise ValueError(f"configs/flickr.py: unknown option {arg!r}; the only one is 'tiny'")
  tiny = arg == "tiny"
  c = default.get_config()
  c.data.name = "flickr30k"
  c.modalities.image.encoder = "microsoft/resnet-18"
  c.modalities.text.encoder = "openai-community/gpt2"
  c.reference.update(dict(name="dinov2", encoder="facebook/dinov2-base"))
  c.encoders.text_max_length = 77
  c.adapter.update(dict(dim=512, mlp_hidden=1024))
  c.train.update(dict(num_steps=5_000, warmup_steps=200, ckpt_every=500, log_every=100))
  c.eval.bootstrap_resample = 50
  c.features.chunk_size = 1024
  if tiny:
    c.train.update(dict(num_steps=20, batch_size=16, warmup_steps=2, ckpt_every=10,
                        log_every=5))
    # the fake folder's test split needs > k images
    c.eval.update(dict(k=3, ks=(2, 3), bootstrap=50, bootstrap_resample=5, calibration_K=19,
                       n_curve=(6,)))
  c.lock()
  return c
