"""Writes random Llama checkpoints of the issue-16 benchmark shape as GGUF (Q8_0, Q4_0).

The 0.71 B Llama shape of bench/llama_cpp_bench.ts and bench/decode_shape_bench.ts:
hidden 2048, 16 layers, intermediate 5632, 32 heads / 4 KV heads, vocab 32000.
The weights are random normal (scaled like a trained model's), so the files say
nothing about quality: they exist to time llama.cpp's kernels on the very shapes
our kernels are timed on. The tokenizer is a synthetic SentencePiece-style vocab
(control tokens, 256 byte tokens, then plain pieces) that llama.cpp accepts.

    /tmp/v/bin/python tools/make_llama_gguf.py OUT_DIR [--types Q8_0,Q4_0]

Needs numpy and the `gguf` package (gguf-py, whose quantizers write the blocks).
"""
import argparse
import os
import sys

import numpy as np
import gguf

HIDDEN, LAYERS, INTER, HEADS, KV_HEADS, VOCAB, CTX = 2048, 16, 5632, 32, 4, 32000, 2048


def tensors(rng):
    head_dim = HIDDEN // HEADS
    kv = KV_HEADS * head_dim
    yield "token_embd.weight", (VOCAB, HIDDEN), True
    for i in range(LAYERS):
        p = f"blk.{i}."
        yield p + "attn_norm.weight", (HIDDEN,), False
        yield p + "attn_q.weight", (HIDDEN, HIDDEN), True
        yield p + "attn_k.weight", (kv, HIDDEN), True
        yield p + "attn_v.weight", (kv, HIDDEN), True
        yield p + "attn_output.weight", (HIDDEN, HIDDEN), True
        yield p + "ffn_norm.weight", (HIDDEN,), False
        yield p + "ffn_gate.weight", (INTER, HIDDEN), True
        yield p + "ffn_up.weight", (INTER, HIDDEN), True
        yield p + "ffn_down.weight", (HIDDEN, INTER), True
    yield "output_norm.weight", (HIDDEN,), False
    yield "output.weight", (VOCAB, HIDDEN), True


def write(path, qtype, seed):
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tinyq-bench-0.71b-random")
    w.add_context_length(CTX)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(INTER)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(
        gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == gguf.GGMLQuantizationType.Q8_0
        else gguf.LlamaFileType.MOSTLY_Q4_0
    )
    toks, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [2, 3, 3]
    for b in range(256):
        toks.append(f"<0x{b:02X}>")
        scores.append(0.0)
        types.append(6)
    letters = "abcdefghijklmnopqrstuvwxyz"
    i = 0
    while len(toks) < VOCAB:
        s, v = "", i
        while True:
            s = letters[v % 26] + s
            v //= 26
            if v == 0:
                break
        toks.append(("\u2581" if i % 2 else "") + s)
        scores.append(-float(i))
        types.append(1)
        i += 1
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    for name, shape, quantized in tensors(rng):
        if quantized:
            data = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
            q = gguf.quants.quantize(data, qtype)
            w.add_tensor(name, q, raw_dtype=qtype)
        else:
            w.add_tensor(name, np.ones(shape, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--types", default="Q8_0,Q4_0")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for t in a.types.split(","):
        path = os.path.join(a.out, f"llama-0.71b-random-{t.lower()}.gguf")
        if os.path.exists(path):
            print(f"{path} exists", file=sys.stderr)
            continue
        write(path + ".tmp", getattr(gguf.GGMLQuantizationType, t), 0)
        os.rename(path + ".tmp", path)
        print(path)


if __name__ == "__main__":
    main()
