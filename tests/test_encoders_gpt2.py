"""GPT-2 encoder and tokenization vs transformers PyTorch ``GPT2Model`` (CPU, float64 pooling).

Offline: every checkpoint is a tiny random GPT-2 saved with ``save_pretrained`` next to a
byte-level BPE tokenizer trained with ``tokenizers`` (vocab.json + merges.txt), built by
``hf_fixtures.tiny_gpt2``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from hf_fixtures import rel_error, tiny_gpt2

from platonic_jax.encoders import convert as convert_lib
from platonic_jax.encoders import gpt2
from platonic_jax.encoders import tokenize as tok_lib

CAPTIONS = [
    "A dog runs across the grass.",
    "Two children are playing with a red ball in the park near a lake.",
    "A man",
    "Une femme lit un livre — café ☕ and émojis 🙂 too.",
    "   leading spaces and trailing   ",
    "A very long caption that keeps going and going, describing every small detail of "
    "the busy street market, the vendors, the fruit, the bicycles and the pigeons.",
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  return tiny_gpt2(str(tmp_path_factory.mktemp("gpt2")))


@pytest.fixture(scope="module")
def tokenizer(ckpt):
  return tok_lib.load_tokenizer(ckpt[0])


def _params(directory, config):
  return gpt2.convert(convert_lib.read_state_dict(directory), config)


def _features(config, params, ids, mask, pool="mean", dtype=jnp.float32):
  module = gpt2.build(config, dtype)
  fn = jax.jit(lambda p, i, m: module.apply({"params": p}, i, m, pool=pool))
  return [np.asarray(f) for f in fn(params, jnp.asarray(ids), jnp.asarray(mask))]


def _reference(model, tok, texts, max_length=128):
  """PyTorch hidden states pooled in float64, from HF's own batched tokenization."""
  batch = tok(texts, padding="longest", truncation=True, max_length=max_length,
              return_tensors="pt")
  with torch.no_grad():
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                output_hidden_states=True)
  m = batch["attention_mask"].double().numpy()
  hs = [h.double().numpy() for h in out.hidden_states]
  mean = [np.einsum("btd,bt->bd", h, m) / m.sum(1, keepdims=True) for h in hs]
  last_idx = m.sum(1).astype(int) - 1  # right padding
  last = [h[np.arange(len(texts)), last_idx] for h in hs]
  return {"mean": mean, "last": last}


def test_hidden_state_semantics_of_reference(ckpt):
  # Guards the reference itself: HF 5's hidden_states end with ln_f's output.
  _, model = ckpt
  ids = torch.tensor([[1, 2, 3]])
  out = model(ids, output_hidden_states=True)
  assert len(out.hidden_states) == model.config.n_layer + 1
  torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)


def test_convert_fills_exactly_the_module_params(ckpt):
  directory, model = ckpt
  params = _params(directory, model.config)
  module = gpt2.build(model.config)
  ids = jnp.zeros((1, 4), jnp.int32)
  expected = jax.eval_shape(module.init, jax.random.key(0), ids, ids)["params"]
  convert_lib.check_params(params, expected)


@pytest.mark.parametrize("pool", ["mean", "last"])
def test_fp32_parity_strings_in(ckpt, tokenizer, pool):
  directory, model = ckpt
  ids, mask, n_trunc = tok_lib.tokenize(tokenizer, CAPTIONS, max_length=128)
  assert n_trunc == 0
  ours = _features(model.config, _params(directory, model.config), ids, mask, pool)
  ref = _reference(model, tokenizer, CAPTIONS)[pool]
  assert len(ours) == len(ref) == model.config.n_layer + 1
  for layer, (a, b) in enumerate(zip(ours, ref)):
    assert a.shape == b.shape and a.dtype == np.float32
    assert rel_error(a, b) < 1e-4, (pool, layer, rel_error(a, b))


def test_bf16_parity(ckpt, tokenizer):
  directory, model = ckpt
  ids, mask, _ = tok_lib.tokenize(tokenizer, CAPTIONS, max_length=128)
  params = _params(directory, model.config)
  # As load() does: kernels pre-cast to bf16, the rest float32.
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16) if x.ndim == 2 else x, params)
  ours = _features(model.config, params, ids, mask, "mean", jnp.bfloat16)
  ref = _reference(model, tokenizer, CAPTIONS)["mean"]
  errs = [rel_error(a, b) for a, b in zip(ours, ref)]
  assert all(a.dtype == np.float32 for a in ours)
  assert max(errs) < 2e-2, errs
  assert max(errs) > 1e-6, "bf16 path computed in float32: operands were not cast"


