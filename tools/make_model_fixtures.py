#!/usr/bin/env python3
"""Reference fixtures for the TinyQ model runtime, made with the real Hugging Face stack.

Run: /tmp/v/bin/python tools/make_model_fixtures.py [name ...]

Writes tests/fixtures/models/ (see its README.md):
  <name>/config.json, <name>/model.safetensors   tiny random checkpoint of one family, saved by
                                                 transformers' save_pretrained (safetensors)
  <name>/reference.safetensors                   input_ids, logits, greedy_ids
  <name>/reference.json                          loss, greedy margins, what the fixture exercises
  tinystories-reference.safetensors / .json      TinyStories-656K (models/tinystories-656k)
  tinystories_paragraph.txt                      text for the perplexity references
  chat_template.json                             a chat template and transformers' renderings

Every reference is computed in float32 with attn_implementation="eager" on the exact weights that
were saved (bf16/f16 checkpoints are reloaded and upcast, so the reference sees the rounded values).
Deterministic: seeds are fixed and the output is byte-identical on rerun (safetensors metadata is
fixed, JSON is written with sorted keys). With names, only those fixtures are regenerated.
"""

import copy
import json
import math
import os
import shutil
import sys
import tempfile

import torch
import transformers
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "models")
TINYSTORIES = os.path.join(ROOT, "models", "tinystories-656k")

SEQ = 16  # tokens in each family reference sequence
NEW = 8  # greedy tokens generated after it

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


def log(msg):
    print(msg, flush=True)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    log(f"  wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


def write_tensors(path, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"format": "pt"})
    shapes = ", ".join(f"{k} {str(v.dtype).replace('torch.', '')} {list(v.shape)}" for k, v in tensors.items())
    log(f"  wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes): {shapes}")


# --------------------------------------------------------------------------------------------------
# Family fixtures


def is_norm(module):
    name = type(module).__name__
    return isinstance(module, torch.nn.LayerNorm) or "RMSNorm" in name or "LayerNorm" in name


def randomize(model, seed, one_plus_norm, std=0.3, embed_std=1.0):
    """Every parameter from a seeded normal. Norm weights vary around their neutral value (1, or 0
    for Gemma's `1 + w` norms) so a runtime that ignores or mis-applies them fails."""
    g = torch.Generator().manual_seed(seed)
    norm_params = set()
    for module in model.modules():
        if is_norm(module):
            for p in module.parameters(recurse=False):
                norm_params.add(id(p))
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if id(p) in norm_params:
                if name.endswith("bias"):
                    value = 0.2 * noise
                else:
                    value = (0.0 if one_plus_norm else 1.0) + 0.3 * noise
            elif name.endswith("bias"):
                value = 0.2 * noise
            elif p.dim() == 2 and ("embed" in name or "wte" in name or "wpe" in name):
                value = embed_std * noise
            else:
                value = std * noise
            p.copy_(value.to(p.dtype))


def greedy_with_margins(model, ids, new_tokens):
    """Greedy decoding by full recomputation (no cache), returning the ids and, per step, the gap
    between the best and second-best logit (a small gap would make the greedy check fragile)."""
    seq = ids.clone()
    margins = []
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(seq[None], use_cache=False).logits[0, -1]
            top = torch.topk(logits, 2)
            margins.append(float(top.values[0] - top.values[1]))
            seq = torch.cat([seq, top.indices[:1]])
    return seq, margins


def ablated_logits(model, ids, overrides):
    """Logits of the same weights under a config with `overrides` applied (e.g. no sliding
    window): the fixture must depend on the feature it is meant to exercise."""
    cfg = copy.deepcopy(model.config)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    other = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    other.load_state_dict(model.state_dict())
    other.eval()
    with torch.no_grad():
        return other(ids[None], use_cache=False).logits[0]


