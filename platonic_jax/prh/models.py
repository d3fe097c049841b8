"""The study's models: the release's model sets, how each name loads, its family, and
the name of its feature file in the release's layout.

Sets (``minyoungg/platonic-rep`` ``tasks.get_models``): ``val`` = 12 language models
(BLOOMZ, OpenLLaMA, LLaMA) and 17 timm ViTs (ImageNet-21K AugReg, MAE, DINOv2, CLIP,
CLIP fine-tuned on ImageNet-12K); ``test`` = 8 language models (OLMo, Gemma, Mistral,
Mixtral, Llama-3) — the release lists no vision model for it, so they are paired with
the ``val`` ViTs here; ``custom`` = all 20 language models and DINOv2-giant.

Vision names are timm ids as the release spells them (``vit_base_patch16_224.mae``) and
load from the hub as ``timm/<name>``; language names are hub ids; either may also be a
local checkpoint directory.
"""

from __future__ import annotations

import os
import re

from platonic_jax.encoders import timm_format

VAL_LANGUAGE = (
    "bigscience/bloomz-560m", "bigscience/bloomz-1b1", "bigscience/bloomz-1b7",
    "bigscience/bloomz-3b", "bigscience/bloomz-7b1",
    "openlm-research/open_llama_3b", "openlm-research/open_llama_7b",
    "openlm-research/open_llama_13b",
    "huggyllama/llama-7b", "huggyllama/llama-13b", "huggyllama/llama-30b",
    "huggyllama/llama-65b",
)
# The 17 vision models of the release's tasks.py, the same for its val and test sets.
VAL_VISION = timm_format.STUDY_MODELS
TEST_LANGUAGE = (
    "allenai/OLMo-1B-hf", "allenai/OLMo-7B-hf", "google/gemma-2b", "google/gemma-7b",
    "mistralai/Mistral-7B-v0.1", "mistralai/Mixtral-8x7B-v0.1",
    "NousResearch/Meta-Llama-3-8B", "NousResearch/Meta-Llama-3-70B",
)
SETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "val": (VAL_LANGUAGE, VAL_VISION),
    "test": (TEST_LANGUAGE, VAL_VISION),
    "custom": (VAL_LANGUAGE + TEST_LANGUAGE, ("vit_giant_patch14_dinov2.lvd142m",)),
}
LANGUAGE, VISION = "language", "vision"

# Vision families, first match wins (the paper's figure 3 groups the ViTs this way).
VISION_FAMILIES = (
    ("CLIP (I12K ft)", r"clip.*ft_in12k|ft_in12k.*clip"),
    ("CLIP", r"clip"),
    ("DINOv2", r"dinov2"),
    ("MAE", r"\.mae\b|(^|[_/-])mae([_/.-]|$)"),
    ("ImageNet-21K", r"in21k|augreg"),
)
LANGUAGE_FAMILIES = (
    ("BLOOMZ", r"bloom"), ("OpenLLaMA", r"open_llama|open-llama"),
    ("Llama-3", r"llama-3|llama3"), ("LLaMA", r"llama"), ("OLMo", r"olmo"),
    ("Gemma", r"gemma"), ("Mixtral", r"mixtral"), ("Mistral", r"mistral"), ("Qwen", r"qwen"),
)


def resolve_set(name: str, language: tuple[str, ...], vision: tuple[str, ...]
                ) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(language, vision) models: the set's lists, each replaced by the given one when it is
  non-empty; ``name`` "" takes the given lists alone."""
  set_l, set_v = SETS[name] if name else ((), ())
  return tuple(language) or set_l, tuple(vision) or set_v


def is_local(name: str) -> bool:
  return os.path.isdir(os.path.expanduser(name))


def load_id(name: str, modality: str) -> str:
  """What ``encoders.load`` gets: a local directory as it is; a vision name without an
  owner is a timm model on the hub (``timm/<name>``, as the release's
  ``timm.create_model(name, pretrained=True)``)."""
  if is_local(name):
    return os.path.expanduser(name)
  if modality == VISION and "/" not in name:
    return f"timm/{name}"
  return name


def display(name: str) -> str:
  """A short label: a directory's or a hub id's last component."""
  return os.path.basename(os.path.normpath(name)) if is_local(name) else name.split("/")[-1]


def _family(name: str, table) -> str:
  low = display(name).lower() if is_local(name) else name.lower()
  for family, pattern in table:
    if re.search(pattern, low):
      return family
  return "other"


def family(name: str, modality: str) -> str:
  """The model's family (for the figures' lines), from its name; "other" if none."""
  return _family(name, VISION_FAMILIES if modality == VISION else LANGUAGE_FAMILIES)


def release_filename(name: str, modality: str, caption_idx: int = 0) -> str:
  """The release's ``utils.to_feature_filename`` basename for its README's commands:
  ``--pool avg`` for language models (with ``_cid-<i>`` for a caption other than 0),
  ``--pool cls`` for vision models (no caption). ``huggyllama/llama-7b`` ->
  ``huggyllama_llama-7b_pool-avg.pt``."""
  base = name.replace("/", "_") + ("_pool-avg" if modality == LANGUAGE else "_pool-cls")
  if modality == LANGUAGE and caption_idx:
    base += f"_cid-{caption_idx}"
  return base + ".pt"
