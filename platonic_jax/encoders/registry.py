"""The encoder registry: HF ``config.model_type`` -> the module that implements it.

Contract of an architecture module (one file per architecture, one entry here):

    MODEL_TYPES: tuple[str, ...]   # HF config.model_type values, e.g. ("gpt2",)
    MODALITY: str                  # "image" | "text"
    POOLS: tuple[str, ...]         # selectable pools; POOLS[0] is the default
    def build(hf_config, dtype) -> flax.linen.Module
        # image: module(pixel_values [B, H, W, 3] float32, pool: str)
        # text:  module(input_ids [B, T] int32, attention_mask [B, T] int32, pool: str)
        # -> tuple of L+1 pooled features, each [B, D_l] float32 (layer 0 = embedding /
        #    stem output, as HF's hidden_states; the ViT family returns L, one per block,
        #    as the Platonic release takes them); ``pool`` is a static name, "" = default.
        # ``dtype`` is jnp.float32 or jnp.bfloat16 (compute dtype of the matmuls; bf16 dots
        # take preferred_element_type=jnp.float32, outputs are float32 either way).
    def convert(state_dict: Mapping[str, array-like], hf_config) -> params pytree
        # strict: read through encoders.convert.StateDict and call .finish(), which raises
        # encoders.convert.ConversionError listing missing / unexpected / misshaped keys.
        # load() passes lazy safetensors views (encoders/lazy.py); StateDict.take reads
        # one whole as float32 numpy, StateDict.view keeps it lazy (PARTITION_RULES).
        # Returned leaves are float32 numpy or lazy views. For bf16, load() casts the leaves whose
        # name ends with "kernel" (the matmul / conv weights) to bfloat16 once; every
        # other leaf (biases, norms, embeddings tables, positions) stays float32.
    CPU_COMPILER_OPTIONS: dict[str, str]   # optional: XLA:CPU debug options for this
        # architecture's forward (``jax.jit(compiler_options=)``), applied only when every
        # device of the mesh is a CPU; e.g. ResNet's YNNPACK convolution fusions.
    CPU_MICRO_BATCH: int                   # optional: on CPU meshes each device's batch
        # runs as a lax.map over micro-batches of about this size, so one micro-batch's
        # activations stay in the caches (DINOv2-B at batch 16: 3.3 -> 3.8 img/s).
    def image_spec(directory, config) -> spec   # optional, image models: the preprocessing
        # (``apply(item, index)``, ``output_size()``; encoders/preprocess.py) when it is not
        # HF's preprocessor_config.json, e.g. timm's pretrained_cfg (timm_format.py).
    def cpu_variant(module, params) -> (module, params)   # optional: when every device
        # of the mesh is a CPU, the module (and its params, converted once at load) that
        # runs there, for algorithms that only pay on XLA:CPU; same features to ~1e-6.
        # E.g. ResNet's Winograd 3x3 convolutions with pre-transformed filters (bf16 on
        # an AMX CPU: its convolutions as bf16 dots), DINOv2's attention over groups of
        # samples side by side. Which of these CPU knobs run is measured per CPU model
        # (encoders/cpu_tuning.py).
    def cpu_defaults(module) -> (bool, bool, bool)   # optional: which of cpu_variant,
        # CPU_MICRO_BATCH, CPU_COMPILER_OPTIONS run unprobed and are the probe's
        # baseline (default: every one the architecture has).
    def select_attention(module, platform, requested="auto") -> module   # optional:
        # the module with the attention kernel for the mesh's device platform ("cpu" /
        # "gpu" / "tpu"), or the one ``requested`` forces ("einsum" / "xla" / "cudnn";
        # encoders/attention.py). Called by Encoder before its first trace; each path
        # computes the same features (tests) and logs once which one ran.
    SCORES: bool                           # optional, text: the module also takes
        # ``scores: bool`` (static); with scores=True it returns (features tuple, [B]
        # float32 summed next-token nats), and its LM head parameters exist only on that
        # path (load traces it): Encoder.bits_per_byte / encode(bits_per_byte=True).
    def load_tokenizer(path, name) -> tokenizer   # optional, text: the tokenizer set-up
        # (default tokenize.load_tokenizer, GPT-2's); decoders use the release's.
    PARTITION_RULES: tuple[tuple[str, tuple], ...]   # optional: how parameters shard
        # over the mesh's "model" axis with load(..., model_parallel=N)
        # (encoders/partition.py): (regex re.fullmatch-ed against the '/'-joined Flax
        # param path, e.g. "layers_3/attn/q_proj/kernel"; a partition spec as a tuple
        # with one mesh-axis name or None per array dim, e.g. (None, "model")). First
        # match wins; unmatched params are replicated. ``convert`` may return lazy views
        # (encoders/lazy.py, via StateDict.view) instead of numpy leaves: each device
        # then reads only its slice of the safetensors files.

Adding an architecture = writing that module and adding it to ``_ARCHITECTURES`` below
(a plain tuple of imported modules, no string-to-import lookups).
"""

from __future__ import annotations

import types

from platonic_jax.encoders import bloom, decoder, dinov2, gpt2, resnet, timm_format, vit_hf

_ARCHITECTURES: tuple[types.ModuleType, ...] = (resnet, gpt2, dinov2, decoder, bloom, vit_hf,
                                                timm_format)

_CONTRACT = ("MODEL_TYPES", "MODALITY", "POOLS", "build", "convert")


def _check(module: types.ModuleType) -> types.ModuleType:
  missing = [a for a in _CONTRACT if not hasattr(module, a)]
  if missing:
    raise TypeError(f"encoder module {module.__name__} lacks {missing} (see registry.py)")
  if module.MODALITY not in ("image", "text"):
    raise TypeError(f"{module.__name__}.MODALITY must be 'image' or 'text'")
  return module


REGISTRY: dict[str, types.ModuleType] = {
    t: _check(m) for m in _ARCHITECTURES for t in m.MODEL_TYPES}


def supported() -> tuple[str, ...]:
  """The model_type values :func:`get` accepts (sorted)."""
  return tuple(sorted(REGISTRY))


def get(model_type: str) -> types.ModuleType:
  """The architecture module for a HF ``config.model_type``; ValueError names the supported."""
  try:
    return REGISTRY[model_type]
  except KeyError:
    raise ValueError(f"unsupported model_type {model_type!r}; supported model types: "
                     f"{', '.join(supported())}. Add an architecture module and register it "
                     "in platonic_jax/encoders/registry.py.") from None