def family_fixture(name, config_kwargs, *, seed, dtype=torch.bfloat16, one_plus_norm=False,
                   exercises="", legacy_config=None, ablations=None):
    """Builds, saves, reloads and references one tiny random model.

    legacy_config: optional function(config_dict) -> config_dict that rewrites the saved config.json
    into the layout older transformers (4.x) wrote and that Hub checkpoints carry (e.g. `rope_theta`
    + `rope_scaling` instead of v5's `rope_parameters`). The reference is computed from the
    rewritten file, and the script checks it loads to the same model as the original."""
    log(f"{name}:")
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    torch.manual_seed(seed)
    config = AutoConfig.for_model(**config_kwargs)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    # Tied embeddings double as the output matrix: a smaller std keeps the logits from being
    # dominated by "repeat the input token", which would make greedy decoding degenerate.
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    randomize(model, seed, one_plus_norm, embed_std=0.3 if tied else 1.0)
    model = model.to(dtype)
    model.save_pretrained(folder, safe_serialization=True)
    # Only config.json + model.safetensors are part of the fixture.
    for extra in os.listdir(folder):
        if extra not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(folder, extra))
    config_path = os.path.join(folder, "config.json")
    with open(config_path, encoding="utf-8") as f:
        saved = json.load(f)
    if legacy_config is not None:
        v5_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
        saved = legacy_config(saved)
    saved.pop("transformers_version", None)  # keeps reruns under other versions byte-identical
    write_json(config_path, saved)

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    g = torch.Generator().manual_seed(seed + 1)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (SEQ,), generator=g, dtype=torch.int64)
    with torch.no_grad():
        out = model(ids[None], labels=ids[None], use_cache=False)
        logits = out.logits[0].float()
        loss = float(out.loss)
        if legacy_config is not None:
            same = v5_model(ids[None], use_cache=False).logits[0]
            assert torch.equal(same, logits), f"{name}: legacy config.json loads to a different model"
        # Cached greedy decoding (transformers' generate), eos disabled so all NEW tokens appear.
        # An explicit all-ones mask: without one, generate() infers padding from pad_token_id and
        # would mask every prompt position that happens to hold that id.
        gen = model.generate(
            ids[None], attention_mask=torch.ones(1, SEQ, dtype=torch.int64), max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
            eos_token_id=None, pad_token_id=0, use_cache=True,
        )[0]
    nocache, margins = greedy_with_margins(model, ids, NEW)
    assert torch.equal(gen, nocache), f"{name}: generate() with cache disagrees with recomputation"
    assert min(margins) > 1e-2, f"{name}: greedy margin {min(margins)} too small, pick another seed"
    assert torch.isfinite(logits).all()
    scale = float(logits.abs().max())
    assert float(logits.std()) > 0.5, f"{name}: logits nearly constant (std {float(logits.std())})"

    ablation_diffs = {}
    for label, overrides in (ablations or {}).items():
        diff = float((ablated_logits(model, ids, overrides) - logits).abs().max())
        assert diff > 1e-2 * scale, f"{name}: logits barely depend on {label} ({diff})"
        ablation_diffs[label] = diff

    # Cross-check: the stored weights really are what the reference ran on.
    stored = load_file(os.path.join(folder, "model.safetensors"))
    stored_dtypes = sorted({str(t.dtype).replace("torch.", "") for t in stored.values()})

    write_tensors(os.path.join(folder, "reference.safetensors"), {
        "input_ids": ids,
        "logits": logits,
        "greedy_ids": gen,
    })
    write_json(os.path.join(folder, "reference.json"), {
        "model_type": saved["model_type"],
        "exercises": exercises,
        "seq_len": SEQ,
        "new_tokens": NEW,
        "loss": loss,
        "ppl": math.exp(loss),
        "logit_abs_max": scale,
        "greedy_min_margin": min(margins),
        "stored_dtypes": stored_dtypes,
        "ablations": {k: {"overrides": v, "max_abs_logit_change": ablation_diffs[k]}
                      for k, v in (ablations or {}).items()},
        "parameters": sum(int(t.numel()) for t in stored.values()),
        "tensors": {k: list(v.shape) for k, v in sorted(stored.items())},
    })
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    log(f"  {name}: loss {loss:.4f}, |logits| max {scale:.2f}, min greedy margin {min(margins):.4f}, "
        f"{size} bytes in folder")


