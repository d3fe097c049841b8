"""The training recipes on the synthetic world
(docs/training.md states the numbers these tests hold):

- "auto" picks the layer the layered world makes most aligned, for every modality, and
  reports every layer's score;
- the circular heads bring a sample back to itself after the full cycle
  (audio → image → text → audio): recall@1 >= 0.95, every hop recall@1 >= 0.8;
- ASIF beats chance retrieval and is reported beside the trained adapters;
- the modality gap is reported for every space, before and after training, and for each
  temperature of the sweep;
- the STRUCTURE regulariser raises mutual k-NN between the adapted and the frozen spaces
  by > 0.05 for both modalities against λ = 0, losing at most 0.02 of recall@10 (0.1 of
  recall@1);
- every caption as a positive on the Flickr30k fixture: tests/test_recipes_flickr.py (it
  needs torch for the fixture's checkpoints; this module runs on the torch-free CI leg).
"""

import numpy as np
import pytest

from helpers import load_config
from platonic_jax import errors, experiment, features, metrics, plan, store, train, validate
from platonic_jax.data import synthetic
from platonic_jax.evaluation import retrieval

ALIGNED = 2   # the layer the world makes most aligned (of 4; not the last)


def _trainable(c, steps=300):
  """Enough training for the adapters to align (tiny's 40 steps barely move them)."""
  c.train.update(dict(num_steps=steps, lr=1e-2, warmup_steps=10, log_every=100,
                      ckpt_every=1000))
  return c


@pytest.fixture(scope="module")
def world_run(tmp_path_factory):
  c = _trainable(load_config("synthetic", "tiny,audio"))
  c.data.synthetic.update(dict(num_layers=4, aligned_layer=ALIGNED))
  for m in ("image", "text", "audio"):
    c.modalities[m].layer = "auto"
  c.layer_choice.samples = 256
  c.cycle.modalities = ("audio", "image", "text")
  c.eval.update(dict(metrics=("mutual_knn", "cka"), ks=(10,), bootstrap=50,
                     baselines=("cca", "asif"), asif_k=50, gap_temperatures=(0.03, 1.0)))
  work = tmp_path_factory.mktemp("recipes")
  return c, experiment.train_and_evaluate(c, str(work)), work


def test_auto_picks_the_most_aligned_layer_and_reports_every_score(world_run):
  c, res, work = world_run
  entries = {e.modality: e for e in res.layer_choice.entries}
  assert set(entries) == {"image", "text", "audio"}
  for m, e in entries.items():
    assert e.chosen == ALIGNED, (m, e.scores)
    assert e.layers == (0, 1, 2, 3) and len(e.scores) == 4
    assert e.k == 13 and e.samples == 256  # rice: ceil(2 * 256^(1/3))
  pair = entries["image"]
  scores = np.array(pair.scores)
  assert scores.shape == (4, 4) and np.unravel_index(scores.argmax(), (4, 4)) == (2, 2)
  assert entries["audio"].partner == "image" and entries["audio"].partner_layers == (ALIGNED,)
  # The features the adapters trained on are the chosen layer's.
  p = plan.build(c)
  got = features.extract_all(p.feature_requests(), str(work))["train"].views["image"]
  world = synthetic.make_world(synthetic.WorldParams.from_config(c.data.synthetic, seed=0))
  np.testing.assert_array_equal(got, world["train"][f"image@{ALIGNED}"])
  md = open(work / "report" / "report.md").read()
  assert "Layer choice" in md and "→ layer 2" in md


def test_circular_heads_bring_a_sample_back_after_the_full_cycle(world_run):
  _, res, work = world_run
  cyc = res.space("trained").cycle
  assert [h.path for h in cyc.hops] == [("audio", "image"), ("image", "text"),
                                        ("text", "audio")]
  for h in cyc.hops:
    assert h.ranks.recall[1] >= 0.8, h
  for h in cyc.cycles:
    assert len(h.path) == 4 and h.path[0] == h.path[-1] == h.query
    assert h.ranks.recall[1] >= 0.95, h
  assert "audio→image→text→audio" in open(work / "report" / "report.md").read()


