"""The Platonic sweep end to end, offline: a fake ``minhuh/prh`` (parquet, PNG images,
two captions a row), two tiny ViTs (ImageNet-21K AugReg, DINOv2) and two tiny decoder LMs
(Llama, BLOOM), the full command; a re-run that recomputes nothing; SIGTERM and kill -9
mid-sweep, resumed to the same numbers; bad inputs named with their fix.
(The numbers against the release's own code: tests/test_prh_scores.py.)"""

import csv
import glob
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import hf_fixtures as fx
import prh_fixtures as pfx
import release_reference as rel
import timm_fixtures as tfx
from helpers import ROOT, env
from platonic_jax import errors, store
from platonic_jax.metrics import __main__ as cli
from platonic_jax.prh import data as data_lib
from platonic_jax.prh import extract, models, release_files, sweep, validate

N = 32
METRICS = ("mutual_knn", "cycle_knn", "cka", "cknna", "svcca")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("prh_inputs")
  d = lambda name: str(root / name)  # noqa: E731
  pfx.fake_prh(d("prh"), n=40)
  tfx.tiny_timm(d("vit_tiny_patch16_224.augreg_in21k"), "vit_tiny_patch16_224.augreg_in21k",
                img_size=32, input_size=(32, 32))
  tfx.tiny_timm(d("vit_small_patch14_dinov2.lvd142m"), "vit_small_patch14_dinov2.lvd142m",
                img_size=28, input_size=(28, 28), depth=3)
  fx.tiny_decoder(d("llama-tiny"), "llama")
  fx.tiny_decoder(d("bloom-tiny"), "bloom")
  return {"data": d("prh"), "vision": (d("vit_tiny_patch16_224.augreg_in21k"),
                                       d("vit_small_patch14_dinov2.lvd142m")),
          "language": (d("llama-tiny"), d("bloom-tiny"))}


def _args(inputs, workdir, *extra):
  return ["run.py", "--config=configs/prh.py", f"--workdir={workdir}",
          f"--config.data.path={inputs['data']}", f"--config.data.num_samples={N}",
          "--config.models.set=", f"--config.models.vision={inputs['vision']!r}",
          f"--config.models.language={inputs['language']!r}",
          "--config.features.language_dtype=float32", "--config.features.chunk_size=12",
          "--config.features.batch_size=8", "--config.scores.k=5", "--config.scores.cca_dim=4",
          "--config.scores.calibration_K=19", f"--config.scores.metrics={METRICS!r}", *extra]


def _run(inputs, workdir, *extra, timeout=600):
  return subprocess.run([sys.executable, *_args(inputs, workdir, *extra)], cwd=ROOT, env=env(),
                        capture_output=True, text=True, timeout=timeout)


