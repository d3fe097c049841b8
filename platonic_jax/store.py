"""Stage keys and the store of stage results.

A stage's key is the hash of exactly its inputs: its kind, its typed parameters and the
keys of the stages it reads (``inputs`` / ``key``). Results live in
``<workdir>/stages/<stage name>/<key>.json`` beside the inputs that made them; a stored
result is used only when its recorded inputs equal the request's, so a changed input can
never be served a stale result, and going back to an earlier config finds its results
again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Callable, Mapping

from platonic_jax import typed_json
from platonic_jax import workdir as workdir_lib

VERSION = 2  # bump when a stage's computation changes without its inputs changing
STAGES_DIR = "stages"


def inputs(kind: str, params: Any, upstream: Mapping[str, str]) -> dict:
  """The canonical record of a stage's inputs: kind, params, {role: upstream key}."""
  return {"version": VERSION, "kind": kind,
          "params": typed_json.dump(params, sort_keys=True),
          "upstream": dict(sorted(upstream.items()))}


def key(doc: Mapping) -> str:
  """16 hex digits of the SHA-256 of the canonical JSON of ``doc``."""
  blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def path(workdir: str, name: str, k: str) -> str:
  return os.path.join(workdir, STAGES_DIR, *name.split("/"), f"{k}.json")


def is_stored(workdir: str, name: str, k: str, doc: Mapping) -> bool:
  """Whether stage ``name`` has a readable stored result under key ``k`` recorded with
  exactly the inputs ``doc`` (what ``cached`` would read back instead of computing)."""
  try:
    with open(path(workdir, name, k)) as f:
      stored = json.load(f)
  except (OSError, ValueError):
    return False
  return stored.get("inputs") == json.loads(json.dumps(doc)) and stored.get("key") == k


def cached(workdir: str, name: str, k: str, doc: Mapping, compute: Callable[[], Any],
           result_type: Any, *, write: bool = True, log=logging.info) -> Any:
  """``compute()``'s result for stage ``name`` with key ``k`` and inputs ``doc``: read
  back when stored with the same inputs, else computed and stored (atomically)."""
  p = path(workdir, name, k)
  doc = json.loads(json.dumps(doc))
  if os.path.exists(p):
    try:
      with open(p) as f:
        stored = json.load(f)
      if stored.get("inputs") == doc and stored.get("key") == k:
        result = typed_json.load(result_type, stored["result"])
        log(f"stage {name}: done ({p})")
        return result
      log(f"stage {name}: {p} records other inputs; recomputing")
    except (OSError, ValueError, KeyError, TypeError) as e:
      log(f"stage {name}: {p} unreadable ({type(e).__name__}: {e}); recomputing")
  log(f"stage {name}: computing")
  result = compute()
  if write:
    workdir_lib.atomic_write_json(p, {"stage": name, "key": k, "inputs": doc,
                                      "result": typed_json.dump(result)})
  return result