def test_asif_beats_chance_beside_the_trained_adapters(world_run):
  _, res, work = world_run
  n = res.space("asif").retrieval.protocols[0].directions[0].ranks.num_queries
  for d in res.space("asif").retrieval.protocols[0].directions:
    assert d.ranks.recall[1] > 20 / n, d  # chance: 1 / n
  info = res.space("asif").info
  assert info.anchors == 512 and info.k == 50 and info.p == 8.0
  assert res.space("asif").alignment.row("mutual_knn").to_ref["mean"] > 0.2
  md = open(work / "report" / "report.md").read()
  assert "baseline: asif" in md and "## After — trained" in md


def test_modality_gap_before_after_and_against_the_temperature(world_run):
  _, res, work = world_run
  gap = res.space("trained").gap
  assert gap.before is not None and gap.frozen is None and "widths differ" in gap.frozen_note
  for g in (gap.before, gap.after):
    assert 0 < g.distance < 2 and 0.5 <= g.separability <= 1
    assert all(0 <= v <= 1 for v in g.variance_share.values())
  assert res.space("cca").gap.before is None
  assert [e.tau for e in res.gap_sweep] == [0.03, 1.0]
  # The same initialisation for every temperature; the trained gaps differ.
  assert res.gap_sweep[0].gap.before == res.gap_sweep[1].gap.before == gap.before
  assert res.gap_sweep[0].gap.after != res.gap_sweep[1].gap.after
  assert "Modality gap against the temperature" in open(work / "report" / "report.md").read()


def test_a_rerun_of_the_recipes_recomputes_nothing(world_run, monkeypatch):
  c, _, work = world_run
  computed = []
  cached = store.cached
  monkeypatch.setattr(store, "cached", lambda w, name, k, doc, compute, t, **kw: cached(
      w, name, k, doc, lambda: computed.append(name) or compute(), t, **kw))
  experiment.train_and_evaluate(c, str(work))
  assert computed == []


def test_structure_regulariser_preserves_the_frozen_neighbourhoods(tmp_path):
  c = _trainable(load_config("synthetic", "tiny"))
  world = synthetic.make_world(synthetic.WorldParams.from_config(c.data.synthetic, seed=0))
  tr, te = world["train"], world["test"]
  frozen = {m: metrics.prepare(te[m]) for m in ("image", "text")}
  out = {}
  for lam in (0.0, 50.0):
    c.loss.update(dict(structure_weight=lam, structure_levels=3, structure_tau=0.07))
    r = train.train_adapters(train.TrainParams.from_config(c, ("image", "text")),
                             {m: tr[m] for m in ("image", "text")}, str(tmp_path / str(lam)))
    emb = {m: r.embed(r.params, m, te[m]) for m in ("image", "text")}
    keep = {m: metrics.score(frozen[m], emb[m], "mutual_knn", k=10)[0] for m in emb}
    ids = np.arange(len(te["image"]))
    ranks = retrieval.retrieval_ranks(emb["image"], emb["text"], ids, ids)
    out[lam] = keep, np.mean(ranks <= 1), np.mean(ranks <= 10)
  (k0, r1_0, r10_0), (k1, r1_1, r10_1) = out[0.0], out[50.0]
  for m in ("image", "text"):
    assert k1[m] > k0[m] + 0.05, out
  assert r10_1 >= r10_0 - 0.02 and r1_1 >= r1_0 - 0.1, out


@pytest.mark.parametrize("change,match", [
    (dict(loss=dict(positives="all_captions")), "one view per sample"),
    (dict(modalities=dict(image=dict(layer="auto"))), "no layers"),
    (dict(adapter=dict(identity="text")), "needs equal widths: set adapter.dim=48"),
    (dict(cycle=dict(modalities=("image", "video"))), "cycle.modalities"),
    (dict(loss=dict(structure_weight=1.0, structure_tau=-1.0)), "loss.structure_tau"),
    (dict(eval=dict(asif_k=0, gap_temperatures=(0.0,))), "eval.asif_k=0"),
    (dict(data=dict(synthetic=dict(num_layers=3)), modalities=dict(text=dict(layer=5))),
     r"modalities.text.layer=5: allowed 'auto' or a layer in \[-3, 3\)"),
])
def test_bad_recipe_fields_name_the_problem_and_the_fix(change, match):
  c = load_config("synthetic", "tiny")

  def apply(node, d):
    for k, v in d.items():
      if isinstance(v, dict):
        apply(node[k], v)
      else:
        node[k] = v

  apply(c, change)
  with pytest.raises(errors.ConfigError, match=match):
    validate.check(c)
