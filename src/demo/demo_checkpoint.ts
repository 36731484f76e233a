/**
 * A small Llama-shaped checkpoint made from code: sharded bf16 safetensors,
 * `config.json` and a tokenizer stub, the same bytes on every run. It is what
 * `tinyq demo` quantizes, what the tests and benchmarks feed the CLI, and a
 * quick way to try TinyQ without downloading a model.
 *
 * @module
 */

import { join } from "node:path";
import { type DType, DTYPE_SIZE, type FloatDType } from "../dtype.ts";
import { numel } from "../tensor.ts";
import { type TensorEntry, writeSafetensors } from "../io/safetensors.ts";

/** Options of {@linkcode makeDemoCheckpoint}. */
export interface DemoCheckpointOptions {
  /** Decoder layers (default 4). */
  layers?: number;
  /** Hidden size (default 256). */
  hidden?: number;
  /**
   * MLP size (default 8/3 × hidden rounded to a multiple of 8: 680 for the
   * default hidden 256; Llama itself rounds up to a multiple of 256, 768).
   */
  intermediate?: number;
  /** Vocabulary size (default 2048). */
  vocab?: number;
  /** Attention heads (default 4). */
  heads?: number;
  /** Key/value heads (default 2: grouped-query attention). */
  kvHeads?: number;
  /** Weight dtype (default bf16). */
  dtype?: FloatDType;
  /** Number of shards (default 2; 1 writes `model.safetensors`). */
  shards?: number;
  /** Tie `lm_head` to the embedding: then there is no `lm_head.weight` (default false). */
  tieEmbeddings?: boolean;
  /** Seed of the weights (default 0). */
  seed?: number;
}

/** What {@linkcode makeDemoCheckpoint} wrote. */
export interface DemoCheckpoint {
  /** The folder. */
  path: string;
  /** Tensor names in file order. */
  tensors: string[];
  /** Sum of the tensors' bytes. */
  bytes: number;
  /** Shard file names. */
  shards: string[];
}

/** A deterministic stream of normal-ish numbers (Irwin–Hall of 4 uniforms). */
export function seededNormals(
  seed: number,
): (out: Float32Array) => Float32Array {
  let s = (seed ^ 0x9e3779b9) >>> 0 || 1;
  return (out) => {
    for (let i = 0; i < out.length; i++) {
      s ^= s << 13;
      s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5;
      s >>>= 0;
      const a = s;
      s ^= s << 13;
      s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5;
      s >>>= 0;
      // Four 16-bit uniforms: mean 2, variance 4/12 → standardize.
      const u = (a & 0xffff) + (a >>> 16) + (s & 0xffff) + (s >>> 16);
      out[i] = (u / 65535 - 2) * 1.7320508;
    }
    return out;
  };
}

function hashName(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) {
    h = Math.imul(h ^ name.charCodeAt(i), 16777619) >>> 0;
  }
  return h;
}

function encode(values: Float32Array, dtype: FloatDType): Uint8Array {
  if (dtype === "f32") return new Uint8Array(values.buffer);
  if (dtype === "f16") return new Uint8Array(Float16Array.from(values).buffer);
  const bits = new Uint32Array(values.buffer);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i]!;
    out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return new Uint8Array(out.buffer);
}

/** One tensor of a synthetic checkpoint: its values are made when written. */
export interface SyntheticTensor {
  /** Full name. */
  name: string;
  /** Dimensions. */
  shape: number[];
  /** Standard deviation of the values (0 for constant `mean`). */
  std: number;
  /** Mean of the values. */
  mean?: number;
}

