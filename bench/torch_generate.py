"""PyTorch eager fp32 generation speed on a checkpoint folder, for
bench/generate_bench.ts: transformers' LlamaForCausalLM in float32 with eager
attention and its KV cache; prefill of N random prompt ids, then greedy
decode of M tokens one at a time (each step feeds one token with the cache).
Prints one JSON line: prefill_tok_s, decode_tok_s, torch.

    /tmp/v/bin/python bench/torch_generate.py DIR [--prompt-tokens 128]
        [--new-tokens 64] [--threads 2]
"""

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = AutoModelForCausalLM.from_pretrained(
        a.dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(3, vocab, (1, a.prompt_tokens), generator=g)
    with torch.inference_mode():
        # warm-up
        out = model(ids[:, :8], use_cache=True)
        t0 = time.perf_counter()
        out = model(ids, use_cache=True)
        prefill = time.perf_counter() - t0
        past = out.past_key_values
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        t0 = time.perf_counter()
        for _ in range(a.new_tokens - 1):
            out = model(tok, past_key_values=past, use_cache=True)
            past = out.past_key_values
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
        decode = time.perf_counter() - t0
    print(json.dumps({
        "prefill_tok_s": a.prompt_tokens / prefill,
        "decode_tok_s": (a.new_tokens - 1) / decode,
        "torch": f"torch {torch.__version__}, {a.threads} threads, fp32 eager, KV cache",
    }))


if __name__ == "__main__":
    main()