@pytest.mark.parametrize("overrides", [
    dict(scale_attn_by_inverse_layer_idx=True, n_inner=48, activation_function="gelu",
         layer_norm_epsilon=1e-3),
    # add_cross_attention: the checkpoint holds cross-attention weights GPT2Model ignores
    # without encoder states; conversion must skip them, not fail.
    dict(scale_attn_weights=False, reorder_and_upcast_attn=True, activation_function="relu",
         n_layer=2, add_cross_attention=True),
])
def test_config_variants_parity(tmp_path, overrides):
  directory, model = tiny_gpt2(str(tmp_path), seed=1, **overrides)
  # Read the config as saved, to test the fields round-trip through config.json.
  config = transformers.GPT2Config.from_pretrained(directory)
  tok = tok_lib.load_tokenizer(directory)
  ids, mask, _ = tok_lib.tokenize(tok, CAPTIONS[:4], max_length=128)
  ours = _features(config, _params(directory, config), ids, mask)
  ref = _reference(model, tok, CAPTIONS[:4])["mean"]
  errs = [rel_error(a, b) for a, b in zip(ours, ref)]
  assert max(errs) < 1e-4, errs


def test_features_do_not_depend_on_batch_or_padding(ckpt, tokenizer):
  directory, model = ckpt
  params = _params(directory, model.config)
  caption = CAPTIONS[0]
  alone_ids, alone_mask, _ = tok_lib.tokenize(tokenizer, [caption], max_length=128)
  batch_ids, batch_mask, _ = tok_lib.tokenize(tokenizer, CAPTIONS[::-1], max_length=128)
  assert batch_ids.shape[1] > alone_ids.shape[1] + 8  # much more padding in the batch
  row = len(CAPTIONS) - 1
  for pool in gpt2.POOLS:
    alone = _features(model.config, params, alone_ids, alone_mask, pool)
    batch = _features(model.config, params, batch_ids, batch_mask, pool)
    for a, b in zip(alone, batch):
      np.testing.assert_allclose(a[0], b[row], rtol=1e-5, atol=1e-6)


def test_left_padding_uses_hf_positions(ckpt, tokenizer):
  # HF numbers positions 0..T-1 whatever the mask (no position_ids given): left-padded
  # inputs must then match HF too (pads are masked out of attention and pooling).
  directory, model = ckpt
  ids, mask, _ = tok_lib.tokenize(tokenizer, CAPTIONS[:3], max_length=128)
  lens = mask.sum(1)
  left_ids = np.full_like(ids, tokenizer.eos_token_id)
  left_mask = np.zeros_like(mask)
  for i, n in enumerate(lens):
    left_ids[i, -n:], left_mask[i, -n:] = ids[i, :n], 1
  ours = _features(model.config, _params(directory, model.config), left_ids, left_mask)
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(left_ids.astype(np.int64)),
                attention_mask=torch.from_numpy(left_mask.astype(np.int64)),
                output_hidden_states=True)
  m = left_mask.astype(np.float64)
  for a, h in zip(ours, out.hidden_states):
    ref = np.einsum("btd,bt->bd", h.double().numpy(), m) / m.sum(1, keepdims=True)
    assert rel_error(a, ref) < 1e-4