def _start(inputs, workdir, *extra):
  return subprocess.Popen([sys.executable, *_args(inputs, workdir, *extra)], cwd=ROOT,
                          env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _wait_for(pattern, proc, timeout=300):
  t0 = time.time()
  while not glob.glob(pattern, recursive=True):
    assert proc.poll() is None, "the run ended before the point it was to be stopped at"
    assert time.time() - t0 < timeout
    time.sleep(0.02)


def _scores(workdir):
  return glob.glob(os.path.join(str(workdir), "stages", "scores", "**", "*.json"),
                   recursive=True)


def _rows(workdir):
  with open(os.path.join(str(workdir), "report", "matrix.csv")) as f:
    return list(csv.DictReader(f))


def _stage_mtimes(workdir):
  files = glob.glob(os.path.join(str(workdir), "stages", "**", "*.json"), recursive=True)
  files += glob.glob(os.path.join(str(workdir), "features", "**", "*"), recursive=True)
  return {f: os.stat(f).st_mtime_ns for f in files}


@pytest.fixture(scope="module")
def finished(inputs, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("prh_run")
  p = _run(inputs, workdir)
  assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
  return workdir, p


def test_the_full_command_writes_the_matrix_report_and_figures(finished, inputs):
  workdir, p = finished
  rows = _rows(workdir)
  assert len(rows) == len(METRICS) * 2 * 2
  for r in rows:
    assert 0 <= int(r["language_layer"]) <= 3 and 0 <= int(r["vision_layer"]) <= 2
    assert r["K"] == "19" and 0 < float(r["p_value"]) <= 1 and 0 <= float(r["calibrated"]) <= 1
    assert float(r["language_bpb"]) > 0 and int(r["language_params"]) > 0
  fams = {(r["language"], r["language_family"]) for r in rows} | {
      (r["vision"], r["vision_family"]) for r in rows}
  assert {f for _, f in fams} == {"LLaMA", "BLOOMZ", "ImageNet-21K", "DINOv2"}
  doc = json.load(open(os.path.join(workdir, "report", "matrix.json")))
  assert len(doc["scores"]) == len(rows) and doc["metrics"] == list(METRICS)
  assert {m["name"] for m in doc["language"]} == set(inputs["language"])
  md = open(os.path.join(workdir, "report", "report.md")).read()
  for metric in METRICS:
    assert f"## {metric}" in md
    for kind in ("heatmap", "vs_bpb", "vs_params"):
      assert os.path.getsize(os.path.join(workdir, "report", f"{metric}_{kind}.png")) > 1000
  assert "Strongest pairs by mutual_knn" in p.stdout
  # every layer of every model is stored: the ViTs' blocks, the decoders' L + 1 states
  infos = {m["name"]: m for m in doc["language"] + doc["vision"]}
  assert [infos[v]["num_layers"] for v in inputs["vision"]] == [2, 3]
  assert [infos[v]["num_layers"] for v in inputs["language"]] == [4, 4]


def test_a_rerun_recomputes_nothing(finished, inputs):
  workdir, _ = finished
  before, rows = _stage_mtimes(workdir), _rows(workdir)
  p = _run(inputs, workdir)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "extracting" not in p.stderr and "prepared" not in p.stderr, p.stderr[-3000:]
  assert _stage_mtimes(workdir) == before
  assert _rows(workdir) == rows


def test_sigterm_and_kill_minus_9_resume_to_the_same_numbers(finished, inputs, tmp_path):
  workdir = tmp_path / "w"
  # SIGTERM after the first feature chunk: the chunk is kept, exit 0, "preempted".
  proc = _start(inputs, workdir)
  _wait_for(os.path.join(str(workdir), "features", "*", ".chunks-12", "*.npz"), proc)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0 and "preempted (SIGTERM)" in out, out[-3000:]
  assert not _scores(workdir)
  # kill -9 mid-sweep, once the first scores are stored.
  proc = _start(inputs, workdir)
  _wait_for(os.path.join(str(workdir), "stages", "scores", "**", "*.json"), proc)
  proc.kill()
  proc.wait()
  assert 0 < len(_scores(workdir)) < len(METRICS) * 4
  p = _run(inputs, workdir)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "resuming" not in p.stderr  # the killed run had finished every feature entry
  assert _rows(workdir) == _rows(finished[0])


def test_a_bad_config_lists_every_problem_before_any_work(inputs, tmp_path):
  p = _run(inputs, tmp_path / "w", "--config.models.set=nope", "--config.scores.q=2.0",
           "--config.features.vision_dtype=fp8", "--config.scores.metrics=('mutual_knn','x')")
  assert p.returncode == 2
  for field in ("models.set='nope'", "scores.q=2.0", "features.vision_dtype='fp8'",
                "unknown ['x']"):
    assert field in p.stderr, p.stderr
  assert "Traceback" not in p.stderr and not os.path.exists(tmp_path / "w")


def test_a_model_the_registry_cannot_load_is_named_and_the_others_are_kept(inputs, tmp_path):
  bad = tmp_path / "unsupported-model"
  bad.mkdir()
  (bad / "config.json").write_text(json.dumps({"model_type": "not_an_architecture"}))
  config = pfx.sweep_config({
      "data.path": inputs["data"], "data.num_samples": N, "models.set": "",
      "models.language": (inputs["language"][0],),
      "models.vision": (str(bad), inputs["vision"][0]),
      "features.language_dtype": "float32", "scores.k": 5, "scores.metrics": ("mutual_knn",)})
  workdir = tmp_path / "w"
  with pytest.raises(errors.InputError) as e:
    sweep.run(config, str(workdir))
  msg = str(e.value)
  assert str(bad) in msg and "not_an_architecture" in msg and "Fix:" in msg
  assert "the others' features are saved" in msg
  manifests = glob.glob(os.path.join(str(workdir), "features", "*", "manifest.json"))
  assert len(manifests) == 2  # the good vision and language models


def test_nan_features_of_an_extracted_model_are_named_and_never_stored(inputs, tmp_path,
                                                                      monkeypatch):
  """A model whose features overflow (NaN in one layer, as a bf16 decoder can) fails with
  its name, the layer and the dtype fix; nothing of it is stored, the others are."""
  real = extract._chunk_arrays

  def overflowing(enc, model, rows, batch_size):
    out = real(enc, model, rows, batch_size)
    if model.name == inputs["language"][1]:
      out["feats"][3, 2, 0] = np.nan
    return out

  monkeypatch.setattr(extract, "_chunk_arrays", overflowing)
  config = pfx.sweep_config({
      "data.path": inputs["data"], "data.num_samples": N, "models.set": "",
      "models.language": inputs["language"], "models.vision": (inputs["vision"][0],),
      "features.language_dtype": "bfloat16", "scores.k": 5,
      "scores.metrics": ("mutual_knn",)})
  workdir = tmp_path / "w"
  with pytest.raises(errors.InputError) as e:
    sweep.run(config, str(workdir))
  msg = str(e.value)
  assert inputs["language"][1] in msg and "layer 2" in msg and "row 3" in msg
  assert "--config.features.language_dtype=float32" in msg and inputs["language"][0] not in msg
  assert len(glob.glob(os.path.join(str(workdir), "features", "*", "manifest.json"))) == 2
  chunks = glob.glob(os.path.join(str(workdir), "features", "*", ".chunks-*", "*.npz"))
  assert not chunks  # the finished entries dropped theirs; the bad model saved none


def test_a_hub_id_that_cannot_be_fetched_names_the_model(inputs, tmp_path):
  config = pfx.sweep_config({
      "data.path": inputs["data"], "data.num_samples": N, "models.set": "",
      "models.language": ("nobody/no-such-model",), "models.vision": (inputs["vision"][0],),
      "scores.metrics": ("mutual_knn",), "scores.k": 5})
  with pytest.raises(errors.InputError, match="nobody/no-such-model.*HF_HUB_OFFLINE"):
    sweep.run(config, str(tmp_path / "w"))


# ----- the release's .pt files ---------------------------------------------------------------

@pytest.fixture(scope="module")
def pt_files(tmp_path_factory):
  return pfx.release_files(str(tmp_path_factory.mktemp("pt")), n=60)


def _cli(*argv):
  out, err = io.StringIO(), io.StringIO()
  import contextlib
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = cli.main(list(argv))
  return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("metric", ["mutual_knn", "cka"])
def test_cli_scores_two_release_files_as_the_release(pt_files, metric):
  vis, lang = pt_files["vit_small_patch14_dinov2.lvd142m"], pt_files["bigscience/bloomz-tiny"]
  rc, out, err = _cli(vis, lang, f"--metric={metric}", "--k=10", "--json")
  assert rc == 0, err
  got = json.loads(out)
  x = [torch.nn.functional.normalize(t, dim=-1) for t in rel.load_prepared(vis, False)]
  y = rel.load_prepared(lang, False)
  y = [torch.nn.functional.normalize(y[:, i], dim=-1) for i in range(y.shape[1])]
  best, pair = rel.compute_score(x, y, metric=metric, topk=10)
  assert got["value"] == pytest.approx(float(best), abs=1e-5)
  assert tuple(got["layers"]) == pair


def test_bad_release_files_are_named_with_the_fix(pt_files, tmp_path):
  good = pt_files["vit_tiny_patch16_224.augreg_in21k"]
  no_feats = str(tmp_path / "no_feats.pt")
  torch.save({"num_params": 3}, no_feats)
  rc, _, err = _cli(no_feats, good)
  assert rc == 2 and no_feats in err and "has no 'feats'" in err and "extract_features" in err
  nan = str(tmp_path / "nan.pt")
  f = torch.load(good, weights_only=True)["feats"].clone()
  f[5, 2, 3] = float("nan")
  torch.save({"feats": f}, nan)
  rc, _, err = _cli(nan, good)
  assert rc == 2 and nan in err and "layer 2" in err and "re-extract" in err
  short = str(tmp_path / "short.pt")
  torch.save({"feats": torch.load(good, weights_only=True)["feats"][:50]}, short)
  rc, _, err = _cli(short, good)
  assert rc == 2 and "50 samples" in err and "60" in err


def test_the_sweep_reads_a_directory_of_release_files(pt_files, tmp_path):
  source = os.path.dirname(next(iter(pt_files.values())))
  base = {"features.source": source, "models.set": "", "models.language":
          tuple(pfx.LANGUAGE_PT), "models.vision": tuple(pfx.VISION_PT),
          "data.num_samples": 60, "scores.metrics": ("mutual_knn",),
          "scores.calibration_K": 0}
  res = sweep.run(pfx.sweep_config(base), str(tmp_path / "w"))
  assert len(res.scores) == 4
  lang = {m.name: m for m in res.language}
  assert lang["bigscience/bloomz-tiny"].bpb == pytest.approx(1.2)
  assert lang["huggyllama/llama-tiny"].num_params == 2_000_000
  # a file with another N: named, with the fix
  odd = tmp_path / "odd"
  odd.mkdir()
  for name, path in pt_files.items():
    d = torch.load(path, weights_only=True)
    if name == "huggyllama/llama-tiny":
      d["feats"] = d["feats"][:50]
    torch.save(d, odd / os.path.basename(path))
  with pytest.raises(errors.InputError, match="50 samples but .* has 60.*same pairs"):
    sweep.run(pfx.sweep_config({**base, "features.source": str(odd)}), str(tmp_path / "w2"))
  # a missing file: listed by validation with the release's file name
  problems = validate.problems(pfx.sweep_config({**base, "models.vision": ("vit_x.mae",)}))
  assert any("vit_x.mae_pool-cls.pt" in p for p in problems)


def test_torch_is_optional_with_a_clear_message(monkeypatch, pt_files):
  monkeypatch.setitem(sys.modules, "torch", None)
  path = next(iter(pt_files.values()))
  with pytest.raises(errors.InputError, match="needs PyTorch.*pip install torch"):
    release_files.load(path)
  rc, out, err = _cli(path, path, "--metric=mutual_knn", "--k=10")  # the CLI: one line
  assert rc == 2 and not out and err.startswith("error: ") and "needs PyTorch" in err
  assert len(err.strip().splitlines()) == 1


def test_the_issue_command_on_two_release_files(pt_files):
  """python -m platonic_jax.metrics X.pt Y.pt --metric=mutual_knn --k=10, as a process."""
  x, y = pt_files["vit_tiny_patch16_224.augreg_in21k"], pt_files["huggyllama/llama-tiny"]
  p = subprocess.run([sys.executable, "-m", "platonic_jax.metrics", x, y,
                      "--metric=mutual_knn", "--k=10"], cwd=ROOT, env=env(),
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  assert p.stdout.startswith("mutual_knn = ") and "(layers a[" in p.stdout


# ----- small parts -----------------------------------------------------------------------------

def test_the_release_sets_and_names():
  lang, vis = models.resolve_set("val", (), ())
  assert len(lang) == 12 and len(vis) == 17
  from platonic_jax.encoders import timm_format
  assert vis == timm_format.STUDY_MODELS
  assert models.resolve_set("val", (), ("a",)) == (lang, ("a",))
  assert {models.family(v, "vision") for v in vis} == {
      "ImageNet-21K", "MAE", "DINOv2", "CLIP", "CLIP (I12K ft)"}
  assert models.load_id("vit_base_patch16_224.mae", "vision") == "timm/vit_base_patch16_224.mae"
  assert models.release_filename("huggyllama/llama-7b", "language") == \
      "huggyllama_llama-7b_pool-avg.pt"
  assert models.release_filename("huggyllama/llama-7b", "language", 1) == \
      "huggyllama_llama-7b_pool-avg_cid-1.pt"
  assert models.release_filename("vit_base_patch16_224.mae", "vision", 1) == \
      "vit_base_patch16_224.mae_pool-cls.pt"


def test_model_parallel_is_the_fewest_devices_that_hold_the_weights():
  gb = 1 << 30
  assert extract.choose_model_parallel(130 * gb, None, 8) == 1      # CPU: no limit reported
  assert extract.choose_model_parallel(2 * gb, 80 * gb, 8) == 1
  assert extract.choose_model_parallel(130 * gb, 80 * gb, 8) == 4   # Llama-65B bf16, 80 GB
  assert extract.choose_model_parallel(130 * gb, 139 * gb, 8) == 2
  assert extract.choose_model_parallel(900 * gb, 80 * gb, 8) == 8


def test_the_data_source_reads_the_hub_layout_and_names_problems(inputs, tmp_path):
  src = data_lib.PrhSource("minhuh/prh", "wit_1024", "train", 10, inputs["data"])
  pairs = data_lib.load(src)
  assert len(pairs) == 10 and isinstance(pairs.images[0], bytes)
  assert pairs.texts(1)[3] == "a second caption of image 3"
  with pytest.raises(errors.InputError, match="caption_idx=5"):
    pairs.texts(5)
  with pytest.raises(errors.InputError, match="has 40 rows, fewer than data.num_samples=99"):
    data_lib.load(data_lib.PrhSource("minhuh/prh", "wit_1024", "train", 99, inputs["data"]))
  with pytest.raises(errors.InputError, match="no parquet files of split 'test'"):
    data_lib.load(data_lib.PrhSource("minhuh/prh", "wit_1024", "test", 10, inputs["data"]))
  with pytest.raises(errors.InputError, match="huggingface-cli download nobody/none .*data.path"):
    data_lib.load(data_lib.PrhSource("nobody/none", "wit_1024", "train", 10, ""))


def test_stage_results_are_keyed_by_their_inputs(pt_files, tmp_path):
  """Changing k re-keys the k-NN scores only; a stored result with other recorded inputs
  is never used (store.is_stored)."""
  from platonic_jax.prh import plan as plan_lib
  source = os.path.dirname(next(iter(pt_files.values())))
  base = {"features.source": source, "models.set": "", "models.language":
          tuple(pfx.LANGUAGE_PT), "models.vision": tuple(pfx.VISION_PT),
          "scores.metrics": ("mutual_knn", "cka")}
  a = plan_lib.build(pfx.sweep_config(base))
  b = plan_lib.build(pfx.sweep_config(base, **{"scores.k": 7}))
  changed = {n for n in a.keys if a.keys[n] != b.keys[n]}
  assert changed and all(n.startswith("scores/mutual_knn/") for n in changed)
  name = next(iter(changed))
  assert not store.is_stored(str(tmp_path), name, a.keys[name], a.docs[name])
