"""Every benchmark's bad options: one line naming the allowed values, exit status 2 —
never a KeyError or a traceback — and the machine header they all print."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from platonic_jax.benchmarks import common

CASES = [  # (benchmark module, argv, what the one line must say)
    ("encoders", ["--dtypes=float32"], "argument --dtypes: 'float32' is not one of fp32, bf16"),
    ("encoders", ["--models=resnet18,vit-xl"],
     "'vit-xl' is not one of resnet18, gpt2, dinov2-s, dinov2-b, vit-s16, vit-b16, vit-l14"),
    ("encoders", ["--torch-device=tpu"], "invalid choice: 'tpu'"),
    ("encoders", ["--batch=0"], "argument --batch: must be >= 1"),
    ("encoders_gpt2", ["--dtypes=fp16,bf16"], "'fp16' is not one of fp32, bf16"),
    ("decoders", ["--sizes=7b"], "'7b' is not one of 125m, 1b, tiny"),
    ("decoders", ["--rounds=x"], "argument --rounds: invalid int value: 'x'"),
    ("decoder_memory", ["--modes=both"], "'both' is not one of single, multi"),
    ("metrics", ["--metrics=mutual_knn,knn"], "'knn' is not one of mutual_knn, cycle_knn"),
    ("metrics", ["--sizes=1k"], "argument --sizes: '1k' is not a ','-separated list of integers"),
    ("train", ["--variants=clip"], "'clip' is not one of plain, structure, all_captions"),
    ("train", ["--batch_sizes=0"], "give integers >= 1"),
    ("data", ["--size=500"], "argument --size: give WxH, e.g. 500x375"),
    ("vit_full_size", ["--models=vit_nano_patch3"], "not a supported timm ViT id: vit_nano_patch3"),
    ("device", ["--sections=encoders,gpu"],
     "'gpu' is not one of encoders, decoder, metrics, train, loader"),
    ("device", ["--metric-sizes=64k"], "argument --metric-sizes"),
    ("prh", ["--metrics=mutual_knn,knn"], "'knn' is not one of mutual_knn, cycle_knn"),
    ("prh", ["--language=33x"], "argument --language: '33x': give a comma-separated list of LxD"),
]


@pytest.mark.parametrize("module,argv,says", CASES, ids=[f"{c[0]} {c[1][0]}" for c in CASES])
def test_a_bad_option_is_one_line_naming_the_allowed_values(module, argv, says, capsys):
  main = importlib.import_module(f"platonic_jax.benchmarks.{module}").main
  with pytest.raises(SystemExit) as e:
    main(argv)
  err = capsys.readouterr().err
  assert e.value.code == 2, err
  assert err.count("\n") == 1 and "Traceback" not in err, err
  assert "error: " in err and says in err, err


def test_the_command_line_exits_2_with_one_line():
  """The real entry point, before any heavy import: no usage block, no traceback."""
  out = subprocess.run([sys.executable, "-m", "platonic_jax.benchmarks.encoders",
                        "--dtypes=float32"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
  assert out.returncode == 2 and out.stdout == ""
  assert out.stderr.strip().splitlines() == [
      "encoders.py: error: argument --dtypes: 'float32' is not one of fp32, bf16"]


def test_cpu_info_reads_model_and_isa(tmp_path):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
                     "flags\t\t: fpu sse avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile\n\n"
                     "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
  info = common.cpu_info(str(cpuinfo))
  assert info == {"model": "Intel(R) Xeon(R) Platinum 8481C",
                  "isa": ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]}
  missing = common.cpu_info(str(tmp_path / "absent"))
  assert missing["model"] and missing["isa"] == []   # the platform module's name instead


def test_header_names_cpu_isa_and_jax_devices():
  info = common.machine()
  line = common.header(info)
  assert info["backend"] == "cpu" and info["device_count"] == 8
  assert info["cpu_model"] in line and "backend cpu: 8 x cpu" in line
  assert all(flag in line for flag in info["cpu_isa"])


def test_single_thread_pins_torch_and_xla_to_one_core():
  """``--single_thread`` pins the process before jax starts (XLA sizes its pools from the
  affinity mask; the old ``--xla_cpu_multi_thread_eigen=false`` left XLA on every core)."""
  code = ("import os; from platonic_jax.benchmarks import common; core = common.pin_one_core(); "
          "import jax, jax.numpy as jnp; jnp.ones((64, 64)).sum().block_until_ready(); "
          "print(core, sorted(os.sched_getaffinity(0)))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
  assert out.returncode == 0, out.stderr
  core, mask = out.stdout.split(" ", 1)
  assert mask.strip() == f"[{core}]"


def test_single_thread_after_jax_started_is_refused():
  import jax  # noqa: F401 - the test process has jax already; pinning now would be a lie
  with pytest.raises(RuntimeError, match="before jax is imported"):
    common.pin_one_core()
