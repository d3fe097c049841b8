"""The decoder family (Llama, Mistral, Mixtral, Gemma 1-3, OLMo 1-2, Qwen2-3, BLOOM) vs
transformers PyTorch ``*ForCausalLM`` (eager attention, CPU), and bits per byte vs the
Platonic release's own formulas applied to transformers' logits.

Offline: each checkpoint is a tiny random model saved with ``save_pretrained`` beside a
BPE tokenizer trained with ``tokenizers`` (``hf_fixtures.tiny_decoder``); raw strings go
in through ``encoders.load``. The reference tokenizes as the release does
(``AutoTokenizer``, pad = eos, left padding) and pools in float64.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import hf_fixtures as fx
from platonic_jax import encoders
from platonic_jax.encoders import convert as convert_lib
from platonic_jax.encoders import decoder, lm_scores, registry, rope
from platonic_jax.encoders import tokenize as tok_lib

FP32_TOL, BF16_TOL, BPB_TOL = 1e-4, 2e-2, 1e-5

TEXTS = [
    "a dog runs across the grass",
    "two children are playing with a red ball in the park near the lake",
    "a man",
    "Une femme lit un livre — café ☕ and émojis 🙂 too.",
    "the pigeons sit on the roof of the market while people walk near the lake in the park",
]


# ----- the release's code (minyoungg/platonic-rep), verbatim up to names ------------------

def release_tokenizer(directory, name=""):
  """models.load_tokenizer."""
  tok = transformers.AutoTokenizer.from_pretrained(directory)
  if "huggyllama" in name:
    tok.pad_token = "[PAD]"
  elif tok.pad_token is None:
    tok.pad_token = tok.pad_token or tok.eos_token
  tok.padding_side = "left"
  return tok


def release_bits_per_byte(llm_inputs, logits, input_strings):
  """utils.cross_entropy_loss + utils.cross_entropy_to_bits_per_unit(unit="byte")."""
  criterion = torch.nn.CrossEntropyLoss(reduction="none")
  mask = llm_inputs["attention_mask"][:, :-1]
  loss = mask * criterion(logits[:, :-1].permute(0, 2, 1), llm_inputs["input_ids"][:, 1:])
  losses_in_bits = (loss.cpu() * torch.log2(torch.tensor(math.e))).sum(1)
  bytes_per_input = torch.tensor([len(s.encode("utf-8")) for s in input_strings],
                                 dtype=torch.float32)
  return (losses_in_bits / bytes_per_input).numpy()


def reference(model, tok, texts, side="left"):
  """HF hidden states pooled in float64 (mean over the mask, last real token) and the
  release's bits per byte, from one padded batch."""
  tok.padding_side = side
  batch = tok(texts, padding="longest", return_tensors="pt")
  with torch.no_grad():
    out = model(**batch, output_hidden_states=True)
  m = batch["attention_mask"].double().numpy()
  hs = [h.double().numpy() for h in out.hidden_states]
  avg = np.stack([np.einsum("btd,bt->bd", h, m) / m.sum(1, keepdims=True) for h in hs])
  last_idx = (np.arange(m.shape[1])[None] * m).max(1).astype(int)
  last = np.stack([h[np.arange(len(texts)), last_idx] for h in hs])
  bpb = release_bits_per_byte(batch, out.logits.float(), texts)
  return {"avg": avg, "last": last, "bpb": bpb, "batch": batch}


VARIANTS = sorted(fx.DECODER_VARIANTS)


@pytest.fixture(scope="module", params=VARIANTS)
def ckpt(request, tmp_path_factory):
  directory, model = fx.tiny_decoder(str(tmp_path_factory.mktemp(request.param)), request.param)
  return request.param, directory, model


def _errors(ours, ref):
  return [fx.rel_error(a, b) for a, b in zip(ours, ref)]


