"""Every caption as a positive on the offline Flickr30k fixture: one training row per
caption, with its image as the group; the text layer chosen by alignment among every
GPT-2 hidden state; ASIF's anchors are those caption pairs. (Apart from
test_recipes_experiment.py because the fixture's tiny checkpoints need torch.)"""

import numpy as np
import pytest

from helpers import load_config
from test_experiment_flickr import NUM_TRAIN, setup  # noqa: F401 - the Flickr30k fixture
from platonic_jax import experiment, features, plan


@pytest.fixture(scope="module")
def flickr(setup):
  root = setup  # the fake Flickr30k folder and tiny checkpoints of test_experiment_flickr
  c = load_config("flickr", "tiny")
  c.data.manual_dir = str(root / "manual")
  c.modalities.image.encoder = str(root / "resnet")
  c.modalities.text.encoder = str(root / "gpt2")
  c.reference.encoder = str(root / "dinov2")
  c.loss.positives = "all_captions"
  c.modalities.text.layer = "auto"
  c.layer_choice.update(dict(samples=12, k_rule="fixed", k=3))
  c.eval.update(dict(metrics=("mutual_knn",), ks=(3,), bootstrap=20, bootstrap_resample=0,
                     baselines=("asif",), asif_k=20))
  work = root / "recipes_work"
  return c, experiment.train_and_evaluate(c, str(work)), work, NUM_TRAIN


def test_all_captions_train_on_every_caption_of_the_fixture(flickr):
  c, res, work, num_train = flickr
  p = plan.build(c)
  splits = features.extract_all(p.feature_requests(), str(work))
  tr = splits["train"]
  feats, rows, groups = experiment.training_inputs(p.stages["train"].params, tr)
  assert tr.views["image"].shape[0] == num_train
  assert feats["text"].shape[0] == 5 * num_train == len(groups)  # five captions each
  np.testing.assert_array_equal(rows["image"], groups)
  assert np.bincount(groups).tolist() == [5] * num_train
  assert all(np.isfinite(h.loss) for h in res.history)
  # the text layer was chosen on sampled training pairs among every GPT-2 hidden state
  (e,) = [e for e in res.layer_choice.entries if e.modality == "text"]
  assert len(e.layers) == 4 and e.samples == 12 and e.k == 3  # tiny GPT-2: embeddings + 3
  assert e.partner_layers == (-1,) and e.chosen == int(np.argmax(np.array(e.scores)[:, 0]))
  # ASIF's anchors: every caption pair
  assert res.space("asif").info.anchors == 5 * num_train
  assert {pr.name for pr in res.space("asif").retrieval.protocols} == {"1:1", "all_captions"}
