"""Nothing crosses between host and device implicitly in the encoders' batch loop and
in feature extraction (``transfer_guard.strict_transfers``; tiny HF checkpoints)."""

from __future__ import annotations

import numpy as np
import pytest

import hf_fixtures as fx
from platonic_jax import encoders
from test_features import _extract, flickr_setup  # noqa: F401 - the fixture
from transfer_guard import strict_transfers


@pytest.mark.parametrize("kind", ["resnet", "gpt2", "dinov2"])
def test_encoder_loop_moves_nothing_implicitly(kind, tmp_path, monkeypatch):
  directory = str(tmp_path)
  if kind == "resnet":
    fx.tiny_resnet(directory)
  elif kind == "gpt2":
    fx.tiny_gpt2(directory)
  else:
    fx.tiny_dinov2(directory)
  items = (fx.random_images(5) if kind != "gpt2" else
           ["a dog", "two cats on a red mat", "x", "a long caption about the market", "y"])
  enc = encoders.load(directory)
  want = enc.encode(items, batch_size=2, layers="all")
  with strict_transfers(monkeypatch):
    got = enc.encode(items, batch_size=2, layers="all")   # 3 batches: prefetched
    if kind == "gpt2":
      enc.bits_per_byte(items, batch_size=2)
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)


def test_feature_extraction_moves_nothing_implicitly(flickr_setup, tmp_path,  # noqa: F811
                                                     monkeypatch):
  """The extraction loop (decode, encode, save chunks); loading an encoder is set-up."""
  _, c = flickr_setup
  want = _extract(c, str(tmp_path / "a"))
  real_load = encoders.load
  with strict_transfers(monkeypatch) as setup:
    def load(*args, **kwargs):
      with setup():
        return real_load(*args, **kwargs)

    monkeypatch.setattr(encoders, "load", load)
    got = _extract(c, str(tmp_path / "b"))
  for s in want:
    for k in want[s].views:
      np.testing.assert_array_equal(got[s].views[k], want[s].views[k])