def test_fp32_parity_every_hidden_state_and_bits_per_byte(ckpt):
  """Mixed lengths in one batch; HF left- and right-padded; both pools; bpb by the
  release's formulas on HF's logits (left padding, as the release)."""
  variant, directory, model = ckpt
  enc = encoders.load(directory)
  assert enc.num_layers == model.config.get_text_config().num_hidden_layers + 1 == 4
  feats, bpb = enc.encode(TEXTS, batch_size=8, layers="all", bits_per_byte=True)
  last = enc.encode(TEXTS, batch_size=8, layers="all", pool="last")
  assert feats.shape == (4, len(TEXTS), 32) and feats.dtype == np.float32
  tok = release_tokenizer(directory)
  if variant == "llama_dynamic":
    # HF's dynamic NTK uses the padded batch length (and keeps a grown cache); ours each
    # text's own length. Equal for unpadded texts in increasing length order.
    order = np.argsort([len(tok(t)["input_ids"]) for t in TEXTS])
    for i in order:
      r = reference(model, tok, [TEXTS[i]])
      assert max(_errors(feats[:, i:i + 1], r["avg"])) < FP32_TOL
      assert abs(bpb[i] - r["bpb"][0]) <= BPB_TOL * abs(r["bpb"][0])
    return
  for side in ("left", "right"):
    r = reference(model, tok, TEXTS, side)
    assert max(r["batch"]["attention_mask"].sum(1)) > 2 * min(r["batch"]["attention_mask"].sum(1))
    errs = _errors(feats, r["avg"])
    assert max(errs) < FP32_TOL, (variant, side, errs)
    if side == "left":   # the release's pool="none" is position -1 of a left-padded batch
      assert max(_errors(last, r["last"])) < FP32_TOL, variant
      np.testing.assert_allclose(bpb, r["bpb"], rtol=BPB_TOL)
  # the bits-per-byte-only call gives the same numbers
  np.testing.assert_allclose(enc.bits_per_byte(TEXTS, batch_size=8), bpb, rtol=1e-6)


@pytest.mark.parametrize("variant", ["llama", "mixtral", "gemma2", "bloom"])
def test_bf16_within_tolerance(variant, tmp_path):
  directory, model = fx.tiny_decoder(str(tmp_path), variant)
  enc = encoders.load(directory, dtype="bfloat16")
  leaves = jax.tree_util.tree_flatten_with_path(enc.params)[0]
  kernels = [v.dtype for p, v in leaves if jax.tree_util.keystr(p).endswith("kernel']")]
  assert kernels and set(kernels) == {jnp.dtype(jnp.bfloat16)}
  feats, bpb = enc.encode(TEXTS, batch_size=8, layers="all", bits_per_byte=True)
  r = reference(model, release_tokenizer(directory), TEXTS)
  errs = _errors(feats, r["avg"])
  assert feats.dtype == np.float32 and max(errs) < BF16_TOL, errs
  assert max(errs) > 1e-6, "bf16 path computed in float32"
  np.testing.assert_allclose(bpb, r["bpb"], rtol=BF16_TOL)


def _module_features(directory, ids, mask):
  config = transformers.AutoConfig.from_pretrained(directory)
  arch = registry.get(config.model_type)
  params = jax.tree.map(np.asarray, arch.convert(convert_lib.lazy_state_dict(directory), config))
  module = arch.build(config)
  feats, nats = jax.jit(lambda p, i, m: module.apply({"params": p}, i, m, scores=True))(
      params, ids, mask)
  return np.stack(feats), np.asarray(nats)


