"""Tiny random Hugging Face checkpoints built offline for the encoder tests.

Each builder saves a transformers PyTorch model with ``save_pretrained`` plus the image
processor config next to it, and returns ``(directory, torch_model)``; the torch model is
the numerical reference. Random batch-norm statistics / layer scales are set so that no
parameter keeps a trivial initial value that would hide a conversion bug.
"""

from __future__ import annotations

import numpy as np


def randomize(model, seed: int) -> None:
  """Every floating parameter and buffer gets random values (BN stats positive variance,
  norm scales near 1, layer scales near 0.5), for HF and timm models alike."""
  import torch
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
      if not t.is_floating_point():
        continue
      if name.endswith("running_var"):
        t.copy_(0.5 + torch.rand(t.shape, generator=g))
      elif name.endswith(("running_mean", "bias")):
        t.copy_(0.1 * torch.randn(t.shape, generator=g))
      elif t.dim() == 1 and name.endswith("weight") and "norm" in name.rsplit(".", 2)[-2]:
        t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=g))
      elif name.endswith(("lambda1", "gamma")):
        t.copy_(0.5 + 0.1 * torch.randn(t.shape, generator=g))
      else:
        fan_in = int(np.prod(t.shape[1:])) if t.dim() > 1 else 1
        t.copy_(torch.randn(t.shape, generator=g) / np.sqrt(max(fan_in, 1)))


def tiny_resnet(directory: str, layer_type: str = "basic", seed: int = 0,
                with_head: bool = True, **overrides):
  """A 2-stage ResNet (stem 8, widths 8/16 or 16/32 bottleneck) + ConvNext processor
  (shortest edge 32, crop_pct 0.875: resize to 36 then center-crop 32, as resnet-18's)."""
  import torch
  import transformers as T
  torch.manual_seed(seed)
  kw = dict(embedding_size=8, hidden_sizes=[8, 16] if layer_type == "basic" else [16, 32],
            depths=[1, 2], layer_type=layer_type, num_labels=3)
  kw.update(overrides)
  cfg = T.ResNetConfig(**kw)
  model = (T.ResNetForImageClassification(cfg) if with_head else T.ResNetModel(cfg)).eval()
  randomize(model, seed)
  model.save_pretrained(directory)
  T.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875, resample=3).save_pretrained(
      directory)
  return directory, (model.resnet if with_head else model)


def tiny_dinov2(directory: str, swiglu: bool = False, seed: int = 0, image_size: int = 28,
                crop=(42, 56), **overrides):
  """A 2-layer DINOv2 (D=32, 4 heads, patch 14) trained at ``image_size`` (a 2x2 grid)
  with a Bit processor whose crop is ``crop`` (H, W): a non-native 3x4 grid by default,
  so position embeddings are interpolated."""
  import torch
  import transformers as T
  torch.manual_seed(seed)
  kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2,
            image_size=image_size, patch_size=14, use_swiglu_ffn=swiglu)
  kw.update(overrides)
  model = T.Dinov2Model(T.Dinov2Config(**kw)).eval()
  randomize(model, seed)
  model.save_pretrained(directory)
  T.BitImageProcessor(size={"shortest_edge": max(crop) + 4},
                      crop_size={"height": crop[0], "width": crop[1]},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                      resample=3).save_pretrained(directory)
  return directory, model


def random_images(n: int, seed: int = 0, sizes=((40, 50), (37, 64), (64, 45))):
  """``n`` random uint8 RGB arrays of varying sizes."""
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, sizes[i % len(sizes)] + (3,), dtype=np.uint8) for i in range(n)]


def hf_pixel_values(directory: str, images) -> "np.ndarray":
  """The HF image processor's output for ``images``, NCHW float32 numpy.

  ``do_convert_rgb=True`` is forced: ConvNextImageProcessor (resnet-18's) leaves it unset
  and then fails on grayscale / palette images, which platonic_jax always converts with
  transformers' own rule (alpha composited on white).
  """
  import transformers as T
  proc = T.AutoImageProcessor.from_pretrained(directory)
  return np.asarray(proc(images, return_tensors="np", do_convert_rgb=True)["pixel_values"],
                    np.float32)


# ----- GPT-2 (the text helper's builders) -------------------------------------------------