def hub_names_fixture(src, name, rename, extra, exercises):
    """The `src` fixture's weights re-saved under the tensor names (and with the buffers) that the
    Hub checkpoints of that family carry; transformers must load it to identical logits."""
    log(f"{name}:")
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    src_dir = os.path.join(OUT, src)
    weights = load_file(os.path.join(src_dir, "model.safetensors"))
    renamed = {rename(k): v for k, v in weights.items()}
    renamed.update(extra(weights))
    save_file(renamed, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(os.path.join(src_dir, "config.json"), os.path.join(folder, "config.json"))
    ref = load_file(os.path.join(src_dir, "reference.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    ids = ref["input_ids"]
    with torch.no_grad():
        logits = model(ids[None], use_cache=False).logits[0]
        gen = model.generate(ids[None], attention_mask=torch.ones(1, len(ids), dtype=torch.int64),
                             max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, eos_token_id=None,
                             pad_token_id=0)[0]
    assert torch.equal(logits, ref["logits"]), f"{name}: renamed checkpoint gives other logits than {src}"
    assert torch.equal(gen, ref["greedy_ids"]), f"{name}: renamed checkpoint generates differently"
    write_tensors(os.path.join(folder, "reference.safetensors"), dict(ref))
    with open(os.path.join(src_dir, "reference.json"), encoding="utf-8") as f:
        info = json.load(f)
    info["exercises"] = exercises
    info["same_weights_as"] = src
    info["parameters"] = sum(int(t.numel()) for t in renamed.values())
    info["tensors"] = {k: list(v.shape) for k, v in sorted(renamed.items())}
    info["stored_dtypes"] = sorted({str(t.dtype).replace("torch.", "") for t in renamed.values()})
    write_json(os.path.join(folder, "reference.json"), info)


def gpt2_mask_buffers(weights):
    layers = sorted({int(k.split(".")[2]) for k in weights if k.startswith("transformer.h.")})
    n = 64  # n_positions
    mask = torch.tril(torch.ones(n, n, dtype=torch.float32)).view(1, 1, n, n)
    return {f"h.{i}.attn.bias": mask.clone() for i in layers}


def legacy_rope(saved):
    """v5 `rope_parameters` -> v4 / Hub layout: top-level `rope_theta` and `rope_scaling`
    (with both `type` and `rope_type`, as Llama 3.x checkpoints on the Hub have)."""
    out = dict(saved)
    rp = dict(out.pop("rope_parameters"))
    out["rope_theta"] = rp.pop("rope_theta")
    if "partial_rotary_factor" in rp:
        out["partial_rotary_factor"] = rp.pop("partial_rotary_factor")
    kind = rp.pop("rope_type")
    if kind == "default" and not rp:
        out["rope_scaling"] = None
    else:
        out["rope_scaling"] = {"rope_type": kind, "type": kind, **rp}
    if "dtype" in out:
        out["torch_dtype"] = out.pop("dtype")
    return out


SMALL = dict(vocab_size=96, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
             bos_token_id=1, eos_token_id=2, pad_token_id=0)


def legacy_gemma(saved):
    """Gemma 1 checkpoints on the Hub say `hidden_act: "gelu"` (meaning the tanh approximation,
    which transformers substitutes) next to `hidden_activation: "gelu_pytorch_tanh"`."""
    out = legacy_rope(saved)
    out["hidden_act"] = "gelu"
    out["hidden_activation"] = "gelu_pytorch_tanh"
    return out


def default_rope(theta):
    return {"rope_type": "default", "rope_theta": theta}


def families():
    return {
        "llama": lambda: family_fixture(
            "llama", dict(SMALL, model_type="llama", rms_norm_eps=1e-5, tie_word_embeddings=False),
            seed=100, exercises="plain Llama: RMSNorm, GQA 4/2 heads, head_dim 12, rope theta 10000, SwiGLU, untied lm_head",
            ablations={"rope theta 1e6": {"rope_parameters": default_rope(1e6)}}),
        "llama3-rope": lambda: family_fixture(
            "llama3-rope", dict(SMALL, model_type="llama", tie_word_embeddings=True, max_position_embeddings=128,
                                rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                 "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                 "original_max_position_embeddings": 64}),
            seed=5, legacy_config=legacy_rope,
            ablations={"unscaled rope": {"rope_parameters": default_rope(500000.0)}},
            exercises="rope_scaling llama3 (factor 8, low 1, high 4, original 64: with head_dim 12 and theta 5e5 the "
                      "six frequencies fall in all three bands: kept, smoothed, divided); tied embeddings (no lm_head "
                      "tensor); config.json in the Hub (v4) layout rope_theta + rope_scaling"),
        "llama-linear-rope": lambda: family_fixture(
            "llama-linear-rope", dict(SMALL, model_type="llama", tie_word_embeddings=False,
                                      rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}),
            seed=3, legacy_config=legacy_rope,
            ablations={"unscaled rope": {"rope_parameters": default_rope(10000.0)}},
            exercises="rope_scaling linear factor 4 (positions divided by 4); config.json in the Hub (v4) layout"),
        "mistral": lambda: family_fixture(
            "mistral", dict(SMALL, model_type="mistral", sliding_window=4, head_dim=12, tie_word_embeddings=False),
            seed=400, ablations={"no sliding window": {"sliding_window": None}},
            exercises="sliding_window 4 < seq 16: query i attends keys j with i - 4 < j <= i (4 keys incl. itself)"),
        "qwen2": lambda: family_fixture(
            "qwen2", dict(SMALL, model_type="qwen2", tie_word_embeddings=False, rms_norm_eps=1e-6),
            seed=500, exercises="q/k/v projections with bias (o_proj without)"),
        "gemma": lambda: family_fixture(
            "gemma", dict(SMALL, model_type="gemma", head_dim=16, hidden_act="gelu_pytorch_tanh",
                          tie_word_embeddings=True),
            seed=600, one_plus_norm=True, legacy_config=legacy_gemma,
            exercises="Gemma: RMSNorm (x * (1 + w)) in f32, embeddings scaled by sqrt(hidden) = sqrt(48), head_dim 16 "
                      "(4 x 16 = 64 != hidden 48), GeGLU with gelu tanh approximation, tied embeddings; config.json in "
                      "the Hub layout (hidden_act \"gelu\" + hidden_activation \"gelu_pytorch_tanh\", rope_theta)"),
        "gemma2": lambda: family_fixture(
            "gemma2", dict(SMALL, model_type="gemma2", head_dim=16, query_pre_attn_scalar=32, sliding_window=4,
                           attn_logit_softcapping=4.0, final_logit_softcapping=10.0, tie_word_embeddings=False),
            seed=700, one_plus_norm=True,
            ablations={"no attention soft-capping": {"attn_logit_softcapping": None},
                       "no final soft-capping": {"final_logit_softcapping": None},
                       "query_pre_attn_scalar = head_dim": {"query_pre_attn_scalar": 16},
                       "sliding window wider than the sequence": {"sliding_window": 64}},
            exercises="Gemma 2: layer_types [sliding_attention, full_attention] (layer 0 has window 4 < seq 16), "
                      "attention scale query_pre_attn_scalar**-0.5 = 32**-0.5 (not head_dim 16), attention-score "
                      "soft-capping 4 (tanh(s / 4) * 4 before the mask), final logit soft-capping 10, four norms per "
                      "layer (input, post_attention, pre_feedforward, post_feedforward), 1 + w norms, embed scale; untied lm_head "
                      "(tied random Gemma 2 models only ever repeat their last token, which would make greedy useless)"),
        "phi3": lambda: family_fixture(
            "phi3", dict(SMALL, model_type="phi3", tie_word_embeddings=False, sliding_window=None),
            seed=800, exercises="fused qkv_proj ([q; k; v] rows: 48 + 24 + 24) and gate_up_proj ([gate; up] rows), "
                                "full rotary"),
        "phi3-partial": lambda: family_fixture(
            "phi3-partial", dict(SMALL, model_type="phi3", tie_word_embeddings=False, sliding_window=None,
                                 partial_rotary_factor=0.5),
            seed=900, legacy_config=legacy_rope,
            ablations={"full rotary": {"partial_rotary_factor": 1.0,
                                       "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                           "partial_rotary_factor": 1.0}}},
            exercises="Phi-3 with partial_rotary_factor 0.5: rope (rotate-half layout) on the first 6 of 12 dims of "
                      "each head, the rest passes through; config.json in the Hub layout (top-level "
                      "partial_rotary_factor, rope_theta)"),
        "gpt2": lambda: family_fixture(
            "gpt2", dict(model_type="gpt2", vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                         bos_token_id=1, eos_token_id=2),
            seed=4, dtype=torch.float32,
            exercises="GPT-2: Conv1D weights stored [in, out] (c_attn [32, 96] = q|k|v columns, c_proj, c_fc, "
                      "mlp.c_proj), learned positions wpe, pre-LayerNorm with bias, gelu_new (tanh), n_inner null "
                      "(= 4 x n_embd), tied lm_head; stored in f32 like the Hub's gpt2"),
        "opt": lambda: family_fixture(
            "opt", dict(model_type="opt", vocab_size=96, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32,
                        do_layer_norm_before=True, bos_token_id=1, eos_token_id=2, pad_token_id=0),
            seed=201, dtype=torch.float16,
            exercises="OPT (opt-125m style): learned positions with offset 2 (embed_positions has 64 + 2 rows; "
                      "position p reads row p + 2), ReLU MLP (fc1, fc2), pre-LayerNorm, all linears with bias, "
                      "final_layer_norm, tied lm_head; stored in f16 like facebook/opt-125m"),
        "opt-proj": lambda: family_fixture(
            "opt-proj", dict(model_type="opt", vocab_size=96, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=16,
                             do_layer_norm_before=False, bos_token_id=1, eos_token_id=2, pad_token_id=0),
            seed=2, dtype=torch.float16,
            exercises="OPT (opt-350m style): word_embed_proj_dim 16 != hidden 32 (project_in [32, 16] after the "
                      "embedding, project_out [16, 32] before the tied lm_head [96, 16]), do_layer_norm_before false: "
                      "post-LayerNorm (norm after each residual add) and no final_layer_norm; f16"),
        "codegen": lambda: family_fixture(
            "codegen", dict(model_type="codegen", vocab_size=96, n_embd=48, n_layer=2, n_head=8, rotary_dim=4,
                            n_inner=96, n_positions=64, n_ctx=64, bos_token_id=1, eos_token_id=2,
                            tie_word_embeddings=False),
            seed=1300, ablations={"full rotary": {"rotary_dim": 6}},
            exercises="CodeGen (GPT-J style): one ln_1 feeding attention and MLP in parallel (x + attn(ln(x)) + "
                      "mlp(ln(x))), fused qkv_proj with CodeGen's mp_num=4 layout (see the README), GPT-J rotary on "
                      "the first rotary_dim 4 of head_dim 6 in interleaved pairs (rotate_every_two), gelu_new, "
                      "lm_head with bias, untied"),
        "gpt2-hub-names": lambda: hub_names_fixture(
            "gpt2", "gpt2-hub-names", lambda k: k.removeprefix("transformer."), gpt2_mask_buffers,
            "the gpt2 fixture's weights under openai-community/gpt2's names: no `transformer.` prefix "
            "(wte.weight, h.0.attn.c_attn.weight, ln_f.weight) and a causal-mask buffer h.N.attn.bias "
            "[1, 1, 64, 64] per layer that a loader must ignore; same reference"),
        "opt-hub-names": lambda: hub_names_fixture(
            "opt", "opt-hub-names", lambda k: k.removeprefix("model."), lambda w: {},
            "the opt fixture's weights under facebook/opt-125m's names: `decoder.` instead of "
            "`model.decoder.` (decoder.embed_tokens.weight, decoder.layers.0.fc1.weight, ...); same reference"),
    }


# --------------------------------------------------------------------------------------------------
# TinyStories-656K


def tinystories():
    log("tinystories:")
    model = AutoModelForCausalLM.from_pretrained(TINYSTORIES, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    tok = AutoTokenizer.from_pretrained(TINYSTORIES)
    raw = Tokenizer.from_file(os.path.join(TINYSTORIES, "tokenizer.json"))
    tensors = {}
    info = {"model": "models/tinystories-656k", "transformers": transformers.__version__}

    def encode(text):
        ids = tok(text)["input_ids"]
        assert raw.encode(text).ids == ids, f"tokenizers and transformers disagree on {text!r}"
        return torch.tensor(ids, dtype=torch.int64)

    prompt = "Once upon a time"
    long_prompt = ("Once upon a time, there was a little girl named Lily. She loved to play in the park with her "
                   "friends. One day, she saw a big red ball under a tree.")
    with torch.no_grad():
        for key, text in (("prompt", prompt), ("long_prompt", long_prompt)):
            ids = encode(text)
            tensors[f"{key}_ids"] = ids
            tensors[f"{key}_logits"] = model(ids[None], use_cache=False).logits[0].float()
            info[key] = text
            info[f"{key}_tokens"] = len(ids)

        ids = tensors["prompt_ids"]
        mask = torch.ones(1, len(ids), dtype=torch.int64)
        gen = model.generate(ids[None], attention_mask=mask, max_new_tokens=48, min_new_tokens=48, do_sample=False,
                             eos_token_id=None, pad_token_id=0)[0]
        gen_eos = model.generate(ids[None], attention_mask=mask, max_new_tokens=48, do_sample=False, pad_token_id=0)[0]
    nocache, margins = greedy_with_margins(model, ids, 48)
    assert torch.equal(gen, nocache), "tinystories: cached generate disagrees with recomputation"
    tensors["greedy_ids"] = gen
    info["greedy_new_tokens"] = 48
    info["greedy_min_margin"] = min(margins)
    info["greedy_text"] = tok.decode(gen, skip_special_tokens=True)
    info["greedy_text_with_special"] = tok.decode(gen)
    info["greedy_new_text"] = tok.decode(gen[len(ids):], skip_special_tokens=True)
    info["greedy_stops_at_eos"] = {
        "ids": gen_eos.tolist(),
        "note": "generate() with the model's eos_token_id 2: stops after emitting it (included) or at 48 new tokens",
    }

    # Perplexity of the committed paragraph.
    with open(os.path.join(OUT, "tinystories_paragraph.txt"), encoding="utf-8") as f:
        paragraph = f.read()
    enc = encode(paragraph)
    tensors["paragraph_ids"] = enc
    with torch.no_grad():
        full = model(enc[None], labels=enc[None], use_cache=False)
        logp = torch.log_softmax(full.logits[0].double(), dim=-1)
        token_nll = -logp[:-1].gather(1, enc[1:, None])[:, 0]
    tensors["paragraph_token_nll"] = token_nll.float()
    n_pred = len(enc) - 1
    info["paragraph"] = {
        "file": "tinystories_paragraph.txt",
        "tokens": len(enc),
        "predicted_tokens": n_pred,
        "loss": float(full.loss),
        "nll_sum": float(full.loss) * n_pred,
        "ppl": math.exp(float(full.loss)),
        "note": "one window over the whole text (BOS + paragraph): ppl = exp(model(ids, labels=ids).loss); "
                "paragraph_token_nll[i] = -log p(ids[i+1] | ids[..i]) in float64 from the same logits",
    }
    info["paragraph_sliding"] = [sliding_ppl(model, enc, ctx, stride, token_nll) for ctx, stride in ((64, 32),)]

    # Tokenizations of sample strings.
    samples = [
        "Once upon a time",
        "Hello, world! How are you?",
        "  two leading and two trailing spaces  ",
        "The year 2024 had 366 days, not 365.",
        "café naïve — ünïcödé 日本語 🙂",
        "<|start_story|>Lily smiled.<|end_story|>",
        "",
        "line one\nline two\ttabbed",
        "don't stop!!! ... ok?",
        "Tom said, \"Yes, Mom.\" Then he ran.",
        "a",
        " ",
    ]
    cases = []
    for s in samples:
        # The tokenizers library runs tokenizer.json as written (as transformers 4.x's fast tokenizer
        # and the npm @huggingface/tokenizers do). transformers 5.x's LlamaTokenizer rebuilds the
        # pre-tokenization from its class defaults instead (Metaspace prepend_scheme "first", no
        # <unk> for unknown characters), which differs on a few inputs: both are recorded.
        enc_raw = raw.encode(s)
        raw_plain = raw.encode(s, add_special_tokens=False).ids
        tf_ids = tok(s)["input_ids"]
        tf_plain = tok(s, add_special_tokens=False)["input_ids"]
        case = {
            "text": s,
            "ids": enc_raw.ids,
            "ids_no_special": raw_plain,
            "tokens": enc_raw.tokens,
            "decoded": raw.decode(enc_raw.ids, skip_special_tokens=False),
            "decoded_skip_special": raw.decode(enc_raw.ids, skip_special_tokens=True),
            "transformers": {
                "ids": tf_ids,
                "ids_no_special": tf_plain,
                "tokens": tok.convert_ids_to_tokens(tf_ids),
                "decoded": tok.decode(tf_ids),
                "decoded_skip_special": tok.decode(tf_ids, skip_special_tokens=True),
            },
        }
        case["ids_agree"] = tf_ids == enc_raw.ids and tf_plain == raw_plain
        case["decoded_agree"] = (case["transformers"]["decoded"] == case["decoded"]
                                 and case["transformers"]["decoded_skip_special"] == case["decoded_skip_special"])
        cases.append(case)
    info["tokenization"] = cases
    info["tokenization_note"] = (
        "ids/tokens/decoded*: the tokenizers library on models/tinystories-656k/tokenizer.json as written (normalizer "
        "Prepend('▁') + Replace(' ', '▁'), BPE with unk). transformers.*: AutoTokenizer of transformers "
        f"{transformers.__version__}, which replaces that normalizer with a Metaspace pre-tokenizer "
        "(prepend_scheme 'first') and drops unknown characters instead of emitting <unk>; ids_agree says whether the ids "
        "match. decoded_agree: tokenizers' decode(skip_special_tokens=True) keeps <|start_story|> on this file (its "
        "added tokens are also in the BPE vocab), transformers' decode drops it. Prompts and the paragraph tokenize identically in both (the script asserts it).")
    info["special_tokens"] = {"bos": [tok.bos_token, tok.bos_token_id], "eos": [tok.eos_token, tok.eos_token_id],
                              "unk": [tok.unk_token, tok.unk_token_id], "pad": [tok.pad_token, tok.pad_token_id]}

    write_tensors(os.path.join(OUT, "tinystories-reference.safetensors"), tensors)
    write_json(os.path.join(OUT, "tinystories-reference.json"), info)
    log(f"  paragraph: {len(enc)} tokens, ppl {info['paragraph']['ppl']:.4f}; "
        f"sliding {info['paragraph_sliding'][0]['ppl_recipe']:.4f} (recipe) / "
        f"{info['paragraph_sliding'][0]['ppl']:.4f} (exact); greedy: {info['greedy_new_text']!r}")


def sliding_ppl(model, enc, max_length, stride, token_nll):
    """The transformers guide's sliding-window recipe ("Perplexity of fixed-length models"), as
    written there, plus the exact per-token sum over the same windows."""
    input_all = enc[None]
    seq_len = input_all.size(1)
    nll_sum = 0.0
    n_tokens = 0
    prev_end_loc = 0
    windows = []
    exact_nll = 0.0
    exact_tokens = 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
        input_ids = input_all[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            outputs = model(input_ids, labels=target_ids, use_cache=False)
            neg_log_likelihood = outputs.loss
            logp = torch.log_softmax(outputs.logits[0].double(), dim=-1)
        num_valid_tokens = (target_ids != -100).sum().item()
        batch_size = target_ids.size(0)
        num_loss_tokens = num_valid_tokens - batch_size
        nll_sum += float(neg_log_likelihood) * num_loss_tokens
        n_tokens += num_loss_tokens
        # What the loss really averaged: labels at window positions 1.. that are not -100.
        scored = [t for t in range(1, end_loc - begin_loc) if target_ids[0, t] != -100]
        window_nll = float(sum(-logp[t - 1, input_ids[0, t]] for t in scored))
        exact_nll += window_nll
        exact_tokens += len(scored)
        windows.append({"begin": begin_loc, "end": end_loc, "trg_len": trg_len, "loss": float(neg_log_likelihood),
                        "recipe_tokens": num_loss_tokens, "scored_tokens": len(scored),
                        "scored_from": begin_loc + scored[0], "nll_sum": window_nll})
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return {
        "ctx": max_length,
        "stride": stride,
        "windows": windows,
        "ppl_recipe": math.exp(nll_sum / n_tokens),
        "nll_recipe": nll_sum,
        "tokens_recipe": n_tokens,
        "ppl": math.exp(exact_nll / exact_tokens),
        "nll": exact_nll,
        "tokens": exact_tokens,
        "note": "ppl_recipe/nll_recipe/tokens_recipe: the guide's loop verbatim (it weights every window's mean loss "
                "by trg_len - 1, although windows after the first score trg_len tokens). ppl/nll/tokens: the exact "
                "sum of -log p over the tokens those windows score (each token after the first scored once, with at "
                "most ctx - 1 tokens of context).",
    }


# --------------------------------------------------------------------------------------------------
# Chat template

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown role: ' + message['role']) }}"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] | trim }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_template():
    log("chat_template:")
    with open(os.path.join(TINYSTORIES, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config["chat_template"] = CHAT_TEMPLATE
    cases_in = [
        ([{"role": "user", "content": "Tell me a story about a cat."}], True),
        ([{"role": "system", "content": "You are a kind storyteller. "},
          {"role": "user", "content": "Who is Lily?"},
          {"role": "assistant", "content": "  Lily is a little girl who loves the park.\n"},
          {"role": "user", "content": "What did she find?"}], True),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], False),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(os.path.join(TINYSTORIES, "tokenizer.json"), tmp)
        shutil.copy(os.path.join(TINYSTORIES, "special_tokens_map.json"), tmp)
        with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f)
        tok = AutoTokenizer.from_pretrained(tmp)
        raw = Tokenizer.from_file(os.path.join(tmp, "tokenizer.json"))
        cases = []
        for messages, gen_prompt in cases_in:
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            raw_ids = raw.encode(text, add_special_tokens=False).ids
            cases.append({"messages": messages, "add_generation_prompt": gen_prompt, "text": text,
                          "ids_no_special": raw_ids, "transformers_ids_no_special": ids})
        try:
            tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)
            raise AssertionError("raise_exception did not raise")
        except Exception as e:  # noqa: BLE001 (jinja's TemplateError)
            error = str(e)
    write_json(os.path.join(OUT, "chat_template.json"), {
        "tokenizer_config": config,
        "tokenizer": "models/tinystories-656k/tokenizer.json",
        "cases": cases,
        "unknown_role": {"messages": [{"role": "tool", "content": "x"}], "error": error},
        "note": "text = AutoTokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...) with "
                "tokenizer_config as given; ids_no_special = tokenizers' encode(text, add_special_tokens=False) on "
                "tokenizer.json, transformers_ids_no_special = the same through AutoTokenizer (the template "
                "already emits bos_token, so tokenizing with special tokens would add a second BOS)",
    })


# --------------------------------------------------------------------------------------------------


def main(argv):
    os.makedirs(OUT, exist_ok=True)
    jobs = dict(families())
    jobs["tinystories"] = tinystories
    jobs["chat_template"] = chat_template
    names = argv or list(jobs)
    unknown = [n for n in names if n not in jobs]
    if unknown:
        sys.exit(f"unknown fixture(s) {unknown}; known: {list(jobs)}")
    log(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for n in names:
        jobs[n]()


if __name__ == "__main__":
    main(sys.argv[1:])