@pytest.mark.parametrize("variant", ["gemma3", "mistral", "bloom", "llama_dynamic"])
def test_features_independent_of_padding_side_and_batch(variant, tmp_path):
  directory, _ = fx.tiny_decoder(str(tmp_path), variant)
  tok = release_tokenizer(directory)
  ids, mask, _ = tok_lib.tokenize(tok, TEXTS, 64)           # right padding
  lens = mask.sum(1)
  left_ids, left_mask = np.full_like(ids, tok.pad_token_id), np.zeros_like(mask)
  for i, n in enumerate(lens):
    left_ids[i, -n:], left_mask[i, -n:] = ids[i, :n], 1
  right, nats_r = _module_features(directory, ids, mask)
  left, nats_l = _module_features(directory, left_ids, left_mask)
  np.testing.assert_allclose(left, right, rtol=1e-5, atol=2e-6)
  np.testing.assert_allclose(nats_l, nats_r, rtol=1e-5)
  enc = encoders.load(directory)
  batch = enc.encode(TEXTS, batch_size=8, layers="all")
  for i, t in enumerate(TEXTS):   # alone (less padding, other batch mates)
    np.testing.assert_allclose(enc.encode([t], batch_size=8, layers="all")[:, 0], batch[:, i],
                               rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("variant", ["llama", "mixtral", "qwen2", "bloom"])
def test_sharded_parameters_give_the_unsharded_features(variant, tmp_path, num_devices):
  directory, _ = fx.tiny_decoder(str(tmp_path), variant)
  base, base_bpb = encoders.load(directory, devices=jax.devices()[:1]).encode(
      TEXTS, batch_size=8, layers="all", bits_per_byte=True)
  for mp in (2, 4, 8):
    enc = encoders.load(directory, model_parallel=mp)
    leaf = (enc.params["layers_0"]["attn"]["q_proj"]["kernel"] if variant != "bloom"
            else enc.params["h_0"]["attn"]["q_proj"]["kernel"])
    assert leaf.addressable_shards[0].data.shape == (32, 32 // mp)
    feats, bpb = enc.encode(TEXTS, batch_size=8, layers="all", bits_per_byte=True)
    np.testing.assert_allclose(feats, base, rtol=1e-5, atol=2e-6, err_msg=f"{variant} mp={mp}")
    np.testing.assert_allclose(bpb, base_bpb, rtol=1e-5)


def test_gpt2_bits_per_byte_is_the_release_formula(tmp_path):
  directory, base = fx.tiny_gpt2(str(tmp_path))
  lm = transformers.GPT2LMHeadModel(base.config).eval()
  lm.transformer.load_state_dict(base.state_dict())
  lm.tie_weights()
  tok = transformers.GPT2Tokenizer.from_pretrained(directory)
  # One text at a time: GPT-2's positions are absolute, so the release's left padding
  # would shift them (HF numbers positions 0..T-1 whatever the mask).
  want = []
  for t in TEXTS:
    batch = tok([t], return_tensors="pt")
    with torch.no_grad():
      want.append(release_bits_per_byte(batch, lm(**batch).logits, [t])[0])
  enc = encoders.load(directory, max_length=128)
  np.testing.assert_allclose(enc.bits_per_byte(TEXTS), want, rtol=BPB_TOL)


# ----- pieces against their transformers counterparts --------------------------------------

@pytest.mark.parametrize("params", [
    dict(rope_type="default", rope_theta=10000.0),
    dict(rope_type="linear", rope_theta=10000.0, factor=4.0),
    dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
         high_freq_factor=4.0, original_max_position_embeddings=64),
])
def test_rope_inverse_frequencies_equal_transformers(params):
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
  cfg = transformers.LlamaConfig(hidden_size=256, num_attention_heads=2, rope_parameters=params)
  spec = rope.rope_spec(cfg, 128)
  if params["rope_type"] == "default":
    want = 1.0 / (params["rope_theta"] ** (torch.arange(0, 128, 2).float() / 128))
  else:
    want, _ = ROPE_INIT_FUNCTIONS[params["rope_type"]](cfg, "cpu")
  np.testing.assert_allclose(np.asarray(spec.inv_freq), want.numpy(), rtol=1e-6)


def test_dynamic_rope_frequencies_follow_the_length():
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
  cfg = transformers.LlamaConfig(hidden_size=64, num_attention_heads=2, max_position_embeddings=16,
                                 rope_parameters=dict(rope_type="dynamic", rope_theta=1e4, factor=2.0))
  spec = rope.rope_spec(cfg, 32)
  got = np.asarray(rope.inv_freq(spec, jnp.asarray([10, 40])))
  for row, n in zip(got, (10, 40)):
    want, _ = ROPE_INIT_FUNCTIONS["dynamic"](cfg, "cpu", seq_len=n)
    np.testing.assert_allclose(row, want.numpy(), rtol=1e-5)
  with pytest.raises(ValueError, match="rope_type 'yarn' is not supported; supported: default"):
    rope.rope_spec(transformers.LlamaConfig(rope_parameters=dict(
        rope_type="yarn", rope_theta=1e4, factor=2.0, original_max_position_embeddings=16)), 64)


def test_mixtral_routing_equals_transformers_router():
  from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter
  cfg = transformers.MixtralConfig(hidden_size=16, num_local_experts=8, num_experts_per_tok=2)
  router = MixtralTopKRouter(cfg)
  torch.nn.init.normal_(router.weight)
  x = torch.randn(50, 16)
  _, scores, idx = router(x)
  want = torch.zeros(50, 8).scatter(1, idx, scores.detach())
  logits = x.numpy() @ router.weight.detach().numpy().T
  want = want.detach().numpy() if hasattr(want, "detach") else want
  np.testing.assert_allclose(np.asarray(decoder.route(jnp.asarray(logits), 2)), want,
                             rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("window", [None, 3])
def test_flash_attention_arguments_give_the_xla_mask(window):
  """The cuDNN path's jax.nn.dot_product_attention arguments (causal, sequence lengths,
  left window) select the same keys as the XLA path's mask; run with the XLA kernel."""
  rng = np.random.default_rng(0)
  b, t, n, k, hd = 3, 7, 4, 2, 8
  q, kk, v = (rng.normal(size=(b, t, h, hd)).astype(np.float32) for h in (n, k, k))
  lengths = np.array([7, 4, 1], np.int32)
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
  ref = decoder.attention(q, kk, v, decoder.allowed_mask(jnp.asarray(mask), window), 0.3,
                          jnp.float32)
  got = decoder.flash_attention(q, kk, v, jnp.asarray(lengths), 0.3, window, jnp.float32,
                                implementation="xla")
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(ref)[real], rtol=1e-5, atol=1e-6)


def test_cudnn_attention_falls_back_to_xla_where_unavailable(tmp_path, caplog):
  """The decoder's GPU path (impl="cudnn") on a backend without cuDNN: warned, then the
  XLA path with the mask rebuilt from the lengths (right padding) -- same features."""
  import dataclasses
  directory, _ = fx.tiny_decoder(str(tmp_path), "mistral")
  config = transformers.AutoConfig.from_pretrained(directory)
  params = jax.tree.map(np.asarray, decoder.convert(convert_lib.lazy_state_dict(directory),
                                                    config))
  tok = release_tokenizer(directory)
  ids, mask, _ = tok_lib.tokenize(tok, TEXTS, 64)
  xla = decoder.build(config)
  gpu = dataclasses.replace(xla, impl="cudnn")
  with caplog.at_level("WARNING"):
    got = gpu.apply({"params": params}, ids, mask)
  assert "cuDNN unavailable" in caplog.text
  want = xla.apply({"params": params}, ids, mask)
  np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=1e-5, atol=2e-6)


