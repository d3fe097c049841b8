"""The docs tell the truth: docs/configuration.md documents exactly the schema of
configs/default.py with its defaults (docs/prh.md that of configs/prh.py), and every command the docs show runs (the cheap
form: configs load and name existing fields, modules answer --help and accept the flags
shown, pytest collects). docs/design.md is left out: it is the design document and also
shows the planned API of open issues."""

import ast
import glob
import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT, config_leaves, env
from configs import default

DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [os.path.join(ROOT, "README.md")]


def _field_tables(doc: str, heading: str = "## ", within: str | None = None):
  """{field path: default cell} of the field tables of ``docs/<doc>``: each table under a
  ``<heading>`section`|Top level`` heading (only below the ``## <within>`` part, when
  given)."""
  section, out = None, {}
  inside = within is None
  for line in open(os.path.join(ROOT, "docs", doc)):
    if within is not None and line.startswith("## "):
      inside, section = line.startswith(f"## {within}"), None
      if inside:
        section = ""
      continue
    m = re.match(rf"^{heading}(`([^`]+)`|Top level)", line)
    if m and inside:
      section = m.group(2) or ""
      continue
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if section is None or len(cells) < 3 or not cells[0].startswith("`"):
      continue
    name = cells[0].strip("`")
    out[f"{section}.{name}" if section else name] = cells[1]
  return out


def _documented():
  """docs/configuration.md's fields (one row documents every modality block's)."""
  return {p.replace("modalities.<name>.", "modalities.image."): v
          for p, v in _field_tables("configuration.md").items()}


def test_configuration_doc_lists_every_field_with_its_default():
  schema = dict(config_leaves(default.get_config()))
  # One row documents the fields of every modality block.
  schema = {p: v for p, v in schema.items() if not p.startswith("modalities.text.")}
  doc = _documented()
  assert sorted(doc) == sorted(schema)
  for path, cell in doc.items():
    assert cell.startswith("`") and cell.endswith("`"), (path, cell)
    assert ast.literal_eval(cell.strip("`")) == schema[path], (path, cell, schema[path])


def _documented_prh():
  """The tables under docs/prh.md's "## Configuration" (### per section)."""
  return _field_tables("prh.md", heading="### ", within="Configuration")


def test_prh_doc_lists_every_field_of_the_sweep_config_with_its_default():
  from configs import prh  # noqa: PLC0415
  schema = dict(config_leaves(prh.get_config()))
  doc = _documented_prh()
  assert sorted(doc) == sorted(schema)
  for path, cell in doc.items():
    assert cell.startswith("`") and cell.endswith("`"), (path, cell)
    assert ast.literal_eval(cell.strip("`")) == schema[path], (path, cell, schema[path])


def _commands():
  """Every command line in the docs' code blocks (backslash continuations joined)."""
  out = set()
  for path in DOCS:
    if path.endswith("design.md"):
      continue
    lines = open(path).read().splitlines()
    i = 0
    while i < len(lines):
      line = lines[i]
      if line.startswith("    "):
        cmd = line.strip()
        while cmd.endswith("\\") and i + 1 < len(lines):
          i += 1
          cmd = cmd[:-1] + " " + lines[i].strip()
        cmd = cmd.split("  #")[0].strip()
        if re.match(r"^(python (run\.py|-m )|pytest)", cmd):
          out.add((os.path.basename(path), cmd))
      i += 1
  return sorted(out)


COMMANDS = _commands()


def test_the_docs_show_commands():
  kinds = {c.split()[1] if c.startswith("python") else "pytest" for _, c in COMMANDS}
  assert {"run.py", "-m", "pytest"} <= kinds, COMMANDS


@pytest.mark.parametrize("doc,cmd", COMMANDS)
def test_doc_command_runs(doc, cmd):
  words = [w for w in cmd.split() if not w.startswith("[")]
  if words[:2] == ["python", "run.py"]:
    config = next(w.split("=", 1)[1] for w in words if w.startswith("--config="))
    file, _, arg = config.partition(":")
    assert os.path.exists(os.path.join(ROOT, file)), (doc, file)
    name = os.path.splitext(os.path.basename(file))[0]
    import importlib
    c = importlib.import_module(f"configs.{name}").get_config(arg or None)
    for w in words:
      if w.startswith("--config."):
        node = c
        for part in w.split("=")[0][len("--config."):].split("."):
          assert part in node, (doc, w)
          node = node[part]
    return
  if words[0] == "pytest":
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *words[1:]],
                       cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (doc, cmd, p.stdout[-2000:] + p.stderr[-2000:])
    return
  module = words[2]
  p = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=env(),
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, (doc, cmd, p.stderr[-2000:])
  for flag in re.findall(r"--[a-z_][a-z_-]*", " ".join(words[3:])):
    assert flag in p.stdout + p.stderr, (doc, cmd, f"{flag} is not an option of {module}")


def test_readme_accelerator_install_lines_match_the_jax_pin():
  import tomllib
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
  pin = next(d for d in deps if re.match(r"jax[<>=]", d))[len("jax"):]
  readme = open(os.path.join(ROOT, "README.md")).read()
  extras = re.findall(r'"jax\[(\w+)\]([^"]+)"', readme)
  assert {e for e, _ in extras} >= {"cuda13", "tpu"}, extras
  assert all(spec == pin for _, spec in extras), (pin, extras)
