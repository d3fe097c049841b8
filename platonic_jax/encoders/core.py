"""``encoders.load`` and the :class:`Encoder` that turns raw images / strings into features.

    enc = encoders.load("microsoft/resnet-18" | "/local/hf/dir", dtype="float32")
    feats = enc.encode(images, batch_size=64)            # np [N, D]
    per_layer = enc.encode(images, layers="all")         # np [L, N, D] (or list, see encode)
    for chunk in enc.encode_iter(stream, batch_size=64): ...   # streaming form

Every batch has the same number of rows (the last one is padded with blank rows that are
dropped from the output; text is padded to its longest caption rounded up to a multiple
of 16 tokens, at most ``max_length``, and masked), so each (batch size, layers, pool)
compiles once per token bucket. The batch axis is split over the ``data`` axis of a
``("data", "model")`` mesh. With ``model_parallel=1`` (the default) parameters are
replicated and each device runs its rows with ``jax.shard_map``: no cross-device
communication, so 8 devices give the same numbers as 1. With ``model_parallel=N``
parameters are sharded over ``model`` by the architecture's ``PARTITION_RULES``
(``encoders/partition.py``) and the forward is one GSPMD program under ``jax.jit``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from platonic_jax import prefetch, sharding
from platonic_jax.encoders import attention as attention_lib
from platonic_jax.encoders import auto_dtype
from platonic_jax.encoders import convert as convert_lib
from platonic_jax.encoders import common, cpu_tuning, lm_scores, partition, preprocess, registry

log = logging.getLogger(__name__)

_TEXT_BUCKET = 16  # token-length granularity of compiled text shapes
PROGRESS_EVERY_S = 30.0  # encode / encode_iter log their progress at INFO this often
# Batches decoded, preprocessed and put on the devices ahead of the one computing: host
# work overlaps device work (two cover a host batch slower than one device step).
PREFETCH = 2
_DTYPES = {"float32": jnp.float32, "fp32": jnp.float32, "bfloat16": jnp.bfloat16,
           "bf16": jnp.bfloat16}
# What a hub download fetches: configs, processor / tokenizer files (sentencepiece
# tokenizer.model for Llama / Gemma), safetensors weights (one file or index.json shards).
_HUB_PATTERNS = ["*.json", "*.txt", "tokenizer.model", "model.safetensors",
                 "model-*.safetensors"]


def _looks_like_a_path(name: str) -> bool:
  """A hub id is "name" or "owner/name"; anything else with a separator is a path."""
  return (name.startswith(("/", "./", "../", "~")) or name.endswith("/")
          or name.count("/") > 1 or os.sep != "/" and os.sep in name)


def resolve(name_or_dir: str) -> str:
  """A local directory for a hub id or a directory (huggingface_hub cache; honours
  ``HF_HUB_OFFLINE``). Falls back to ``pytorch_model.bin`` when the repo has no safetensors."""
  if os.path.isdir(name_or_dir):
    return name_or_dir
  if _looks_like_a_path(name_or_dir):
    raise ValueError(f"encoder {name_or_dir!r}: no such directory. Pass an existing "
                     "checkpoint directory (config.json + model.safetensors) or a hub id "
                     "such as 'microsoft/resnet-18'.")
  from huggingface_hub import snapshot_download  # local: only hub loads need it
  try:
    path = snapshot_download(name_or_dir, allow_patterns=_HUB_PATTERNS)
    if not any(f.endswith(".safetensors") for f in os.listdir(path)):
      path = snapshot_download(name_or_dir, allow_patterns=_HUB_PATTERNS + ["pytorch_model.bin"])
  except Exception as e:  # noqa: BLE001 -- many hub error types; all mean "cannot get it"
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    hint = (" HF_HUB_OFFLINE is set and the model is not in the local cache;" if offline
            else "")
    raise ValueError(f"cannot load encoder {name_or_dir!r}: not a local directory and the hub "
                     f"download failed ({type(e).__name__}: {e}).{hint} Fix: pass a directory "
                     "with config.json + model.safetensors, or download the model first.") from e
  return path


def micro_batch(batch: int, target: int) -> int:
  """The micro-batch for a per-device batch and an architecture's CPU_MICRO_BATCH: the
  largest divisor of ``batch`` not above ``target``, or 0 (run the batch whole) when
  there is no target, the batch is no larger, or the divisor would be under half the
  target (tiny micro-batches lose more to per-call overhead than caches give back)."""
  if target <= 0 or batch <= target:
    return 0
  micro = common.largest_divisor(batch, target)
  return micro if 2 * micro >= target else 0


def _cast_kernels(params: Any, dtype) -> Any:
  """Matmul / conv weights (leaves named ``*kernel``) to ``dtype``; the rest stays float32."""
  def cast(path, x):
    name = getattr(path[-1], "key", "")
    return jnp.asarray(x, dtype if str(name).endswith("kernel") else jnp.float32)
  return jax.tree_util.tree_map_with_path(cast, params)


def _no_layers(layers) -> bool:
  """``layers=()``: no features, only scores (``bits_per_byte``)."""
  return isinstance(layers, (tuple, list)) and len(layers) == 0


def _single_layer(layers) -> bool:
  """Whether ``layers`` asks for one layer's [N, D] (None or an int), not a stack / list."""
  return layers is None or isinstance(layers, (int, np.integer))