def test_token_nats_count_predicted_real_tokens_only():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  ids = rng.integers(0, 7, (2, 5)).astype(np.int32)
  mask = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], np.int32)   # right / left padded
  logp = logits - np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
  want = [-(logp[0, 0, ids[0, 1]] + logp[0, 1, ids[0, 2]]),
          -(logp[1, 1, ids[1, 2]] + logp[1, 2, ids[1, 3]] + logp[1, 3, ids[1, 4]])]
  np.testing.assert_allclose(np.asarray(lm_scores.token_nats(logits, ids, mask)), want, rtol=1e-5)
  np.testing.assert_allclose(lm_scores.bits_per_byte(np.array([math.log(2) * 3]), ["abc"]), [1.0])


# ----- tokenizer set-up, truncation, bad input ---------------------------------------------

def test_release_tokenizer_setup(tmp_path):
  d = fx.decoder_tokenizer(str(tmp_path / "x"))
  tok = tok_lib.load_release_tokenizer(d, "some/model")
  assert tok.pad_token == tok.eos_token == "</s>" and tok.padding_side == "left"
  hug = tok_lib.load_release_tokenizer(d, "huggyllama/llama-7b")
  assert hug.pad_token == "[PAD]" and hug.pad_token_id is not None
  ids, mask, _ = tok_lib.tokenize(tok, ["a dog"], 16)
  assert ids[0, 0] == tok.bos_token_id == 1   # BOS as the release's tokenizer(texts) adds it
  np.testing.assert_array_equal(ids[0, :mask.sum()], tok("a dog")["input_ids"])