GPT2_CORPUS = [
    "a dog runs across the grass", "two children are playing with a red ball",
    "a man rides a bicycle down the street", "a woman reads a book in a cafe",
    "the pigeons sit on the roof of the market", "people walk near the lake in the park",
] * 20


def gpt2_tokenizer_files(directory: str, vocab_size: int = 400) -> str:
  """Trains a byte-level BPE tokenizer (``tokenizers``) on a tiny caption corpus and saves
  GPT-2's file layout, vocab.json + merges.txt, with ``<|endoftext|>`` as id 0."""
  from tokenizers import ByteLevelBPETokenizer
  bpe = ByteLevelBPETokenizer()
  bpe.train_from_iterator(GPT2_CORPUS, vocab_size=vocab_size, min_frequency=1,
                          show_progress=False, special_tokens=["<|endoftext|>"])
  bpe.save_model(str(directory))
  return str(directory)


def _randomize_gpt2(model, seed: int) -> None:
  """Every GPT-2 parameter random: layer-norm scales near 1, biases non-zero, so a swapped
  scale / bias or a dropped bias changes the output (HF's init of ones / zeros hides it)."""
  import torch
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if ".ln_" in name or name.startswith("ln_"):
        p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
      elif name.endswith("bias"):
        p.copy_(0.1 * torch.randn(p.shape, generator=g))
      else:
        p.copy_(0.15 * torch.randn(p.shape, generator=g))


def tiny_gpt2(directory: str, seed: int = 0, **overrides):
  """A 3-layer GPT-2 (D=32, 4 heads, 128 positions) with random weights and a trained
  byte-level BPE tokenizer in ``directory`` (config.json, model.safetensors, vocab.json,
  merges.txt). ``overrides`` are GPT2Config fields. Returns ``(directory, GPT2Model)``."""
  import torch
  import transformers as T
  gpt2_tokenizer_files(directory)
  tok = T.GPT2Tokenizer.from_pretrained(str(directory))
  kw = dict(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=3, n_head=4,
            bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
  kw.update(overrides)
  torch.manual_seed(seed)
  model = T.GPT2Model(T.GPT2Config(**kw)).eval()
  _randomize_gpt2(model, seed)
  model.save_pretrained(str(directory))
  return str(directory), model




def rel_error(a, b) -> float:
  """||a - b|| / ||b||, computed in float64."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


__all__ = ["randomize", "tiny_resnet", "tiny_dinov2", "random_images", "hf_pixel_values",
           "tiny_gpt2", "tiny_decoder", "decoder_tokenizer", "DECODER_VARIANTS",
           "gpt2_tokenizer_files", "GPT2_CORPUS", "rel_error"]


# ----- decoder language models (Llama / Mistral / ... / BLOOM) ----------------------------

def decoder_tokenizer(directory: str, vocab_size: int = 300, bos: bool = True) -> str:
  """A byte-level BPE trained on the caption corpus, saved as ``tokenizer.json`` +
  ``tokenizer_config.json`` so ``AutoTokenizer.from_pretrained(directory)`` loads it.
  ``bos``: prepend ``<s>`` to every text (Llama / Gemma tokenizers do; Qwen, BLOOM,
  OLMo do not). Specials: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, ``<|endoftext|>`` 3 (the pad
  token transformers' Qwen2Tokenizer sets when it sees a qwen2 config.json); no pad token."""
  from tokenizers import ByteLevelBPETokenizer, processors
  from transformers import PreTrainedTokenizerFast
  bpe = ByteLevelBPETokenizer()
  bpe.train_from_iterator(GPT2_CORPUS, vocab_size=vocab_size, min_frequency=1,
                          show_progress=False,
                          special_tokens=["<unk>", "<s>", "</s>", "<|endoftext|>"])
  if bos:
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
  tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>",
                                eos_token="</s>", unk_token="<unk>")
  tok.save_pretrained(str(directory))
  return str(directory)


def _randomize_decoder(model, seed: int, offset_norms: bool) -> None:
  """Every parameter random: norm weights near 1 (near 0 for Gemma's 1 + w), biases
  non-zero, so a swapped or dropped parameter changes the output."""
  import torch
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_((0.0 if offset_norms else 1.0) + 0.2 * torch.randn(p.shape, generator=g))
      elif name.endswith("bias"):
        p.copy_(0.1 * torch.randn(p.shape, generator=g))
      else:
        fan_in = p.shape[-1] if p.dim() > 1 else 1
        p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(fan_in))


