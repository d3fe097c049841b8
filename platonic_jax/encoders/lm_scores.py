"""Language-modelling loss and bits-per-byte of each text, as the Platonic release.

Reference: ``minyoungg/platonic-rep`` ``utils.cross_entropy_loss`` (per-position
cross-entropy of ``logits[:, :-1]`` against ``input_ids[:, 1:]``, times
``attention_mask[:, :-1]``) and ``utils.cross_entropy_to_bits_per_unit(unit="byte")``
(nats summed over the sequence, times log2(e), divided by ``len(text.encode("utf-8"))``).

The release pads on the left, where ``mask[t] = 1`` implies ``mask[t + 1] = 1``; here a
position counts when it *and* its target are real tokens, which is the release's sum on
left-padded batches and also correct on right-padded ones (the release's mask would
count the prediction of the first pad there). So the score never depends on padding.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

LOG2_E = 1.0 / math.log(2.0)


def token_nats(logits: jax.Array, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
  """Summed next-token cross-entropy of each row, in nats.

  logits: [B, T, V] float32 (position t predicts token t + 1); input_ids,
  attention_mask: [B, T] -> [B] float32.
  """
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)   # [B, T-1, V]
  target = input_ids[:, 1:].astype(jnp.int32)
  nll = -jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]     # [B, T-1]
  valid = (attention_mask[:, :-1] > 0) & (attention_mask[:, 1:] > 0)
  return jnp.sum(jnp.where(valid, nll, 0.0), axis=-1)


def utf8_bytes(texts: Sequence[str]) -> np.ndarray:
  """[N] float64 UTF-8 byte counts (the release's ``len(s.encode('utf-8'))``)."""
  return np.asarray([len(s.encode("utf-8")) for s in texts], np.float64)


def bits_per_byte(nats: np.ndarray, texts: Sequence[str]) -> np.ndarray:
  """[N] nats -> bits per UTF-8 byte of each text (float64 arithmetic, float32 result)."""
  nbytes = utf8_bytes(texts)
  if np.any(nbytes == 0):
    raise ValueError("bits per byte of an empty text is undefined; drop empty texts")
  return (np.asarray(nats, np.float64) * LOG2_E / nbytes).astype(np.float32)
