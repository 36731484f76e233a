#!/usr/bin/env python3
"""Writes tests/fixtures/pytorch/: small PyTorch checkpoints made by
torch.save (the zip format) for the .bin reader, their safetensors twins made
by safetensors.torch.save_file, and hostile pickles the reader must refuse.

Run: /tmp/v/bin/python tools/make_pytorch_fixtures.py

Every hostile payload would create /tmp/tinyq-pwned-<name> if it were
unpickled by Python's pickle; this script checks that it does (so the tests
that assert the file never appears can fail), then removes the file.
"""
import io
import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import zipfile

import torch
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pytorch"


def tiny_llama(gen, dtype):
    """A 1-layer Llama state dict (hidden 32, intermediate 64, vocab 48) with a
    tied lm_head: the same storage as embed_tokens."""
    h, i, v = 32, 64, 48
    sd = {}
    sd["model.embed_tokens.weight"] = torch.randn(v, h, generator=gen).to(dtype)
    p = "model.layers.0."
    for n, shape in [
        ("self_attn.q_proj", (h, h)),
        ("self_attn.k_proj", (h, h)),
        ("self_attn.v_proj", (h, h)),
        ("self_attn.o_proj", (h, h)),
        ("mlp.gate_proj", (i, h)),
        ("mlp.up_proj", (i, h)),
        ("mlp.down_proj", (h, i)),
    ]:
        sd[p + n + ".weight"] = (torch.randn(*shape, generator=gen) * 0.1).to(dtype)
    sd[p + "input_layernorm.weight"] = torch.ones(h, dtype=dtype)
    sd[p + "post_attention_layernorm.weight"] = torch.ones(h, dtype=dtype)
    sd["model.norm.weight"] = torch.ones(h, dtype=dtype)
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]  # tied: one storage
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": h,
        "intermediate_size": i,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": v,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    }
    return sd, config


def contiguous_copy(sd):
    return {k: t.contiguous().clone() for k, t in sd.items()}


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=2) + "\n")


def make_models(gen):
    sd, config = tiny_llama(gen, torch.bfloat16)
    d = OUT / "llama_bin"
    d.mkdir(parents=True, exist_ok=True)
    torch.save(sd, d / "pytorch_model.bin")
    write_json(d / "config.json", config)
    d = OUT / "llama_safetensors"
    d.mkdir(parents=True, exist_ok=True)
    save_file(contiguous_copy(sd), d / "model.safetensors", metadata={"format": "pt"})
    write_json(d / "config.json", config)
    # Sharded: two .bin files and the index transformers writes.
    d = OUT / "llama_bin_sharded"
    d.mkdir(parents=True, exist_ok=True)
    names = list(sd)
    first = {k: sd[k] for k in names[:5]}
    second = {k: sd[k] for k in names[5:]}
    shards = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    torch.save(first, d / shards[0])
    torch.save(second, d / shards[1])
    weight_map = {k: shards[0] for k in first} | {k: shards[1] for k in second}
    total = sum(t.numel() * t.element_size() for t in sd.values())
    write_json(d / "pytorch_model.bin.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
    write_json(d / "config.json", config)


def make_families():
    """Tiny OPT and CodeGen models from transformers (random init): their real
    tensor names, saved as model.state_dict() with torch.save (OPT's lm_head
    shares the embedding's storage)."""
    from transformers import CodeGenConfig, CodeGenForCausalLM, OPTConfig, OPTForCausalLM

    torch.manual_seed(15)
    models = {
        "opt_bin": OPTForCausalLM(OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                                            num_attention_heads=2, max_position_embeddings=32,
                                            word_embed_proj_dim=8, bos_token_id=2, eos_token_id=2,
                                            pad_token_id=1)),
        "codegen_bin": CodeGenForCausalLM(CodeGenConfig(vocab_size=64, n_embd=16, n_layer=1, n_head=2,
                                                        n_positions=32, rotary_dim=4, n_ctx=32,
                                                        bos_token_id=0, eos_token_id=0)),
    }
    for name, m in models.items():
        d = OUT / name
        d.mkdir(parents=True, exist_ok=True)
        torch.save(m.state_dict(), d / "pytorch_model.bin")
        config = m.config.to_dict()
        config["architectures"] = [type(m).__name__]
        write_json(d / "config.json", config)