def test_truncation_is_counted_and_logged(tmp_path, caplog):
  directory, _ = fx.tiny_decoder(str(tmp_path), "qwen3")
  enc = encoders.load(directory, max_length=8)
  n_long = sum(len(enc.tokenizer(t)["input_ids"]) > 8 for t in TEXTS)
  assert 0 < n_long < len(TEXTS)
  with caplog.at_level("WARNING"):
    feats = enc.encode(TEXTS, batch_size=8)
  assert enc.num_truncated == n_long
  assert f"{n_long} texts were longer than max_length=8" in caplog.text
  assert feats.shape == (len(TEXTS), 32)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
  return fx.tiny_decoder(str(tmp_path_factory.mktemp("llama_err")), "llama")[0]


def test_unsupported_model_types_list_the_supported(tmp_path):
  bert = tmp_path / "bert"
  transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=8).save_pretrained(bert)
  with pytest.raises(ValueError, match=r"unsupported model_type 'bert'; supported model types: "
                                       r"bloom, .*dinov2, .*gemma, gemma2, gemma3, gemma3_text, gpt2, llama"):
    encoders.load(str(bert))
  alien = tmp_path / "alien"
  alien.mkdir()
  (alien / "config.json").write_text(json.dumps({"model_type": "frobnicator_lm"}))
  with pytest.raises(ValueError, match=r"unsupported model_type 'frobnicator_lm'.*qwen3"):
    encoders.load(str(alien))


def test_missing_and_extra_keys_are_named(llama_dir, tmp_path):
  from safetensors.numpy import save_file
  d = tmp_path / "broken"
  shutil.copytree(llama_dir, d)
  sd = convert_lib.read_state_dict(str(d))
  del sd["model.layers.1.mlp.up_proj.weight"]
  sd["model.layers.0.self_attn.extra.weight"] = np.zeros((2, 2), np.float32)
  sd["model.norm.weight"] = np.zeros((7,), np.float32)
  save_file(sd, str(d / "model.safetensors"))
  with pytest.raises(encoders.ConversionError) as e:
    encoders.load(str(d))
  msg = str(e.value)
  assert "missing keys (1): layers.1.mlp.up_proj.weight" in msg
  assert "unexpected keys (1): layers.0.self_attn.extra.weight" in msg
  assert "norm.weight has shape (7,), expected (32,)" in msg and "Fix:" in msg


def test_tokenizer_beyond_the_vocab_counts_real_tokens_only(llama_dir):
  texts = ["a dog", "two children are playing"]
  enc = encoders.load(llama_dir)
  want = enc.encode(texts)
  # A pad token added to the tokenizer has an id past the checkpoint's vocabulary (as
  # huggyllama's "[PAD]" can): pads are masked, so this is fine and changes nothing.
  enc.tokenizer.add_special_tokens({"pad_token": "[PAD]"})
  assert enc.tokenizer.pad_token_id >= enc.hf_config.vocab_size
  np.testing.assert_allclose(enc.encode(texts), want, rtol=1e-5, atol=2e-6)
  ids, mask = enc._inputs(texts, 0)
  enc.hf_config.vocab_size = int(ids[mask > 0].max())   # now a real token is past it
  with pytest.raises(ValueError, match=r"tokenizer produced id \d+ but the checkpoint's "
                                       r"vocab_size is \d+.*tokenizer files"):
    enc.encode(texts)


def test_empty_text_is_a_one_line_error(llama_dir):
  enc = encoders.load(llama_dir)
  for call in (enc.encode, enc.bits_per_byte):
    with pytest.raises(ValueError, match=r"texts \[1\] are empty strings") as e:
      call(["a dog", ""])
    assert "\n" not in str(e.value)


def test_bits_per_byte_of_an_image_encoder_is_refused(tmp_path):
  d, _ = fx.tiny_resnet(str(tmp_path))
  with pytest.raises(ValueError, match="bits_per_byte needs a language model"):
    encoders.load(d).bits_per_byte(["a dog"])