/** The tensors of a Llama-shaped model, in Hugging Face's file order (sorted by name). */
export function llamaTensors(
  o: Required<Omit<DemoCheckpointOptions, "dtype" | "shards" | "seed">>,
): SyntheticTensor[] {
  const headDim = o.hidden / o.heads;
  const kv = headDim * o.kvHeads;
  const t: SyntheticTensor[] = [
    {
      name: "model.embed_tokens.weight",
      shape: [o.vocab, o.hidden],
      std: 0.02,
    },
    { name: "model.norm.weight", shape: [o.hidden], std: 0.02, mean: 1 },
  ];
  if (!o.tieEmbeddings) {
    t.push({ name: "lm_head.weight", shape: [o.vocab, o.hidden], std: 0.02 });
  }
  for (let i = 0; i < o.layers; i++) {
    const p = `model.layers.${i}`;
    t.push(
      {
        name: `${p}.input_layernorm.weight`,
        shape: [o.hidden],
        std: 0.02,
        mean: 1,
      },
      {
        name: `${p}.post_attention_layernorm.weight`,
        shape: [o.hidden],
        std: 0.02,
        mean: 1,
      },
      {
        name: `${p}.self_attn.q_proj.weight`,
        shape: [o.hidden, o.hidden],
        std: 0.02,
      },
      {
        name: `${p}.self_attn.k_proj.weight`,
        shape: [kv, o.hidden],
        std: 0.02,
      },
      {
        name: `${p}.self_attn.v_proj.weight`,
        shape: [kv, o.hidden],
        std: 0.02,
      },
      {
        name: `${p}.self_attn.o_proj.weight`,
        shape: [o.hidden, o.hidden],
        std: 0.02,
      },
      {
        name: `${p}.mlp.gate_proj.weight`,
        shape: [o.intermediate, o.hidden],
        std: 0.02,
      },
      {
        name: `${p}.mlp.up_proj.weight`,
        shape: [o.intermediate, o.hidden],
        std: 0.02,
      },
      {
        name: `${p}.mlp.down_proj.weight`,
        shape: [o.hidden, o.intermediate],
        std: 0.02,
      },
    );
  }
  return t.sort((a, b) => a.name < b.name ? -1 : 1);
}

const BLOCK = 1 << 20;

/**
 * Writes synthetic tensors as a checkpoint folder: `shards` files (greedy by
 * size, Hugging Face names) plus an index when there are several, and the
 * given extra files. Values come from `seed` and each tensor's name; a tensor
 * larger than 2^20 values repeats its first 2^20 (benchmark data, made at
 * disk speed). One tensor's bytes are in memory at a time.
 */
export async function writeSyntheticCheckpoint(
  dir: string,
  tensors: readonly SyntheticTensor[],
  options: {
    dtype?: FloatDType;
    shards?: number;
    seed?: number;
    files?: Record<string, string>;
  } = {},
): Promise<DemoCheckpoint> {
  const dtype: DType = options.dtype ?? "bf16";
  const nShards = Math.max(1, options.shards ?? 1);
  await Deno.mkdir(dir, { recursive: true });
  const size = (t: SyntheticTensor) => numel(t.shape) * DTYPE_SIZE[dtype];
  const total = tensors.reduce((s, t) => s + size(t), 0);
  const target = total / nShards;
  const groups: SyntheticTensor[][] = [[]];
  let acc = 0;
  for (const t of tensors) {
    if (
      acc >= target * groups.length && groups.length < nShards &&
      groups.at(-1)!.length > 0
    ) groups.push([]);
    groups.at(-1)!.push(t);
    acc += size(t);
  }
  const names = groups.length === 1
    ? ["model.safetensors"]
    : groups.map((_, i) =>
      `model-${String(i + 1).padStart(5, "0")}-of-${
        String(groups.length).padStart(5, "0")
      }.safetensors`
    );
  const weightMap: Record<string, string> = {};
  for (let g = 0; g < groups.length; g++) {
    const entries: TensorEntry[] = groups[g]!.map((t) => {
      weightMap[t.name] = names[g]!;
      return {
        name: t.name,
        dtype,
        shape: t.shape,
        byteLength: size(t),
        bytes: () => {
          // One block of values, repeated: big benchmark checkpoints are
          // made at disk speed, and a tensor of up to BLOCK values is unique.
          const n = numel(t.shape);
          const out = new Uint8Array(size(t));
          const next = seededNormals(
            (options.seed ?? 0) * 1000003 + hashName(t.name),
          );
          const v = next(new Float32Array(Math.min(n, BLOCK)));
          for (let k = 0; k < v.length; k++) {
            v[k] = (t.mean ?? 0) + t.std * v[k]!;
          }
          const block = encode(v, dtype as FloatDType);
          out.set(block);
          for (let at = block.byteLength; at < out.byteLength; at *= 2) {
            out.copyWithin(at, 0, Math.min(at, out.byteLength - at));
          }
          return out;
        },
      };
    });
    await writeSafetensors(join(dir, names[g]!), entries);
  }
  if (groups.length > 1) {
    await Deno.writeTextFile(
      join(dir, "model.safetensors.index.json"),
      JSON.stringify(
        { metadata: { total_size: total }, weight_map: weightMap },
        null,
        2,
      ) + "\n",
    );
  }
  for (const [name, text] of Object.entries(options.files ?? {})) {
    await Deno.writeTextFile(join(dir, name), text);
  }
  return {
    path: dir,
    tensors: tensors.map((t) => t.name),
    bytes: total,
    shards: names,
  };
}