def make_views_model(gen):
    """Linear weights that are non-contiguous views (a transpose, every other
    row, a column slice) and a strided 1-D tensor, with a safetensors twin: the
    streaming writer must read them through the view, block by block."""
    big = torch.randn(48, 64, generator=gen).bfloat16()
    rows = torch.randn(80, 32, generator=gen).bfloat16()
    wide = torch.randn(16, 100, generator=gen).bfloat16()
    sd = {
        "a.weight": big.t(),  # [64, 48], strides (1, 64)
        "b.weight": rows[::2],  # [40, 32], strides (64, 1)
        "c.weight": wide[:, 4:68],  # [16, 64], offset 4, strides (100, 1)
        "c.bias": torch.randn(200, generator=gen).bfloat16()[::2][:16],
        "n.weight": torch.arange(64, dtype=torch.bfloat16)[::4],
    }
    for name, kind in [("views_bin", "bin"), ("views_safetensors", "st")]:
        d = OUT / name
        d.mkdir(parents=True, exist_ok=True)
        if kind == "bin":
            torch.save(sd, d / "pytorch_model.bin")
        else:
            save_file(contiguous_copy(sd), d / "model.safetensors", metadata={"format": "pt"})


def make_tinystories_bin():
    """The committed TinyStories-656K as torch.save writes it (the weights of
    models/tinystories-656k/model.safetensors, unchanged): the tests pair it
    with that folder's config and tokenizer."""
    from safetensors.torch import load_file

    src = OUT.parent.parent.parent / "models" / "tinystories-656k" / "model.safetensors"
    torch.save(load_file(src), OUT / "tinystories-656k.bin")


def make_dtypes(gen):
    sd = {}
    sd["f32"] = torch.randn(3, 4, generator=gen)
    sd["f64"] = torch.randn(5, generator=gen, dtype=torch.float64)
    sd["f16"] = torch.randn(2, 3, generator=gen).half()
    sd["bf16"] = torch.randn(4, 2, generator=gen).bfloat16()
    sd["i64"] = torch.tensor([-(2**40), -1, 0, 2**50], dtype=torch.int64)
    sd["i32"] = torch.tensor([-7, 1 << 30, 3], dtype=torch.int32)
    sd["i16"] = torch.tensor([-300, 300], dtype=torch.int16)
    sd["i8"] = torch.tensor([-128, 0, 127], dtype=torch.int8)
    sd["u8"] = torch.tensor([0, 200, 255], dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False, True])
    sd["u16"] = torch.tensor([1, 65535], dtype=torch.uint16)  # UntypedStorage + _rebuild_tensor_v3
    sd["f8_e4m3"] = torch.tensor([0.5, -2.0, 448.0]).to(torch.float8_e4m3fn)
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 3)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd["view.transposed"] = base.t()  # non-contiguous, shares base's storage
    sd["view.base"] = base
    sd["view.offset"] = base[1:3, 2:5]  # storage offset 8, strides (6, 1)
    sd["view.strided"] = base[::2, ::3]  # every other row, every third column
    sd["view.flat_tail"] = base.view(-1)[20:]  # offset 20, contiguous
    sd["tied.a"] = torch.randn(2, 2, generator=gen)
    sd["tied.b"] = sd["tied.a"]
    sd["param"] = torch.nn.Parameter(torch.randn(2, generator=gen))  # _rebuild_parameter
    sd["expanded"] = torch.tensor([1.0, 2.0]).expand(3, 2)  # stride 0
    cube = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    sd["view.permuted3d"] = cube.permute(2, 0, 1)[1:, :, ::2]  # 3-D, every stride odd
    sd["view.cube"] = cube
    torch.save(sd, OUT / "dtypes.bin")
    save_file(contiguous_copy({k: t.detach() for k, t in sd.items()}), OUT / "dtypes.safetensors")


def fake_torch_zip(path, pickle_bytes, prefix="archive", extra=None, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        for name, data in [(f"{prefix}/data.pkl", pickle_bytes), (f"{prefix}/byteorder", "little"), *(extra or {}).items(), (f"{prefix}/version", "3\n")]:
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=compress)