def test_truncation_is_counted_and_matches_hf(ckpt, tokenizer):
  directory, model = ckpt
  lengths = [len(tokenizer(c)["input_ids"]) for c in CAPTIONS]
  max_length = sorted(lengths)[len(lengths) // 2]
  ids, mask, n_trunc = tok_lib.tokenize(tokenizer, CAPTIONS, max_length=max_length)
  assert n_trunc == sum(n > max_length for n in lengths) > 0
  assert ids.shape[1] == max_length
  np.testing.assert_array_equal(mask.sum(1), np.minimum(lengths, max_length))
  hf = tokenizer(CAPTIONS, padding="max_length", truncation=True, max_length=max_length)
  np.testing.assert_array_equal(ids, np.asarray(hf["input_ids"]))
  np.testing.assert_array_equal(mask, np.asarray(hf["attention_mask"]))
  ours = _features(model.config, _params(directory, model.config), ids, mask)
  ref = _reference(model, tokenizer, CAPTIONS, max_length=max_length)["mean"]
  assert max(rel_error(a, b) for a, b in zip(ours, ref)) < 1e-4


def test_tokenize_pads_right_with_eos(tokenizer):
  ids, mask, _ = tok_lib.tokenize(tokenizer, ["a dog", CAPTIONS[1]], max_length=128)
  assert ids.dtype == mask.dtype == np.int32
  assert ids.shape[1] % 8 == 0
  n = len(tokenizer("a dog")["input_ids"])
  assert mask[0, :n].all() and not mask[0, n:].any()
  assert (ids[0, n:] == tokenizer.eos_token_id).all()
  np.testing.assert_array_equal(ids[0, :n], tokenizer("a dog")["input_ids"])


def test_tokenize_rejects_bad_input(tokenizer):
  with pytest.raises(ValueError, match=r"\[1\].*no tokens"):
    tok_lib.tokenize(tokenizer, ["a dog", ""], max_length=8)
  with pytest.raises(TypeError, match=r"\[1\]"):
    tok_lib.tokenize(tokenizer, ["a dog", None], max_length=8)
  with pytest.raises(TypeError, match="one str"):
    tok_lib.tokenize(tokenizer, "a dog", max_length=8)
  with pytest.raises(ValueError, match="max_length"):
    tok_lib.tokenize(tokenizer, ["a dog"], max_length=0)


def test_load_tokenizer_errors(tmp_path):
  with pytest.raises(ValueError, match="vocab.json"):
    tok_lib.load_tokenizer(str(tmp_path))


def test_lm_head_checkpoint_converts_like_base_model(ckpt):
  directory, model = ckpt
  lm = transformers.GPT2LMHeadModel(model.config)
  lm.transformer.load_state_dict(model.state_dict())
  sd = {k: v.numpy() for k, v in lm.state_dict().items()}
  assert "transformer.wte.weight" in sd and "lm_head.weight" in sd
  sd["transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 128, 128), np.float32))  # old buffer
  base = _params(directory, model.config)
  for a, b in zip(jax.tree.leaves(gpt2.convert(sd, model.config)), jax.tree.leaves(base)):
    np.testing.assert_array_equal(a, b)


def test_strict_conversion_names_the_keys(ckpt):
  directory, model = ckpt
  sd = dict(convert_lib.read_state_dict(directory))
  del sd["h.1.mlp.c_fc.bias"]
  sd["h.0.attn.extra_proj.weight"] = np.zeros((4, 4), np.float32)
  sd["wpe.weight"] = np.zeros((32, 32), np.float32)
  with pytest.raises(convert_lib.ConversionError) as e:
    gpt2.convert(sd, model.config)
  msg = str(e.value)
  assert "h.1.mlp.c_fc.bias" in msg and "h.0.attn.extra_proj.weight" in msg
  assert "wpe.weight has shape (32, 32), expected (128, 32)" in msg
  assert e.value.missing == ["h.1.mlp.c_fc.bias"]


def test_config_and_input_errors(ckpt):
  _, model = ckpt
  cfg = model.config.to_dict()
  with pytest.raises(ValueError, match="gelu_new"):
    gpt2.build(dict(cfg, activation_function="nonsense"))
  with pytest.raises(ValueError, match="divisible"):
    gpt2.build(dict(cfg, n_head=5))
  module = gpt2.build(cfg)
  too_long = jnp.zeros((1, 129), jnp.int32)
  with pytest.raises(ValueError, match="n_positions=128"):
    jax.eval_shape(module.init, jax.random.key(0), too_long, too_long)
  ids = jnp.zeros((1, 4), jnp.int32)
  with pytest.raises(ValueError, match="pool"):
    jax.eval_shape(lambda: module.init(jax.random.key(0), ids, ids, pool="max"))


def test_benchmark_runs_and_checks_parity():
  from platonic_jax.benchmarks import encoders_gpt2
  rows = encoders_gpt2.run(batch=2, seq=8, rounds=1, n_layer=1, verbose=False)
  assert [(r[1], r[2]) for r in rows] == [
      ("fp32", "torch fp32"), ("fp32", "platonic_jax"),
      ("bf16", "torch bf16 autocast"), ("bf16", "platonic_jax")]
  for r in rows:
    assert r[0] == "gpt2" and r[3] > 0 and r[4] == "tok/s"
  assert rows[1][5] == pytest.approx(rows[1][3] / rows[0][3])
  with pytest.raises(ValueError, match="dtypes"):
    encoders_gpt2.run(dtypes=("fp16",))


def test_load_rejects_a_tokenizer_larger_than_the_checkpoint_vocab(tmp_path):
  """Ids beyond vocab_size would be clamped silently by the embedding gather."""
  from platonic_jax import encoders
  d, _ = tiny_gpt2(str(tmp_path), vocab_size=50)
  enc = encoders.load(d)
  with pytest.raises(ValueError, match="vocab_size is 50"):
    enc.encode(["two children are playing with a red ball"])


def test_load_pads_text_to_length_buckets_without_changing_features(ckpt):
  """Short and long captions in one call: bucketed T, same features as one at a time."""
  from platonic_jax import encoders
  enc = encoders.load(ckpt[0], max_length=64)
  texts = ["a dog", " ".join(["the pigeons sit on the roof of the market"] * 4)]
  both = enc.encode(texts, batch_size=2)
  for i, t in enumerate(texts):
    np.testing.assert_allclose(both[i], enc.encode([t], batch_size=2)[0], rtol=1e-5, atol=1e-6)
