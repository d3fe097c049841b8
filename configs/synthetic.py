"""python run.py --config=configs/synthetic.py --workdir=runs/synthetic

The offline default: no download, no encoder. Two modalities ("image", "text") and a
stronger "reference" view are drawn from the synthetic platonic world
(`platonic_jax.data.synthetic`): each observes the same latent events z plus private
nuisance factors of its own. Linear adapters are trained contrastively on the two
modalities, then kernel alignment to the reference is measured before and after.

The argument after the colon is a comma-separated list of options:
- `tiny`: a seconds-long variant for tests (`--config=configs/synthetic.py:tiny`);
- `audio`: a third modality, `audio`, anchored to `image` (ImageBind style: the loss
  pairs image with each other modality), e.g. `--config=configs/synthetic.py:tiny,audio`.
"""

from configs import default

OPTIONS = ("tiny", "audio")


def get_config(arg=None):
  options = set(filter(None, (arg or "").split(",")))
  unknown = options - set(OPTIONS)
  if unknown:
    raise ValueError(f"configs/synthetic.py: unknown option(s) {sorted(unknown)}; "
                     f"choose from {OPTIONS}, comma-separated")
  tiny = "tiny" in options
  c = default.get_config()
  s = c.data.synthetic
  if tiny:
    s.num_train, s.num_test = 512, 256
    s.dims.image, s.dims.text, s.dims.reference = 64, 48, 64
    c.adapter.dim = 32
    c.train.update(dict(num_steps=40, batch_size=64, warmup_steps=5, ckpt_every=10,
                        log_every=5))
    c.eval.bootstrap = 200
    c.eval.calibration_K = 49
    c.eval.n_curve = (64, 128)
  if "audio" in options:
    s.dims.audio = 40 if tiny else 384
    c.modalities.audio = default.modality()
    c.loss.pairs = "anchor"
    c.loss.anchor = "image"
  c.lock()
  return c