_SMALL = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128)

# variant -> (config class name, fields, tokenizer adds BOS). Options chosen so that each
# one bites on captions of 5-25 tokens (windows of 4 tokens, caps the logits reach).
DECODER_VARIANTS = {
    "llama": ("LlamaConfig", dict(attention_bias=True, mlp_bias=True, rope_parameters=dict(
        rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
        high_freq_factor=4.0, original_max_position_embeddings=16)), True),
    "llama_linear": ("LlamaConfig", dict(rope_parameters=dict(
        rope_type="linear", rope_theta=10000.0, factor=2.0), tie_word_embeddings=True), True),
    "llama_dynamic": ("LlamaConfig", dict(max_position_embeddings=8, rope_parameters=dict(
        rope_type="dynamic", rope_theta=10000.0, factor=2.0), num_key_value_heads=4), True),
    "mistral": ("MistralConfig", dict(sliding_window=4, head_dim=12), True),
    "mixtral": ("MixtralConfig", dict(num_local_experts=4, num_experts_per_tok=2,
                                      sliding_window=None), True),
    "gemma": ("GemmaConfig", dict(head_dim=8, num_key_value_heads=1), True),
    "gemma2": ("Gemma2Config", dict(head_dim=8, sliding_window=4, attn_logit_softcapping=3.0,
                                    final_logit_softcapping=2.0, query_pre_attn_scalar=12), True),
    "gemma3": ("Gemma3TextConfig", dict(
        head_dim=8, sliding_window=4, query_pre_attn_scalar=12, final_logit_softcapping=2.0,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={"full_attention": dict(rope_type="linear", factor=2.0, rope_theta=1e6),
                         "sliding_attention": dict(rope_type="default", rope_theta=1e4)}), True),
    # Gemma-3 4B+ checkpoints: Gemma3ForConditionalGeneration (a tiny SigLIP tower beside)
    "gemma3_mm": ("Gemma3Config", dict(head_dim=8, sliding_window=4, query_pre_attn_scalar=12,
                                       final_logit_softcapping=2.0), True),
    "olmo": ("OlmoConfig", dict(clip_qkv=0.6, num_key_value_heads=4), False),
    "olmo2": ("Olmo2Config", dict(), False),
    "qwen2": ("Qwen2Config", dict(use_sliding_window=True, sliding_window=4, max_window_layers=1,
                                  tie_word_embeddings=True), False),
    "qwen3": ("Qwen3Config", dict(head_dim=12, use_sliding_window=True, sliding_window=4,
                                  max_window_layers=2), False),
    "bloom": ("BloomConfig", dict(), False),
    "bloom_post_ln": ("BloomConfig", dict(apply_residual_connection_post_layernorm=True), False),
}


def tiny_decoder(directory: str, variant: str, seed: int = 0, **overrides):
  """A 3-layer random decoder LM of ``variant`` (``DECODER_VARIANTS``) saved with
  ``save_pretrained`` next to a trained BPE tokenizer. Returns ``(directory,
  *ForCausalLM)`` (eager attention: the reference of every mask and soft-cap)."""
  import torch
  import transformers as T
  cls_name, fields, bos = DECODER_VARIANTS[variant]
  decoder_tokenizer(directory, bos=bos)
  tok = T.AutoTokenizer.from_pretrained(str(directory))
  if cls_name == "BloomConfig":
    kw = dict(vocab_size=len(tok), hidden_size=32, n_layer=3, n_head=4)
  else:
    kw = dict(_SMALL, vocab_size=len(tok))
  kw.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=None)
  kw.update(fields)
  kw.update(overrides)
  if cls_name == "Gemma3Config":   # the text model's fields go into text_config
    config = T.Gemma3Config(text_config=kw, mm_tokens_per_image=4, vision_config=dict(
        hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
        image_size=28, patch_size=14))
  else:
    config = getattr(T, cls_name)(**kw)
  config._attn_implementation = "eager"
  torch.manual_seed(seed)
  model = T.AutoModelForCausalLM.from_config(config).eval()
  _randomize_decoder(model, seed, offset_norms=cls_name.startswith("Gemma"))
  if getattr(config.get_text_config(), "tie_word_embeddings", False):
    model.tie_weights()
  model.save_pretrained(str(directory))
  return str(directory), model