def test_hub_checkpoint_layouts_convert_alike(llama_dir, tmp_path):
  """Base-model keys (no "model." prefix) and transformers 5's fused Mixtral experts
  give the same parameters as the saved *ForCausalLM layout."""
  cfg = transformers.AutoConfig.from_pretrained(llama_dir)
  sd = convert_lib.read_state_dict(llama_dir)
  stripped = {k.removeprefix("model."): v for k, v in sd.items()}
  a = jax.tree.map(np.asarray, decoder.convert(sd, cfg))
  b = jax.tree.map(np.asarray, decoder.convert(stripped, cfg))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  mdir, _ = fx.tiny_decoder(str(tmp_path / "mixtral"), "mixtral")
  mcfg = transformers.AutoConfig.from_pretrained(mdir)
  msd = convert_lib.read_state_dict(mdir)
  fused = {k: v for k, v in msd.items() if "block_sparse_moe" not in k}
  for i in range(mcfg.num_hidden_layers):
    p = f"model.layers.{i}.block_sparse_moe"
    e = range(mcfg.num_local_experts)
    fused[f"model.layers.{i}.mlp.experts.gate_up_proj"] = np.stack(
        [np.concatenate([msd[f"{p}.experts.{j}.w1.weight"], msd[f"{p}.experts.{j}.w3.weight"]])
         for j in e])
    fused[f"model.layers.{i}.mlp.experts.down_proj"] = np.stack(
        [msd[f"{p}.experts.{j}.w2.weight"] for j in e])
    fused[f"model.layers.{i}.mlp.gate.weight"] = msd[f"{p}.gate.weight"]
  jax.tree.map(np.testing.assert_array_equal,
               jax.tree.map(np.asarray, decoder.convert(msd, mcfg)),
               jax.tree.map(np.asarray, decoder.convert(fused, mcfg)))
  assert os.path.exists(os.path.join(mdir, "model.safetensors"))


# ----- benchmarks (smoke runs; the numbers are recorded in docs/encoders.md) ---------------

def test_throughput_benchmark_runs_and_checks_parity(capsys):
  from platonic_jax.benchmarks import decoders
  rows = decoders.run(sizes=("tiny",), batch=2, seq=8, rounds=1, vocab=64, verbose=False)
  assert [(r[1], r[2]) for r in rows] == [
      ("fp32", "torch eager fp32"), ("fp32", "platonic_jax"),
      ("bf16", "torch eager bf16 autocast"), ("bf16", "platonic_jax")]
  assert all(r[0] == "llama-tiny" and r[3] > 0 and r[4] == "tok/s" for r in rows)
  assert rows[1][5] == pytest.approx(rows[1][3] / rows[0][3])
  with pytest.raises(ValueError, match=r"sizes must be a non-empty subset of \('125m', '1b'"):
    decoders.run(sizes=("7b",))
  with pytest.raises(SystemExit) as e:   # a bad option: one line (tests/test_benchmark_options)
    decoders.main(["--sizes=tiny", "--dtypes=fp16"])
  assert e.value.code == 2 and "'fp16' is not one of fp32, bf16" in capsys.readouterr().err


def test_memory_benchmark_checkpoint_loads_sharded(tmp_path):
  from platonic_jax.benchmarks import decoder_memory
  d = str(tmp_path / "ckpt")
  nbytes = decoder_memory.write_checkpoint(d, 0.0, shard_bytes=20_000, tiny=False)
  index = json.loads(open(os.path.join(d, "model.safetensors.index.json")).read())
  assert len(set(index["weight_map"].values())) > 1   # several shards
  enc = encoders.load(d, model_parallel=4)
  assert enc.num_layers == 2 and np.isfinite(enc.encode(["a dog"])).all()
  assert nbytes == sum(np.prod(s) * 4 for s in [  # the config's float32 tensors
      (300, 64), (300, 64), (64,), (64, 64), (32, 64), (32, 64), (64, 64), (128, 64),
      (128, 64), (64, 128), (64,), (64,)])
  with pytest.raises(ValueError, match="modes must be a non-empty subset"):
    decoder_memory.run(modes=("both",))
