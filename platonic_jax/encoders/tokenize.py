"""Text -> GPT-2 token arrays: the checkpoint's own byte-level BPE tokenizer, padded with eos.

    tok = load_tokenizer("openai-community/gpt2" | "/local/dir")
    input_ids, attention_mask, num_truncated = tokenize(tok, captions, max_length=77)

Tokenization is Hugging Face's (``GPT2Tokenizer``, Rust-backed in transformers 5), so ids
are exactly what a PyTorch pipeline feeds ``GPT2Model``. GPT-2 adds no BOS/EOS by default
and neither do we (as the Platonic reference, ``minyoungg/platonic-rep``); padding is on the
right with the eos id and attention mask 0, so with causal attention a caption's features
never depend on its batch or padding.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def load_tokenizer(path_or_dir: str) -> Any:
  """The GPT-2 tokenizer of a hub id or a local directory (vocab.json + merges.txt or
  tokenizer.json), with ``pad_token = eos_token`` when it has none and right padding.

  Hub ids go through huggingface_hub (cached; honours ``HF_HUB_OFFLINE``).
  """
  from transformers import GPT2Tokenizer  # local: importing transformers is slow

  try:
    tok = GPT2Tokenizer.from_pretrained(path_or_dir)
  except (OSError, ValueError) as e:
    raise ValueError(
        f"cannot load a GPT-2 tokenizer from {path_or_dir!r}: {e}\n  Fix: pass a hub id "
        "(network or a filled HF cache) or a directory with vocab.json + merges.txt "
        "(or tokenizer.json).") from e
  if tok.vocab_size == 0:
    # transformers 5 builds an empty tokenizer (only its special tokens) instead of failing
    # when the vocabulary files are missing.
    raise ValueError(f"the tokenizer loaded from {path_or_dir!r} has an empty vocabulary; "
                     "the directory needs vocab.json + merges.txt (or tokenizer.json)")
  if tok.eos_token is None or tok.eos_token_id is None:
    raise ValueError(f"the tokenizer of {path_or_dir!r} has no eos token to pad with")
  if tok.pad_token is None:
    tok.pad_token = tok.eos_token  # GPT-2 has no pad token; pads are masked out anyway
  tok.padding_side = "right"
  return tok


def load_release_tokenizer(path_or_dir: str, name: str | None = None) -> Any:
  """A language model's own tokenizer (``AutoTokenizer``) set up as the Platonic release's
  ``models.load_tokenizer``: ``pad_token = "[PAD]"`` when the model name contains
  "huggyllama", else ``pad_token = eos_token`` when there is none; ``padding_side="left"``.

  :func:`tokenize` pads on the right whatever ``padding_side`` says: the decoders' features
  and scores do not depend on the side (positions count real tokens only), and right
  padding is what the cuDNN attention path needs. Special tokens (Llama's BOS) are added
  as the release's ``tokenizer(texts)`` adds them.
  """
  from transformers import AutoTokenizer  # local: importing transformers is slow
  try:
    tok = AutoTokenizer.from_pretrained(path_or_dir)
  except (OSError, ValueError, TypeError) as e:
    raise ValueError(f"cannot load the tokenizer of {path_or_dir!r}: {e}\n  Fix: put the "
                     "model's tokenizer files (tokenizer.json / tokenizer.model + "
                     "tokenizer_config.json) beside config.json.") from e
  if "huggyllama" in (name or str(path_or_dir)):
    tok.pad_token = "[PAD]"
  elif tok.pad_token is None:
    tok.pad_token = tok.eos_token
  if tok.pad_token_id is None:
    # "[PAD]" unknown to a tokenizer without <unk>: pads are masked, any id fills them.
    tok.pad_token_id = tok.eos_token_id if tok.eos_token_id is not None else 0
  tok.padding_side = "left"
  return tok


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int, *,
             pad_to_multiple: int = 8) -> tuple[np.ndarray, np.ndarray, int]:
  """Tokenizes ``texts`` into right-padded arrays.

  Args:
    tokenizer: from :func:`load_tokenizer` (any HF tokenizer with a pad token works).
    texts: N strings, each with at least one token.
    max_length: longest kept sequence, in tokens; longer texts lose their tail (or their
      head if ``tokenizer.truncation_side == "left"``) and are counted.
    pad_to_multiple: T is the longest kept length rounded up to this multiple (capped at
      ``max_length``), so batches of similar captions share a compiled shape.

  Returns:
    ``(input_ids [N, T] int32, attention_mask [N, T] int32, num_truncated)``; padded
    positions hold the pad (eos) id and mask 0.
  """
  if isinstance(texts, str):
    raise TypeError("tokenize expects a list of strings, got one str; wrap it: [text]")
  texts = list(texts)
  if not texts:
    raise ValueError("tokenize got no texts")
  bad = [i for i, s in enumerate(texts) if not isinstance(s, str)]
  if bad:
    raise TypeError(f"texts must be str; items {bad[:10]} are "
                    f"{sorted({type(texts[i]).__name__ for i in bad})}")
  empty = [i for i, s in enumerate(texts) if not s]
  if empty:
    raise ValueError(f"texts {empty[:10]} are empty strings (no tokens, 0 bytes): their "
                     "features and bits per byte would be undefined; drop them or give them text")
  if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
    raise ValueError(f"max_length must be a positive int, got {max_length!r}")
  if tokenizer.pad_token_id is None:
    raise ValueError("the tokenizer has no pad token; load it with load_tokenizer(), "
                     "which pads with eos")
  # No truncation here so the too-long texts can be counted; verbose=False silences HF's
  # warning about sequences longer than the model (we truncate below and report).
  ids = tokenizer(texts, truncation=False, padding=False, return_attention_mask=False,
                  verbose=False)["input_ids"]
  lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
  empty = np.flatnonzero(lengths == 0)
  if empty.size:
    raise ValueError(f"texts {empty[:10].tolist()} produce no tokens (empty strings?): their "
                     "mean-pooled features would be undefined; drop them or give them text")
  num_truncated = int(np.sum(lengths > max_length))
  t = min(int(max_length), _round_up(int(lengths.max()), pad_to_multiple))
  input_ids = np.full((len(ids), t), tokenizer.pad_token_id, np.int32)
  attention_mask = np.zeros((len(ids), t), np.int32)
  keep_head = getattr(tokenizer, "truncation_side", "right") != "left"
  for i, row in enumerate(ids):
    row = row[:max_length] if keep_head else row[-max_length:]
    input_ids[i, :len(row)] = row
    attention_mask[i, :len(row)] = 1
  return input_ids, attention_mask, num_truncated