/**
 * Writes the demo checkpoint into `dir` (created if needed): a Llama-shaped
 * bf16 model of a few MB in 2 shards with `model.safetensors.index.json`,
 * `config.json` (`LlamaForCausalLM`), `generation_config.json` and a
 * `tokenizer.json` stub. The same options give the same bytes.
 *
 * @example
 * ```ts
 * import { makeDemoCheckpoint } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * const demo = await makeDemoCheckpoint(dir, { layers: 1, hidden: 32 });
 * assert.equal(demo.shards.length, 2);
 * assert.ok(demo.tensors.includes("model.layers.0.mlp.up_proj.weight"));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function makeDemoCheckpoint(
  dir: string,
  options: DemoCheckpointOptions = {},
): Promise<DemoCheckpoint> {
  const hidden = options.hidden ?? 256;
  const o = {
    layers: options.layers ?? 4,
    hidden,
    intermediate: options.intermediate ?? Math.round((hidden * 8) / 3 / 8) * 8,
    vocab: options.vocab ?? 2048,
    heads: options.heads ?? 4,
    kvHeads: options.kvHeads ?? 2,
    tieEmbeddings: options.tieEmbeddings ?? false,
  };
  const dtype = options.dtype ?? "bf16";
  const torchDtype =
    { bf16: "bfloat16", f16: "float16", f32: "float32" }[dtype];
  const config = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: o.hidden,
    intermediate_size: o.intermediate,
    num_hidden_layers: o.layers,
    num_attention_heads: o.heads,
    num_key_value_heads: o.kvHeads,
    vocab_size: o.vocab,
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    hidden_act: "silu",
    tie_word_embeddings: o.tieEmbeddings,
    torch_dtype: torchDtype,
    bos_token_id: 1,
    eos_token_id: 2,
  };
  const tokenizer = {
    version: "1.0",
    model: {
      type: "BPE",
      vocab: { "<unk>": 0, "<s>": 1, "</s>": 2 },
      merges: [],
    },
    added_tokens: [],
    note: "stub made by tinyq's demo; not a real tokenizer",
  };
  const json = (v: unknown) => JSON.stringify(v, null, 2) + "\n";
  return await writeSyntheticCheckpoint(dir, llamaTensors(o), {
    dtype,
    shards: options.shards ?? 2,
    seed: options.seed ?? 0,
    files: {
      "config.json": json(config),
      "generation_config.json": json({ bos_token_id: 1, eos_token_id: 2 }),
      "tokenizer.json": json(tokenizer),
    },
  });
}
