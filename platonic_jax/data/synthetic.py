"""The synthetic "platonic world": paired modalities that share latent events z.

    world = WorldParams.from_config(config.data.synthetic, seed=config.seed)
    make_world(world) -> dict[str, dict[str, np.ndarray]]

``WorldParams`` holds the effective settings (the preset applied). Returns
``{"train": split, "test": split}`` with, for a split of N samples::

    split["image"]      [N, dims.image]      float32  the first modality's observations
    split["text"]       [N, dims.text]       float32  the second modality's observations
    split[<other>]      [N, dims.<other>]    float32  any further modality in ``dims``
    split["reference"]  [N, dims.reference]  float32  the "stronger model" view
    split["labels"]     [N]                  int32    mixture component of each event
    split["z"]          [N, latent_dim]      float32  the latent events themselves

Deterministic for ``WorldParams`` (its ``seed`` included): the same maps, class means
and samples every call. Train and test share the world (class means, maps) and differ
only in the samples. Every key of ``dims`` but "reference" is an observed modality; a
modality beyond image and text (e.g. ``audio``, for ImageBind-style runs) is drawn after
them, so adding one leaves the image, text and reference arrays unchanged.

How the world is built (the default, ``preset=""``)
---------------------------------------------------
1. Latent events: z = mu_c + e, e ~ N(0, I_{d_z}), the class c uniform over
   ``num_classes`` and the class means mu_c ~ N(0, class_sep^2 I_{d_z}) (units: the
   within-class standard deviation of z, which is 1).
2. Private nuisance: each of image and text draws its own u ~ N(0, nuisance_scale^2
   I_{nuisance_dim}), independent of z and of the other modality's u. It stands for what
   one modality records and the other cannot see (the background of a photo, the wording
   of a caption).
3. Observation: x = f_image([z, u_image]) + noise, y = f_text([z, u_text]) + noise, where
   f is a random map of the modality's own (``map="linear"``: a Gaussian matrix;
   ``map="mlp"``: a random one-hidden-layer tanh network), and the noise is isotropic
   Gaussian with standard deviation ``noise`` times the RMS of the noiseless signal.
4. Reference: r = f_reference(z) + noise with ``reference_noise`` (smaller) — it sees z
   and no nuisance, i.e. more faithfully than either modality.

Why this construction predicts the experiment's verdict
-------------------------------------------------------
A contrastive (InfoNCE) objective on (x, y) pairs rewards the adapters W_x, W_y only
for what tells the true partner apart from the other samples of the batch. The only
thing x and y have in common is z: u_image and u_text are independent of each other, so
any adapter direction that carries nuisance adds noise to the match and is suppressed.
The trained representation is therefore (approximately) a function of z alone. Each
raw modality's kernel K_X mixes z with its nuisance (the nearest neighbours of a sample
in image space are partly decided by u_image), while the reference's kernel K_ref is
decided by z alone. Hence the expected verdict: m(K_repr, K_ref) > avg(m(K_X, K_ref),
m(K_Y, K_ref)) — the experiment's "aligned space moves toward the stronger model"
outcome is built in, with a known cause, so the pipeline can be checked end to end.
Turning ``nuisance_dim`` to 0 removes the cause, and the gap goes away. The tests check
the ingredients (the kernel of z aligns with K_ref better than K_X and K_Y do, and so does
a linear CCA of (x, y), a closed-form stand-in for the adapters) and the outcome (linear
adapters trained with InfoNCE beat the modalities by > 0.1 in mutual kNN and linear CKA;
with ``nuisance_dim=0`` they do not). Through the project's own ``train.train_adapters``
and ``evaluate.verdict``, every metric's delta is positive on the default world
(numbers in docs/data.md).

The defaults (``class_sep=1``, ``nuisance_scale=1.5``) are chosen so that every metric
family agrees: contrastive training also evens out the spectrum of z (InfoNCE spreads
the embeddings), which lowers CKA — a variance-weighted metric — when the class means
dominate z's variance (``class_sep=2``) or the nuisance is weak (``nuisance_scale=1``:
at the full size the modalities then keep a higher linear CKA with the reference than
the adapted space, while mutual kNN still favours the adapted space). Private content
slightly stronger than the shared content is also what photos vs captions look like.
Give each modality at least ``latent_dim + nuisance_dim`` output dimensions: a narrower
map cannot be inverted, z and the nuisance stay mixed, and the adapters have little to
gain (``make_world`` logs a warning). The effect also needs training: a few dozen
InfoNCE steps leave the adapters near their random initial projection.

Layers (``num_layers`` L > 0, for ``modalities.<m>.layer``, e.g. "auto")
-----------------------------------------------------------------------
Each modality view also gets L "layers", as a network's hidden states: layer L − 1 is the
view above (exactly the same array), layer l < L − 1 is f_{m,l}([z, s_l · u_m]) + noise,
a random map of its own (drawn after everything else, so no other array changes) of the
same z and the same private nuisance u_m, scaled by

    s_l = 2^(|l − a| − |L − 1 − a|),   a = ``aligned_layer``.

The nuisance is smallest at layer a and doubles with every layer away from it, so the
construction makes layer a of every modality the most aligned with the other modalities
(fewest private factors deciding its neighbourhoods): what ``layer="auto"`` must find.
``split["<m>@<l>"]`` holds layer l (l < L − 1).

The seed 003 preset (``preset="seed003"``)
------------------------------------------
Seed 003's synthetic experiment: a mixture of two 2-D Gaussian clusters with identity
covariances, 2000 samples, each modality a projection of z by a matrix with entries
uniform in [-5, 5] (x = A z, y = B z: no nuisance, no noise). The paper does not print
its cluster means; we use mu = (-2.5, -2.5) and (+2.5, +2.5). The preset sets
``num_classes=2, latent_dim=2, nuisance_dim=0, map="linear"``, modality noise 0, the
training split to 2000 samples (the test split keeps ``num_test``), and makes the
reference z itself (plus ``reference_noise``; so ``reference`` is [N, 2]): there, the perfect-alignment SVD of
``maps.perfect_alignment`` recovers a space in which both projections coincide.
Output dimensions are still ``dims.image`` / ``dims.text`` (seed 003 only needs them
larger than 2).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import logging

from platonic_jax import typed_json


PRESETS = ("", "seed003")
MAPS = ("linear", "mlp")
REFERENCE = "reference"  # the key of the reference view in ``dims`` and in each split
_SEED003_MEANS = np.array([[-2.5, -2.5], [2.5, 2.5]])


def config_problems(cfg) -> list[str]:
  """Every unusable value of ``config.data.synthetic``, one line each (empty if none)."""
  out = []
  if cfg.preset not in PRESETS:
    out.append(f"data.synthetic.preset={cfg.preset!r}: allowed {PRESETS}")
  if cfg.map not in MAPS:
    out.append(f"data.synthetic.map={cfg.map!r}: allowed {MAPS}")
  for name in ("num_train", "num_test", "num_classes", "latent_dim", "mlp_hidden"):
    if int(cfg[name]) < 1:
      out.append(f"data.synthetic.{name}={cfg[name]}: must be >= 1")
  if int(cfg.nuisance_dim) < 0:
    out.append(f"data.synthetic.nuisance_dim={cfg.nuisance_dim}: must be >= 0")
  for name in ("noise", "reference_noise", "class_sep", "nuisance_scale"):
    if not float(cfg[name]) >= 0:
      out.append(f"data.synthetic.{name}={cfg[name]}: must be >= 0")
  if REFERENCE not in cfg.dims:
    out.append(f"data.synthetic.dims has no {REFERENCE!r} width")
  for name in cfg.dims:
    if int(cfg.dims[name]) < 1:
      out.append(f"data.synthetic.dims.{name}={cfg.dims[name]}: must be >= 1")
  if int(cfg.num_layers) < 0:
    out.append(f"data.synthetic.num_layers={cfg.num_layers}: must be >= 0 (0: no layers)")
  elif int(cfg.num_layers) and not 0 <= int(cfg.aligned_layer) < int(cfg.num_layers):
    out.append(f"data.synthetic.aligned_layer={cfg.aligned_layer}: must be in [0, "
               f"num_layers={cfg.num_layers})")
  return out


def modalities(dims) -> tuple[str, ...]:
  """The observed modalities of a ``dims`` block in drawing order: image, text, then the
  others by name (the order keeps the two-modality world unchanged when one is added)."""
  names = [n for n in dims if n != REFERENCE]
  first = [n for n in ("image", "text") if n in names]
  return tuple(first + sorted(n for n in names if n not in first))


@dataclasses.dataclass(frozen=True)
class WorldParams:
  """The effective settings of a synthetic world (the preset applied); see the module
  docstring. ``dims``: (view, width) for each modality in drawing order, then
  ("reference", width). Fields a preset fixes are not read from the config."""
  TAGGED = True
  seed: int
  preset: str
  num_train: int
  num_test: int
  num_classes: int
  latent_dim: int
  nuisance_dim: int
  map: str
  noise: float
  reference_noise: float
  class_sep: float | None      # None: seed003's fixed means
  nuisance_scale: float | None  # None: no nuisance (nuisance_dim = 0)
  hidden: int | None            # None: a linear map
  dims: tuple[tuple[str, int], ...]
  # Layered views (None / 0: none); left out of the key when off, so adding the option
  # changed no stored world.
  num_layers: int = dataclasses.field(default=0, metadata=typed_json.OPTIONAL)
  aligned_layer: int | None = dataclasses.field(default=None, metadata=typed_json.OPTIONAL)

  @classmethod
  def from_config(cls, cfg, *, seed: int) -> "WorldParams":
    """From ``config.data.synthetic`` and ``config.seed``; reads only the fields that
    take effect (so a stored world's key never depends on an overridden field)."""
    seed003 = cfg.preset == "seed003"
    mods = modalities(cfg.dims)
    dims = tuple((m, int(cfg.dims[m])) for m in mods)
    if seed003:
      layers = int(cfg.num_layers)
      return cls(num_layers=layers, aligned_layer=int(cfg.aligned_layer) if layers else None,
                 seed=int(seed), preset=cfg.preset, num_train=2000, num_test=int(cfg.num_test),
                 num_classes=2, latent_dim=2, nuisance_dim=0, map="linear", noise=0.0,
                 reference_noise=float(cfg.reference_noise), class_sep=None,
                 nuisance_scale=None, hidden=None, dims=dims + ((REFERENCE, 2),))
    nuisance_dim = int(cfg.nuisance_dim)
    kind = str(cfg.map)
    layers = int(cfg.num_layers)
    return cls(num_layers=layers, aligned_layer=int(cfg.aligned_layer) if layers else None,
               seed=int(seed), preset=cfg.preset, num_train=int(cfg.num_train),
               num_test=int(cfg.num_test), num_classes=int(cfg.num_classes),
               latent_dim=int(cfg.latent_dim), nuisance_dim=nuisance_dim, map=kind,
               noise=float(cfg.noise), reference_noise=float(cfg.reference_noise),
               class_sep=float(cfg.class_sep),
               nuisance_scale=float(cfg.nuisance_scale) if nuisance_dim else None,
               hidden=int(cfg.mlp_hidden) if kind == "mlp" else None,
               dims=dims + ((REFERENCE, int(cfg.dims[REFERENCE])),))

  @property
  def modalities(self) -> tuple[str, ...]:
    return tuple(n for n, _ in self.dims if n != REFERENCE)

  def size(self, split: str) -> int:
    return self.num_train if split == "train" else self.num_test


def _random_map(rng: np.random.Generator, d_in: int, d_out: int, kind: str,
                hidden: int, uniform_scale: float | None = None):
  """A random map R^d_in -> R^d_out as a function on [N, d_in] arrays.

  ``linear``: x W with W ~ N(0, 1/d_in) (or U[-s, s] when ``uniform_scale`` is given, as
  seed 003). ``mlp``: tanh(x W1 + b1) W2 with W1 ~ N(0, gain^2/d_in); the gain keeps
  pre-activations mostly inside tanh's curved range (nonlinear but not saturated, so z
  stays recoverable from the output).
  """
  if kind == "linear":
    if uniform_scale is not None:
      w = rng.uniform(-uniform_scale, uniform_scale, size=(d_in, d_out))
    else:
      w = rng.normal(size=(d_in, d_out)) / np.sqrt(d_in)
    return lambda x: x @ w  # [N, d_in] x [d_in, d_out] -> [N, d_out]
  gain = 0.5  # inputs have per-coordinate std ~1-3, so pre-activations have std ~1
  w1 = rng.normal(size=(d_in, hidden)) * gain / np.sqrt(d_in)
  b1 = rng.normal(size=(hidden,)) * 0.1
  w2 = rng.normal(size=(hidden, d_out)) / np.sqrt(hidden)
  # [N, d_in] x [d_in, H] -> [N, H];  [N, H] x [H, d_out] -> [N, d_out]
  return lambda x: np.tanh(x @ w1 + b1) @ w2


def _add_noise(rng: np.random.Generator, s: np.ndarray, rel: float) -> np.ndarray:
  """s + N(0, (rel * RMS(s))^2): noise relative to the signal's scale."""
  if rel == 0:
    return s
  rms = np.sqrt(np.mean(s * s))
  return s + rng.normal(size=s.shape) * rel * rms


def make_world(world: WorldParams) -> dict[str, dict[str, np.ndarray]]:
  """Draws the synthetic world ``world``: ``{"train": {...}, "test": {...}}``.

  See the module docstring for the construction, shapes and the seed 003 preset.
  """
  dims = dict(world.dims)
  mods = world.modalities
  d_z, d_n, c = world.latent_dim, world.nuisance_dim, world.num_classes
  narrow = [m for m in mods if dims[m] < d_z + d_n]
  if narrow and d_n:
    logging.warning("synthetic world: dims of %s < latent_dim + nuisance_dim = %d: the maps "
                    "lose information, z and the private nuisance cannot be separated, and "
                    "the experiment's expected gain shrinks", narrow, d_z + d_n)
  seed003 = world.preset == "seed003"
  uniform = 5.0 if seed003 else None
  scale = world.nuisance_scale or 0.0
  # Independent streams: the world (means, maps) must not change when the sample counts
  # change, and train/test samples must not overlap in their random draws.
  world_ss, train_ss, test_ss = np.random.SeedSequence([world.seed, 3]).spawn(3)
  wr = np.random.default_rng(world_ss)
  means = _SEED003_MEANS if seed003 else wr.normal(size=(c, d_z)) * world.class_sep
  # Image and text first, then the reference, then further modalities: the order of the
  # draws from ``wr`` that the two-modality world has always had.
  first, extra = [m for m in mods if m in ("image", "text")], [
      m for m in mods if m not in ("image", "text")]
  new_map = lambda m: _random_map(wr, d_z + d_n, dims[m], world.map, world.hidden, uniform)
  maps = {m: new_map(m) for m in first}
  ref_map = (lambda z: z) if seed003 else _random_map(
      wr, d_z, dims[REFERENCE], world.map, world.hidden)
  maps.update({m: new_map(m) for m in extra})

  nuisance = {}  # (split, modality) -> u, for the layered views

  def observe(r, m, z, n, key):
    u = r.normal(size=(n, d_n)) * scale
    nuisance[key, m] = u
    return _add_noise(r, maps[m](np.concatenate([z, u], axis=1)),
                      world.noise).astype(np.float32)

  def draw(ss, n, key):
    r = np.random.default_rng(ss)
    labels = r.integers(0, c, size=n)
    z = means[labels] + r.normal(size=(n, d_z))
    out = {"labels": labels.astype(np.int32), "z": z.astype(np.float32)}
    for m in first:
      out[m] = observe(r, m, z, n, key)
    out[REFERENCE] = _add_noise(r, ref_map(z), world.reference_noise).astype(np.float32)
    for m in extra:
      out[m] = observe(r, m, z, n, key)
    return out

  out = {"train": draw(train_ss, world.num_train, "train"),
         "test": draw(test_ss, world.num_test, "test")}
  if world.num_layers > 1:
    _add_layers(world, out, nuisance)
  return out


def layer_scale(layer: int, num_layers: int, aligned: int) -> float:
  """s_l: the nuisance scale of layer l relative to the last layer's (module docstring)."""
  return 2.0 ** (abs(layer - aligned) - abs(num_layers - 1 - aligned))


def _add_layers(world: WorldParams, out: dict, nuisance: dict) -> None:
  """Adds ``"<m>@<l>"`` for l < L − 1 to both splits (own random streams: nothing else
  changes)."""
  dims = dict(world.dims)
  L, d_z, d_n = world.num_layers, world.latent_dim, world.nuisance_dim
  mr = np.random.default_rng(np.random.SeedSequence([world.seed, 4]))
  maps = {(m, l): _random_map(mr, d_z + d_n, dims[m], world.map, world.hidden,
                              5.0 if world.preset == "seed003" else None)
          for m in world.modalities for l in range(L - 1)}
  for i, split in enumerate(("train", "test")):
    r = np.random.default_rng(np.random.SeedSequence([world.seed, 5, i]))
    z = out[split]["z"].astype(np.float64)
    for m in world.modalities:
      u = nuisance[split, m]
      for l in range(L - 1):
        s = layer_scale(l, L, world.aligned_layer)
        x = maps[m, l](np.concatenate([z, s * u], axis=1))
        out[split][f"{m}@{l}"] = _add_noise(r, x, world.noise).astype(np.float32)


def view_name(modality: str, layer, num_layers: int) -> str:
  """The split key of ``modality`` at ``layer`` (an int, negative from the end)."""
  if not num_layers:
    return modality
  l = int(layer) % num_layers
  return modality if l == num_layers - 1 else f"{modality}@{l}"