def hostile_payloads():
    """name → raw pickle bytes whose unpickling by Python creates /tmp/tinyq-pwned-<name>."""
    p = {}

    def marker(n):
        return f"/tmp/tinyq-pwned-{n}"

    def sh(n):
        cmd = f"touch {marker(n)}".encode()
        return b"\x80\x02cos\nsystem\n" + b"X" + struct.pack("<I", len(cmd)) + cmd + b"\x85R."

    p["os_system"] = sh("os_system")
    code = f"open({marker('eval')!r}, 'w').close()".encode()
    p["eval"] = b"\x80\x02c__builtin__\neval\n" + b"X" + struct.pack("<I", len(code)) + code + b"\x85R."
    code = f"open({marker('builtins_eval')!r}, 'w').close()".encode()
    p["builtins_eval"] = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93" + b"X" + struct.pack("<I", len(code)) + code + b"\x85R."
    # The global hides inside a valid-looking state dict, as a tensor's value.
    cmd = f"touch {marker('in_dict')}".encode()
    p["in_dict"] = (b"\x80\x02}q\x00(X\x01\x00\x00\x00wcposix\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd + b"\x85Ru.")
    return p


def make_hostile():
    d = OUT / "hostile"
    d.mkdir(parents=True, exist_ok=True)
    for name, data in hostile_payloads().items():
        m = pathlib.Path(f"/tmp/tinyq-pwned-{name}")
        m.unlink(missing_ok=True)
        # Prove the payload is live: Python's unrestricted pickle runs it.
        subprocess.run([sys.executable, "-c", "import pickle,sys; pickle.loads(sys.stdin.buffer.read())"], input=data, check=False)
        assert m.exists(), f"payload {name} did not fire under pickle.loads"
        m.unlink()
        fake_torch_zip(d / f"{name}.bin", data)
    # Depth bombs: 100k nested MARKs; 100k nested lists on the stack; a list
    # nested 100k deep with a bounded stack (memo + POP), as a dict value.
    fake_torch_zip(d / "depth_marks.bin", b"\x80\x02" + b"(" * 100_000 + b".")
    fake_torch_zip(d / "depth_lists.bin", b"\x80\x02" + b"]" * 50_000 + b"a" * 49_999 + b".")
    deep = bytearray(b"\x80\x02}X\x01\x00\x00\x00w]q\x00")
    for k in range(1, 20_000):
        # stack: ... L(k-1)  →  L(k-1).append(Lk) with Lk memoised, then get Lk back
        deep += b"]r" + struct.pack("<I", k) + b"a" + b"0" + b"j" + struct.pack("<I", k)
    deep += b"0" + b"h\x00" + b"s."
    fake_torch_zip(d / "depth_memo.bin", bytes(deep))
    # Lengths far past the end of the pickle.
    fake_torch_zip(d / "huge_unicode.bin", b"\x80\x02X\xf0\xff\xff\xffabc.")
    fake_torch_zip(d / "huge_unicode8.bin", b"\x80\x04\x8d" + struct.pack("<Q", 2**62) + b"abc.")
    fake_torch_zip(d / "huge_long4.bin", b"\x80\x02\x8b" + struct.pack("<i", 2**31 - 1) + b"\x00.")
    fake_torch_zip(d / "huge_memo.bin", b"\x80\x02}r\xff\xff\xff\x7fj\xfe\xff\xff\x7f.")
    # A storage whose declared size is larger than its data file.
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buf)
    with zipfile.ZipFile(buf) as z:
        pkl = z.read("archive/data.pkl")
    short = pkl.replace(b"K\x04t", b"J\x00\x00\x00\x01t", 1)
    assert short != pkl
    fake_torch_zip(d / "storage_too_short.bin", short, extra={"archive/data/0": b"\x00" * 16})
    # Zips whose names leave the archive.
    at = (1980, 1, 1, 0, 0, 0)
    with zipfile.ZipFile(d / "zip_escape.bin", "w") as z:
        z.writestr(zipfile.ZipInfo("../../escape/data.pkl", at), b"\x80\x02}.")
        z.writestr(zipfile.ZipInfo("../../escape/byteorder", at), "little")
    with zipfile.ZipFile(d / "zip_absolute.bin", "w") as z:
        z.writestr(zipfile.ZipInfo("/tmp/archive/data.pkl", at), b"\x80\x02}.")
    # Deflated instead of stored.
    fake_torch_zip(d / "deflated.bin", b"\x80\x02}.", compress=zipfile.ZIP_DEFLATED)
    # Not a state dict: a bare tensor, and a list.
    torch.save(torch.zeros(2), d / "bare_tensor.bin")
    torch.save([torch.zeros(2)], d / "list.bin")
    # The legacy (pre-1.6) format.
    torch.save({"w": torch.zeros(2)}, d / "legacy.bin", _use_new_zipfile_serialization=False)


def main():
    gen = torch.Generator().manual_seed(15)
    OUT.mkdir(parents=True, exist_ok=True)
    make_models(gen)
    make_dtypes(gen)
    make_families()
    make_tinystories_bin()
    make_views_model(gen)
    make_hostile()
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