class Encoder:
  """A frozen encoder: raw items in, pooled per-layer features (numpy float32) out.

  Attributes:
    name: what ``load`` was given. modality: "image" | "text". dtype: compute dtype.
    dims: width of each feature layer (layer 0 = embedding / stem; the ViT family has
      one layer per block, no embedding layer). dim: ``dims[-1]``.
    num_layers: ``len(dims)`` (HF ``hidden_states`` count: blocks + 1; ViT family: blocks).
    pools: selectable pools, ``pools[0]`` the default.
    max_length: text only, tokens per caption (longer ones are truncated and counted in
      ``num_truncated`` after each encode).
  """

  def __init__(self, name: str, hf_config: Any, arch: Any, params: Any, dtype,
               mesh: jax.sharding.Mesh | None = None, image_spec=None, tokenizer=None,
               max_length: int = 77, attention: str = "auto"):
    self.name = name
    self.hf_config = hf_config
    self.arch = arch
    self.modality = arch.MODALITY
    self.pools = tuple(arch.POOLS)
    self.dtype = jnp.dtype(dtype)
    self.module = arch.build(hf_config, dtype)
    self.mesh = mesh or partition.model_mesh(jax.local_devices())
    # The attention kernel for the devices this encoder runs on (registry:
    # select_attention), before the first trace so that the log names only that path.
    if hasattr(arch, "select_attention"):
      self.module = arch.select_attention(self.module, attention_lib.platform(self.mesh),
                                          attention)
    elif attention not in ("auto", "einsum"):
      raise ValueError(f"attention={attention!r}: {name!r} has no selectable attention "
                       "(use 'auto')")
    self.image_spec = image_spec
    self.tokenizer = tokenizer
    self.max_length = int(max_length)
    self.num_truncated = 0
    # Language models (registry: SCORES) also compute next-token losses for
    # bits_per_byte; their LM head is a parameter only that path creates.
    self.scores = bool(getattr(arch, "SCORES", False))
    kw = {"scores": True} if self.scores else {}
    # One abstract trace gives both the parameter shapes to check and the feature widths.
    outs, expected = jax.eval_shape(
        lambda: self.module.init_with_output(jax.random.key(0), *self._dummy(), **kw))
    if self.scores:
      outs = outs[0]
    convert_lib.check_params(params, expected["params"], f"{name} parameters")
    self.rules = tuple(getattr(arch, "PARTITION_RULES", ()))
    self.dims = tuple(int(o.shape[-1]) for o in outs)
    self.num_layers = len(self.dims)
    self.dim = self.dims[-1]
    self._fns: dict = {}
    # CPU meshes: which of the architecture's CPU-only choices (cpu_variant,
    # CPU_MICRO_BATCH, CPU_COMPILER_OPTIONS) run, measured on this CPU model once and
    # cached (cpu_tuning.py); None elsewhere.
    self.cpu_choice = None
    if sharding.on_cpu(self.mesh):
      self.cpu_choice = cpu_tuning.choose(self, params)
      if self.cpu_choice.variant and hasattr(arch, "cpu_variant"):
        self.module, params = arch.cpu_variant(self.module, params)
    self.params = self._place(params)
    del params

  def _place(self, params):
    """One parameter at a time, each device reading only its slice (lazy checkpoint
    views); kernels in the compute dtype, every other leaf float32 (registry contract)."""
    return partition.place(
        params, self.mesh, self.rules,
        dtype_of=lambda path, x: self.dtype if path.endswith("kernel") else jnp.float32)

  def __repr__(self):
    return (f"Encoder({self.name!r}, modality={self.modality}, dims={self.dims}, "
            f"dtype={self.dtype.name}, devices={self.mesh.size}, "
            f"model_parallel={partition.model_parallel_size(self.mesh)})")

  # ----- inputs -------------------------------------------------------------------------
  def _image_size(self) -> tuple[int, int]:
    size = self.image_spec.output_size() if self.image_spec else None
    if size is None:
      s = getattr(self.hf_config, "image_size", 224)
      size = (s, s) if isinstance(s, int) else tuple(s)
    return size

  def _dummy(self) -> tuple:
    if self.modality == "image":
      h, w = self._image_size()
      return (jnp.zeros((1, h, w, 3), jnp.float32),)
    return (jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), jnp.int32))

  def _inputs(self, items: Sequence[Any], start: int) -> tuple[np.ndarray, ...]:
    """Raw items -> model inputs (unpadded). ``start`` = index of items[0] for errors."""
    if self.modality == "image":
      return (preprocess.preprocess(items, self.image_spec, start),)
    bad = [start + i for i, s in enumerate(items) if not isinstance(s, str)]
    if bad:
      raise ValueError(f"text encoder {self.name!r} got non-string items at {bad[:10]}")
    from platonic_jax.encoders import tokenize  # local: the text path only
    # T = the batch's longest caption rounded up to a multiple of _TEXT_BUCKET (at most
    # max_length): captions average 15-20 tokens, so padding every batch to max_length
    # would spend ~4x the compute on pads, while buckets keep the compiled shapes few.
    # Pads are masked out, so the features do not depend on T.
    ids, mask, truncated = tokenize.tokenize(self.tokenizer, list(items), self.max_length,
                                             pad_to_multiple=_TEXT_BUCKET)
    self.num_truncated += truncated
    vocab = (getattr(self.hf_config, "vocab_size", None)   # multimodal: the text model's
             or getattr(getattr(self.hf_config, "text_config", None), "vocab_size", None))
    real = ids[mask > 0]   # pads are masked out: their id may be anything (huggyllama's [PAD])
    if vocab is not None and real.size and int(real.max()) >= vocab:
      raise ValueError(
          f"text encoder {self.name!r}: the tokenizer produced id {int(real.max())} but the "
          f"checkpoint's vocab_size is {vocab}; the tokenizer files do not belong to this "
          "checkpoint (put the model's own tokenizer files beside config.json).")
    return ids, mask

  # ----- compiled step ------------------------------------------------------------------
  def _fn(self, pool: str, layers: tuple[int, ...], scores: bool = False):
    """The compiled step: (params, *inputs) -> the pooled ``layers`` (a tuple), or with
    ``scores`` the pair (that tuple, [B] next-token nats)."""
    key = (pool, layers, scores)
    if key not in self._fns:
      self._fns[key] = self._compile(self.module, self.cpu_choice, pool, layers, scores)
    return self._fns[key]

  def _compile(self, module, cpu_choice, pool: str, layers: tuple[int, ...],
               scores: bool = False):
    """``_fn``'s step for ``module`` run with ``cpu_choice``'s micro-batches and compiler
    options (None: not a CPU mesh); also what ``cpu_tuning`` times its candidates with."""
    n_in = 1 if self.modality == "image" else 2
    micro_target, options = 0, None
    if cpu_choice is not None:
      micro_target = getattr(self.arch, "CPU_MICRO_BATCH", 0) if cpu_choice.micro_batch else 0
      options = (getattr(self.arch, "CPU_COMPILER_OPTIONS", None)
                 if cpu_choice.compiler_options else None)

    def forward(params, inputs):
      if scores:
        feats, nats = module.apply({"params": params}, *inputs, pool=pool, scores=True)
        return tuple(feats[i] for i in layers), nats
      feats = module.apply({"params": params}, *inputs, pool=pool)
      return tuple(feats[i] for i in layers)

    def per_device(params, *inputs):
      b = inputs[0].shape[0]
      micro = micro_batch(b, micro_target)
      if not micro:
        return forward(params, inputs)
      # Micro-batches one after another (lax.map): each one's activations stay in
      # the CPU caches (registry: CPU_MICRO_BATCH). Samples are independent, so the
      # features are those of the whole batch.
      return common.map_chunks(lambda *xs: forward(params, xs), inputs, micro)

    spec = P(sharding.DATA)
    out_specs = tuple(spec for _ in layers)
    out_specs = (out_specs, spec) if scores else out_specs
    if partition.model_parallel_size(self.mesh) > 1:
      # Sharded parameters: one GSPMD program; XLA inserts the collectives the
      # partition rules imply (all-reduce after row-parallel matmuls, ...).
      batch = sharding.batch_sharding(self.mesh)
      return jax.jit(
          lambda params, *inputs: forward(params, inputs),
          in_shardings=(partition.shardings(self.params, self.mesh, self.rules),)
          + (batch,) * n_in,
          out_shardings=jax.tree.map(lambda _: batch, out_specs), compiler_options=options)
    return jax.jit(jax.shard_map(
        per_device, mesh=self.mesh, in_specs=(P(),) + (spec,) * n_in,
        out_specs=out_specs), compiler_options=options)

  def _to_mesh(self, x: np.ndarray) -> jax.Array:
    """A host batch onto the mesh, rows split over ``data``. On a mesh spanning
    processes every process passes the same global batch and puts its own rows."""
    target = sharding.batch_sharding(self.mesh)
    if not self.mesh.is_multi_process:
      return jax.device_put(x, target)
    return jax.make_array_from_callback(x.shape, target, lambda index: x[index])

  def _to_host(self, y: jax.Array) -> np.ndarray:
    if y.is_fully_addressable:
      return np.asarray(jax.device_get(y))   # explicit: the loop runs transfer-guarded
    from jax.experimental import multihost_utils  # local: multi-process runs only
    return np.asarray(multihost_utils.process_allgather(y, tiled=True))

  def _layers(self, layers) -> tuple[int, ...]:
    if layers is None:
      return (self.num_layers - 1,)
    if isinstance(layers, str):
      if layers != "all":
        raise ValueError(f"layers must be None, 'all' or a list of indices, got {layers!r}")
      return tuple(range(self.num_layers))
    if isinstance(layers, (int, np.integer)):
      layers = [layers]
    out = []
    for i in layers:
      if not -self.num_layers <= int(i) < self.num_layers:
        raise ValueError(f"layer {i} out of range for {self.name!r}: it has {self.num_layers} "
                         f"feature layers (0 = embedding / stem, or the first block of a ViT ... "
                         f"{self.num_layers - 1} = last)")
      out.append(int(i) % self.num_layers)
    if not out:
      raise ValueError("layers is an empty list")
    return tuple(out)

  def _batch(self, batch_size: int) -> int:
    if int(batch_size) < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = int(self.mesh.shape[sharding.DATA])
    return -(-int(batch_size) // n) * n   # a multiple of the data-parallel device count

  # ----- public -------------------------------------------------------------------------
  def encode_iter(self, items: Iterable[Any], batch_size: int = 64, layers=None,
                  pool: str = "", bits_per_byte: bool = False) -> Iterator[Any]:
    """Streaming form of :meth:`encode`: yields one result per batch of ``batch_size``
    items (the same type/shape rules as ``encode``, with N = that batch's count), in order.

    ``items`` may be any iterable (a generator over a dataset that does not fit in
    memory). Host preprocessing and the transfer of the next ``PREFETCH`` batches run in
    a background thread (``platonic_jax.prefetch``) while the device computes batch i;
    every host <-> device transfer is explicit (``jax.device_put`` / ``jax.device_get``).
    Every ``PROGRESS_EVERY_S`` seconds the count of items done (of ``len(items)`` when
    known) and the rate are logged at INFO. With ``bits_per_byte`` each result is the
    pair ``(features, np [n] bits per byte)`` from the same forward pass.
    """
    if pool and pool not in self.pools:
      raise ValueError(f"unknown pool {pool!r} for {self.name!r}; choose from {self.pools}")
    if isinstance(items, (str, bytes)):
      raise ValueError("encode expects a list of items; wrap a single item: [item]")
    if bits_per_byte:
      self._check_scores()
    idx = () if bits_per_byte and _no_layers(layers) else self._layers(layers)
    single = _single_layer(layers)
    same_width = len({self.dims[i] for i in idx}) <= 1
    bs = self._batch(batch_size)
    fn = self._fn(pool, idx, bool(bits_per_byte))
    self.num_truncated = 0

    def chunks():
      buf, start = [], 0
      for item in items:
        buf.append(item)
        if len(buf) == bs:
          yield start, buf
          start, buf = start + bs, []
      if buf:
        yield start, buf

    def finish(pending):
      outs, n, chunk = pending
      if bits_per_byte:
        outs, nats = outs
        bpb = lm_scores.bits_per_byte(self._to_host(nats)[:n], chunk)
      outs = [self._to_host(o)[:n] for o in outs]   # blocks on the device; drops pad rows
      if single:
        feats = outs[0]
      elif not outs:
        feats = None
      else:
        feats = np.stack(outs) if same_width else outs
      return (feats, bpb) if bits_per_byte else feats

    total = f"/{len(items)}" if isinstance(items, Sequence) else ""
    t0 = last_log = time.perf_counter()
    done = 0

    def progress(n):
      # Long extractions (tens of thousands of images on a CPU) report how far they are.
      nonlocal done, last_log
      done += n
      now = time.perf_counter()
      if now - last_log >= PROGRESS_EVERY_S:
        last_log = now
        log.info("%s: encoded %d%s items, %.1f items/s", self.name, done, total,
                 done / (now - t0))

    def on_device():
      # Decoding, preprocessing / tokenizing and the explicit transfer of the next
      # batches run in prefetch's thread while the device computes (PREFETCH ahead).
      for start, chunk in chunks():
        inputs = self._inputs(chunk, start)
        n = inputs[0].shape[0]
        yield [self._to_mesh(sharding.pad_rows(x, bs)[0]) for x in inputs], n, chunk

    pending = None
    for inputs, n, chunk in prefetch.ahead(on_device(), PREFETCH):
      outs = fn(self.params, *inputs)  # async
      if pending is not None:
        yield finish(pending)
        progress(pending[1])
      pending = (outs, n, chunk)
    if pending is not None:
      yield finish(pending)
      progress(pending[1])
    if self.num_truncated:
      log.warning("%s: %d texts were longer than max_length=%d tokens and were truncated",
                  self.name, self.num_truncated, self.max_length)

  def encode(self, items: Sequence[Any], batch_size: int = 64, layers=None,
             pool: str = "", bits_per_byte: bool = False) -> Any:
    """Features of ``items``.

    Args:
      items: images (PIL images, uint8 [H, W(, C)] arrays, encoded bytes or paths) for an
        image encoder; ``str`` captions for a text encoder.
      batch_size: rows per compiled step (rounded up to a multiple of the device count).
      layers: None -> the last layer, np [N, D]; ``"all"`` or a list of indices (negative
        allowed; 0 = embedding / stem) -> np [len(layers), N, D] when those layers share a
        width, else a list of np [N, D_l] (ResNet stages differ: 64, 128, 256, 512).
      pool: one of ``self.pools``; "" = the default (``pools[0]``).
      bits_per_byte: language models only: also return each text's bits per byte
        (:meth:`bits_per_byte`), computed in the same forward pass.

    Returns float32 numpy whatever the compute dtype (with ``bits_per_byte``, the pair
    ``(features, np [N])``). Text encoders set ``self.num_truncated`` (captions longer
    than ``max_length`` tokens) and log it.
    """
    parts = list(self.encode_iter(items, batch_size, layers, pool, bits_per_byte))
    if not parts:
      raise ValueError("encode got no items")
    if bits_per_byte:
      return self._join([p[0] for p in parts], layers), np.concatenate([p[1] for p in parts])
    return self._join(parts, layers)

  def bits_per_byte(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Each text's language-modelling loss in bits per UTF-8 byte, np [N] float32.

    The Platonic release's ``utils.cross_entropy_loss`` + ``cross_entropy_to_bits_per_unit``
    (``encoders/lm_scores.py``): next-token cross-entropy in nats summed over the
    predicted real tokens (the first token -- BOS where the tokenizer adds one -- is
    context only), times log2(e), divided by ``len(text.encode("utf-8"))`` of the whole
    text (also when it was truncated to ``max_length`` tokens, as the release divides by
    the string it was given). Use ``encode(..., bits_per_byte=True)`` to get the
    features from the same pass.
    """
    return self.encode(texts, batch_size, layers=(), bits_per_byte=True)[1]

  def _check_scores(self) -> None:
    if not self.scores:
      raise ValueError(f"bits_per_byte needs a language model; {self.name!r} is a "
                       f"{self.modality} encoder ({self.arch.__name__.rsplit('.', 1)[-1]}) "
                       "without a next-token head")

  def _join(self, parts: list, layers) -> Any:
    if _single_layer(layers):
      return np.concatenate(parts, axis=0)
    if _no_layers(layers):
      return None
    if isinstance(parts[0], list):
      return [np.concatenate(per_layer, axis=0) for per_layer in zip(*parts)]
    return np.concatenate(parts, axis=1)


def load(name_or_dir: str, dtype: Any = "float32", *, max_length: int = 77,
         devices: Sequence[jax.Device] | None = None, model_parallel: int = 1,
         attention: str = "auto") -> Encoder:
  """An :class:`Encoder` from a hub id or a local HF checkpoint directory.

  Args:
    name_or_dir: e.g. "microsoft/resnet-18", "openai-community/gpt2", "facebook/dinov2-base",
      "timm/vit_base_patch16_224.augreg_in21k", or a directory with config.json +
      model.safetensors (or pytorch_model.bin with torch) and preprocessor_config.json
      (images; timm checkpoints carry theirs in config.json) / tokenizer files (text).
    dtype: "float32", "bfloat16" (bf16 matmul operands, float32 accumulation and output)
      or "auto": bfloat16 when ``devices`` are GPUs / TPUs (or an AMX CPU whose bf16
      dots measure faster), float32 on other CPUs
      (``auto_dtype.py``: why, and the bf16 error bound).
    max_length: text only: tokens per caption (longer ones truncated, counted).
    devices: devices of the mesh (default: this host's ``jax.local_devices()`` when
      ``model_parallel`` is 1 -- encoding is host-local, on a multi-host run each host
      encodes its own items -- else every process's ``jax.devices()``).
    model_parallel: devices that share one copy of the parameters, sharded over them by
      the architecture's ``PARTITION_RULES`` (``encoders/partition.py``): for models
      larger than one device. Must divide the device count; the rest is data parallel.
      Each process reads only its devices' slices of the safetensors files. When the
      mesh spans processes (``jax.distributed``), every process calls ``encode`` with
      the same items and gets all features.
    attention: transformers' attention kernel (``encoders/attention.py``): "auto" (chosen
      from the mesh's devices: cuDNN flash attention for bf16 on GPUs, XLA's fused
      ``jax.nn.dot_product_attention`` on TPUs / fp32 GPUs, the hand-written einsum form
      on CPUs) or one of "einsum", "xla", "cudnn" to force it.
  """
  if devices is None:
    devices = jax.local_devices() if model_parallel == 1 else jax.devices()
  if isinstance(dtype, str):
    auto = dtype == "auto"
    dtype = auto_dtype.resolve(dtype, devices)   # "auto": bf16 on GPUs / TPUs / AMX CPUs
    if auto and all(d.platform == "cpu" for d in devices) and auto_dtype.cpu_has_amx():
      log.info("dtype='auto' is %s on this AMX CPU (%s; features within %.0e of fp32 in "
               "bf16; dtype='float32' / 'bfloat16' forces either)", dtype,
               "bf16 dots measured faster" if dtype == "bfloat16" else
               "PLATONIC_JAX_CPU_TUNING=defaults, or bf16 dots not faster here",
               auto_dtype.BF16_ERROR_BOUND)
    if dtype not in _DTYPES:
      raise ValueError(f"dtype {dtype!r} not supported; use 'auto', 'float32' or 'bfloat16'")
    dtype = _DTYPES[dtype]
  elif jnp.dtype(dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
    raise ValueError(f"dtype {dtype} not supported; use float32 or bfloat16")
  path = resolve(name_or_dir)
  if not os.path.exists(os.path.join(path, "config.json")):
    raise ValueError(f"{path} has no config.json (a Hugging Face checkpoint directory needs one)")
  from platonic_jax.encoders import timm_format  # local: only loading needs it
  if timm_format.is_timm_checkpoint(path):   # timm's hub format: no transformers config
    hf_config = timm_format.read_config(path)
  else:
    with open(os.path.join(path, "config.json")) as f:
      # The registry first: a model_type transformers does not know either gets the list
      # of supported types, not AutoConfig's error.
      registry.get(json.load(f).get("model_type"))
    from transformers import AutoConfig  # local: slow import, only loading needs it
    hf_config = AutoConfig.from_pretrained(path)
  arch = registry.get(hf_config.model_type)
  mesh = partition.model_mesh(devices, model_parallel)   # validates model_parallel first
  # Lazy views: a converter that keeps them (StateDict.view) lets each device read only
  # its slice; converters that take() read tensors whole, one at a time.
  params = arch.convert(convert_lib.lazy_state_dict(path), hf_config)
  image_spec = tokenizer = None
  if arch.MODALITY == "image":   # the architecture's own preprocessing, else HF's processor
    image_spec = (arch.image_spec(path, hf_config) if hasattr(arch, "image_spec")
                  else preprocess.ImageSpec.from_dir(path))
  else:
    from platonic_jax.encoders import tokenize
    # An architecture may set its tokenizer up its own way (registry: load_tokenizer).
    tokenizer = (arch.load_tokenizer(path, name_or_dir) if hasattr(arch, "load_tokenizer")
                 else tokenize.load_tokenizer(path))
  return Encoder(name_or_dir, hf_config, arch, params, dtype, mesh, image_spec, tokenizer,
                 max_length, attention)
