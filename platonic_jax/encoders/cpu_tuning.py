"""The CPU-only choices of an architecture, chosen by what this CPU measures.

Three things in the encoder registry's contract run only on CPU meshes, each tuned on the
project's 2-core AMD EPYC (AVX-512, no AMX):

- ``cpu_variant`` -- ResNet's Winograd 3x3 convolutions (in bf16 on a CPU with AMX: its
  convolutions as bf16 dots, conv_dots.py), the ViT family's attention over groups of
  samples side by side;
- ``CPU_MICRO_BATCH`` -- each device's batch as a ``lax.map`` over micro-batches whose
  activations stay in the caches;
- ``CPU_COMPILER_OPTIONS`` -- ResNet's YNNPACK convolution fusions.

The defaults are every knob an architecture has, on, unless it says otherwise through
``cpu_defaults(module)`` (ResNet: no micro-batches, except for its bf16 dots on AMX,
which run in micro-batches and without YNNPACK).

On another CPU the best set can differ (on an Intel Xeon with AMX one run measured
DINOv2-S at 0.46x PyTorch fp32 with the EPYC's choices; issue 17). So the first time an
architecture of a given shape is loaded on a CPU, ``choose`` compiles each combination
of the knobs that architecture has (at most 2^3), times one forward of a small batch
(the fastest of ``_RUNS`` calls after a warm-up, at the model's own input size), and
keeps the fastest -- the defaults unless another is at least ``MARGIN`` faster,
so noise does not flip them. Every combination computes the same features (to ~1e-6,
tests/test_encoders*.py), so the choice changes speed, never results.

The choice is cached in ``cpu_tuning.json`` under ``$PLATONIC_JAX_CACHE_DIR`` (default
``$XDG_CACHE_HOME/platonic_jax``, else ``~/.cache/platonic_jax``), keyed by the CPU
model, its ISA flags, the usable cores, the jax version, the device count, the
architecture, a hash of the module's configuration, the dtype and the probe's input
shape: a later load of the same model on the same kind of machine reads it back (a
cluster of identical nodes can share the file). One log line at INFO says what was
chosen, from where, and the times.

``PLATONIC_JAX_CPU_TUNING`` (environment):
  ``probe`` (default) -- as above;
  ``defaults``        -- never probe, run the EPYC-tuned defaults (what the test suite
                         sets, tests/conftest.py: hundreds of tiny models, each would be
                         probed; the probe itself is tested in tests/test_cpu_tuning.py).
Models above ``PROBE_MAX_PARAMS`` parameters keep the defaults without a probe (one
forward of ViT-g on 2 cores takes tens of seconds; the probe would take minutes), and so
do model-parallel meshes (their GSPMD program takes no micro-batches) and meshes that
span processes (each would choose by its own timings; one mesh runs one program).

The same cache holds ``auto_dtype``'s AMX measurement (``bf16_speedup``): whether bf16
dots with float32 accumulation beat float32 ones on this CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import time
from typing import Any, Callable

import numpy as np

from platonic_jax import host_cpu

log = logging.getLogger(__name__)

ENV_MODE = "PLATONIC_JAX_CPU_TUNING"
ENV_CACHE_DIR = "PLATONIC_JAX_CACHE_DIR"
MODES = ("probe", "defaults")
MARGIN = 0.05            # a candidate must beat the defaults by 5% to replace them
PROBE_MAX_PARAMS = 400_000_000
_RUNS = 3                # timed calls per candidate, after one warm-up (compile + run)
_TEXT_PROBE_TOKENS = 32  # a caption's bucket (encoders/core.py: multiples of 16)


@dataclasses.dataclass(frozen=True)
class CpuChoice:
  """Which of an architecture's CPU-only knobs run (True: its cpu_variant /
  CPU_MICRO_BATCH / CPU_COMPILER_OPTIONS; a knob it lacks is False).

  ``source``: "defaults" (not probed; ``reason`` says why), "probe" (measured now) or
  "cache" (measured earlier on this kind of machine). ``times_ms``: the probe's fastest
  forward per candidate (``label()`` -> ms), empty when not probed."""
  variant: bool
  micro_batch: bool
  compiler_options: bool
  source: str = "defaults"
  reason: str = ""
  times_ms: tuple[tuple[str, float], ...] = ()

  def knobs(self) -> tuple[bool, bool, bool]:
    return (self.variant, self.micro_batch, self.compiler_options)

  def label(self) -> str:
    """E.g. "variant+micro_batch" ("none" when every knob is off)."""
    on = [n for n, v in zip(_KNOBS, self.knobs()) if v]
    return "+".join(on) or "none"


_KNOBS = ("variant", "micro_batch", "compiler_options")


def mode() -> str:
  value = os.environ.get(ENV_MODE, "probe") or "probe"
  if value not in MODES:
    raise ValueError(f"{ENV_MODE}={value!r}: allowed values {MODES} ('probe' measures "
                     "the CPU-only encoder variants once per CPU model, 'defaults' never "
                     "probes)")
  return value


def available(arch: Any) -> tuple[bool, bool, bool]:
  """Which knobs ``arch`` has: (cpu_variant, CPU_MICRO_BATCH > 0, CPU_COMPILER_OPTIONS)."""
  return (hasattr(arch, "cpu_variant"), getattr(arch, "CPU_MICRO_BATCH", 0) > 0,
          bool(getattr(arch, "CPU_COMPILER_OPTIONS", None)))


def defaults(arch: Any, module: Any, reason: str = "") -> CpuChoice:
  """The choice that runs unprobed and that the probe keeps unless another is clearly
  faster: ``arch.cpu_defaults(module)`` where the architecture has it (ResNet: bf16 on an
  AMX CPU wants other knobs than the EPYC's), else every knob ``arch`` has, on (the EPYC
  tuning)."""
  has = available(arch)
  want = arch.cpu_defaults(module) if hasattr(arch, "cpu_defaults") else has
  return CpuChoice(*(h and w for h, w in zip(has, want)), reason=reason)


def candidates(arch: Any, module: Any) -> list[CpuChoice]:
  """Every combination of the knobs ``arch`` has, ``defaults(arch, module)`` first; a
  knob it lacks stays off (it has nothing to turn on)."""
  axes = [(True, False) if h else (False,) for h in available(arch)]
  first = defaults(arch, module)
  rest = [CpuChoice(*combo) for combo in itertools.product(*axes)]
  return [first] + [c for c in rest if c.knobs() != first.knobs()]


# ----- the cache ------------------------------------------------------------------------
def cache_dir() -> str:
  if os.environ.get(ENV_CACHE_DIR):
    return os.path.expanduser(os.environ[ENV_CACHE_DIR])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "platonic_jax")


def cache_path() -> str:
  return os.path.join(cache_dir(), "cpu_tuning.json")


def read_cache() -> dict:
  """The cache's entries ({} when there is none). A file that is not a JSON object is
  reported and ignored (the next probe rewrites it), never a failed load."""
  path = cache_path()
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    return {}
  except (OSError, ValueError) as e:
    log.warning("CPU tuning cache %s is unreadable (%s); probing again and rewriting it",
                path, e)
    return {}
  if not isinstance(data, dict):
    log.warning("CPU tuning cache %s is not a JSON object; probing again and rewriting it",
                path)
    return {}
  return data


def write_entry(key: str, entry: dict) -> None:
  """``entry`` under ``key``, written atomically (a temporary file renamed over the old
  one), so concurrent loads never read half a file. A cache that cannot be written
  (read-only home) costs a warning and a probe next time, not the load."""
  from platonic_jax import workdir  # noqa: PLC0415 - the project's atomic writer
  path = cache_path()
  try:
    data = read_cache()
    data[key] = entry
    workdir.atomic_write_json(path, dict(sorted(data.items())))   # umask's mode: shareable
  except OSError as e:
    log.warning("CPU tuning: cannot write %s (%s); set %s to a writable directory to keep "
                "the probe's result", path, e, ENV_CACHE_DIR)


def machine_key() -> str:
  """What makes two machines the same for tuning: CPU model, ISA, cores, jax, devices."""
  import jax  # noqa: PLC0415 - callers have a backend already
  cpu = host_cpu.cpu_info()
  return (f"{cpu['model']}|{' '.join(cpu['isa'])}|cores={host_cpu.usable_cores()}"
          f"|jax={jax.__version__}|devices={jax.device_count()}")


# ----- choosing -------------------------------------------------------------------------
def pick(times: dict[CpuChoice, float], margin: float = MARGIN) -> CpuChoice:
  """The defaults (the first key) unless another candidate is faster by ``margin``."""
  default = next(iter(times))
  best = min(times, key=times.get)
  return best if times[best] < (1 - margin) * times[default] else default


def choose_by_probe(key: str, cands: list[CpuChoice],
                    time_one: Callable[[CpuChoice], float], what: str) -> CpuChoice:
  """The cached choice under ``key``, else ``time_one`` (seconds) of every candidate ->
  ``pick`` -> cached. ``what`` names the model in the log line."""
  entry = read_cache().get(key)
  if isinstance(entry, dict) and isinstance(entry.get("choice"), dict):
    try:
      choice = CpuChoice(**{k: bool(entry["choice"][k]) for k in _KNOBS}, source="cache",
                         times_ms=tuple(sorted(entry.get("times_ms", {}).items())))
      log.info("%s: CPU variant %s (cached in %s)", what, choice.label(), cache_path())
      return choice
    except (KeyError, TypeError):
      pass   # an entry of another layout: probe again and overwrite it
  t0 = time.perf_counter()
  times = {c: time_one(c) for c in cands}
  best = pick(times)
  times_ms = {c.label(): round(1e3 * t, 3) for c, t in times.items()}
  write_entry(key, {"choice": {k: v for k, v in zip(_KNOBS, best.knobs())},
                    "times_ms": times_ms, "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    "what": what})
  log.info("%s: CPU variant %s, chosen by a %.1f s probe of %d candidates (forward ms: %s; "
           "cached in %s; %s=defaults skips the probe)", what, best.label(),
           time.perf_counter() - t0, len(cands),
           ", ".join(f"{k} {v:.1f}" for k, v in times_ms.items()), cache_path(), ENV_MODE)
  return dataclasses.replace(best, source="probe", times_ms=tuple(sorted(times_ms.items())))


def _fastest(call: Callable[[], Any], runs: int) -> float:
  """Seconds of the fastest of ``runs`` calls of ``call`` (a jitted step; blocked on),
  after one warm-up call that also compiles it."""
  import jax  # noqa: PLC0415
  jax.block_until_ready(call())
  best = math.inf
  for _ in range(runs):
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    best = min(best, time.perf_counter() - t0)
  return best


def _num_params(params: Any) -> int:
  import jax  # noqa: PLC0415
  return sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params))


def _module_hash(module: Any) -> str:
  return hashlib.sha1(repr(module).encode()).hexdigest()[:16]


def probe_inputs(enc: Any, per_device: int) -> tuple[np.ndarray, ...]:
  """Blank inputs of ``enc``'s own size for ``per_device`` rows on each device (timings
  do not depend on the values: no data-dependent control flow in the forwards)."""
  b = per_device * int(enc.mesh.size)
  if enc.modality == "image":
    h, w = enc._image_size()
    return (np.zeros((b, h, w, 3), np.float32),)
  return (np.zeros((b, _TEXT_PROBE_TOKENS), np.int32),
          np.ones((b, _TEXT_PROBE_TOKENS), np.int32))


def choose(enc: Any, params: Any) -> CpuChoice:
  """The CPU choice for the encoder ``enc`` being built (``Encoder.__init__``, before its
  parameters are placed) with its converted ``params``."""
  from platonic_jax.encoders import partition  # noqa: PLC0415 - avoids an import cycle
  cands = candidates(enc.arch, enc.module)
  if len(cands) == 1:
    return dataclasses.replace(cands[0], reason="nothing to choose between")
  if mode() == "defaults":
    return defaults(enc.arch, enc.module, f"{ENV_MODE}=defaults")
  if partition.model_parallel_size(enc.mesh) > 1:
    return defaults(enc.arch, enc.module, "model-parallel mesh")
  if enc.mesh.is_multi_process:
    # Each process would time its own candidates and might pick another program than
    # its peers: one mesh must run one program.
    return defaults(enc.arch, enc.module, "mesh spans processes")
  n_params = _num_params(params)
  if n_params > PROBE_MAX_PARAMS:
    log.info("%s: CPU variant defaults, not probed (%.2gB parameters > %.2gB: the probe "
             "would take minutes)", enc.name, n_params / 1e9, PROBE_MAX_PARAMS / 1e9)
    return defaults(enc.arch, enc.module, "too large to probe quickly")
  per_device = 2 * max(getattr(enc.arch, "CPU_MICRO_BATCH", 0), 4)
  inputs = probe_inputs(enc, per_device)
  key = "|".join((machine_key(), enc.arch.__name__, _module_hash(enc.module),
                  str(np.dtype(enc.dtype)), "x".join(map(str, inputs[0].shape))))
  variant: list = []   # (module, params) of cpu_variant, made once when first timed
  placed: dict[int, Any] = {}   # id(converted params) -> on the mesh; a variant that keeps
  # the params (the ViT family's) shares one placed copy

  def time_one(c: CpuChoice) -> float:
    if c.variant and not variant:
      variant.append(enc.arch.cpu_variant(enc.module, params))
    module, p = variant[0] if c.variant else (enc.module, params)
    if id(p) not in placed:
      placed[id(p)] = enc._place(p)
    fn = enc._compile(module, c, "", (enc.num_layers - 1,))
    on_mesh = [enc._to_mesh(x) for x in inputs]
    return _fastest(lambda: fn(placed[id(p)], *on_mesh), _RUNS)

  try:
    return choose_by_probe(key, cands, time_one, enc.name)
  finally:
    placed.clear()   # the probe's copies of the parameters
    variant.clear()


# ----- bf16 on this CPU (auto_dtype) ---------------------------------------------------------
# A transformer layer's MLP input at a micro-batch: [4 x 257, 768] x [768, 3072].
_DOT_SHAPE = (1028, 768, 3072)


def measure_bf16_speedup(runs: int = 5) -> tuple[float, float]:
  """(fp32, bf16) seconds of one jitted ``_DOT_SHAPE`` dot on this host's first CPU
  device, the fastest of ``runs`` after a warm-up; bf16 = bf16 operands, float32
  accumulation and result, as the encoders' mixed precision (common.dense)."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  m, k, n = _DOT_SHAPE
  device = jax.local_devices(backend="cpu")[0]
  rng = np.random.default_rng(0)
  x = jax.device_put(rng.standard_normal((m, k), np.float32), device)
  w = jax.device_put(rng.standard_normal((k, n), np.float32) / np.sqrt(k), device)
  out = []
  for dtype in (jnp.float32, jnp.bfloat16):
    xd, wd = x.astype(dtype), w.astype(dtype)
    dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32,
                                       precision=jax.lax.Precision.HIGHEST))
    out.append(_fastest(lambda: dot(xd, wd), runs))
  return out[0], out[1]


def bf16_speedup() -> float:
  """fp32 time / bf16 time of ``measure_bf16_speedup``, measured once per machine
  (``machine_key``) and cached beside the encoders' choices."""
  key = machine_key() + "|bf16_dot_speedup"
  entry = read_cache().get(key)
  if isinstance(entry, dict) and isinstance(entry.get("speedup"), (int, float)):
    return float(entry["speedup"])
  fp32, bf16 = measure_bf16_speedup()
  speedup = round(fp32 / bf16, 3)   # as stored: the first answer equals the cached ones
  m, k, n = _DOT_SHAPE
  write_entry(key, {"speedup": speedup, "fp32_gflops": round(2 * m * k * n / fp32 / 1e9, 1),
                    "bf16_gflops": round(2 * m * k * n / bf16 / 1e9, 1),
                    "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
  log.info("bf16 dots on this CPU: %.1fx fp32's (%.0f vs %.0f GFLOP/s; cached in %s)",
           speedup, 2 * m * k * n / bf16 / 1e9, 2 * m * k * n / fp32 / 1e9, cache_path())
  return speedup

