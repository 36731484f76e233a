/**
 * Tiny synthetic checkpoints of each model family for the checkpoint, CLI and
 * fault tests, made by code (no binary fixtures).
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import type { FloatDType } from "../src/dtype.ts";
import {
  type SyntheticTensor,
  writeSyntheticCheckpoint,
} from "../src/demo/demo_checkpoint.ts";
import type { CliIO } from "../src/cli/_io.ts";
import { main } from "../cli.ts";

/** A family fixture: tensors, config and the Linear paths TinyQ must find. */
export interface FamilyFixture {
  config: Record<string, unknown> | null;
  tensors: SyntheticTensor[];
  linear: string[];
  transposed?: string[];
}

const w = (name: string, ...shape: number[]): SyntheticTensor => ({
  name,
  shape,
  std: 0.05,
});
const norm = (name: string, n: number): SyntheticTensor => ({
  name,
  shape: [n],
  std: 0.01,
  mean: 1,
});

function llamaLike(
  modelType: string,
  opts: { bias?: boolean; tied?: boolean; extraNorms?: boolean } = {},
): FamilyFixture {
  const h = 8, kv = 4, i = 12, v = 16;
  const p = "model.layers.0";
  const t: SyntheticTensor[] = [
    w("model.embed_tokens.weight", v, h),
    norm("model.norm.weight", h),
    norm(`${p}.input_layernorm.weight`, h),
    norm(`${p}.post_attention_layernorm.weight`, h),
    w(`${p}.self_attn.q_proj.weight`, h, h),
    w(`${p}.self_attn.k_proj.weight`, kv, h),
    w(`${p}.self_attn.v_proj.weight`, kv, h),
    w(`${p}.self_attn.o_proj.weight`, h, h),
    w(`${p}.mlp.gate_proj.weight`, i, h),
    w(`${p}.mlp.up_proj.weight`, i, h),
    w(`${p}.mlp.down_proj.weight`, h, i),
  ];
  if (opts.bias) {
    t.push(
      w(`${p}.self_attn.q_proj.bias`, h),
      w(`${p}.self_attn.k_proj.bias`, kv),
      w(`${p}.self_attn.v_proj.bias`, kv),
    );
  }
  if (opts.extraNorms) {
    t.push(
      norm(`${p}.pre_feedforward_layernorm.weight`, h),
      norm(`${p}.post_feedforward_layernorm.weight`, h),
    );
  }
  if (!opts.tied) t.push(w("lm_head.weight", v, h));
  const linear = ["q_proj", "k_proj", "v_proj", "o_proj"].map((x) =>
    `${p}.self_attn.${x}`
  )
    .concat(["gate_proj", "up_proj", "down_proj"].map((x) => `${p}.mlp.${x}`));
  if (!opts.tied) linear.push("lm_head");
  return {
    config: { model_type: modelType, tie_word_embeddings: !!opts.tied },
    tensors: t,
    linear,
  };
}

/** One fixture per row of the family table, plus the generic rule. */
export const FAMILY_FIXTURES: Readonly<Record<string, FamilyFixture>> = {
  llama: llamaLike("llama"),
  mistral: llamaLike("mistral"),
  qwen2: llamaLike("qwen2", { bias: true }),
  gemma: llamaLike("gemma", { tied: true }),
  gemma2: llamaLike("gemma2", { tied: true, extraNorms: true }),
  phi3: {
    config: { architectures: ["Phi3ForCausalLM"] },
    tensors: [
      w("model.embed_tokens.weight", 16, 8),
      norm("model.norm.weight", 8),
      norm("model.layers.0.input_layernorm.weight", 8),
      norm("model.layers.0.post_attention_layernorm.weight", 8),
      w("model.layers.0.self_attn.qkv_proj.weight", 24, 8),
      w("model.layers.0.self_attn.o_proj.weight", 8, 8),
      w("model.layers.0.mlp.gate_up_proj.weight", 32, 8),
      w("model.layers.0.mlp.down_proj.weight", 8, 16),
      w("lm_head.weight", 16, 8),
    ],
    linear: [
      "model.layers.0.self_attn.qkv_proj",
      "model.layers.0.self_attn.o_proj",
      "model.layers.0.mlp.gate_up_proj",
      "model.layers.0.mlp.down_proj",
      "lm_head",
    ],
  },
  gpt2: {
    config: { model_type: "gpt2", architectures: ["GPT2LMHeadModel"] },
    tensors: [
      w("wte.weight", 16, 8),
      w("wpe.weight", 12, 8),
      norm("h.0.ln_1.weight", 8),
      w("h.0.ln_1.bias", 8),
      w("h.0.attn.bias", 1, 1, 12, 12),
      w("h.0.attn.c_attn.weight", 8, 24),
      w("h.0.attn.c_attn.bias", 24),
      w("h.0.attn.c_proj.weight", 8, 8),
      w("h.0.attn.c_proj.bias", 8),
      norm("h.0.ln_2.weight", 8),
      w("h.0.ln_2.bias", 8),
      w("h.0.mlp.c_fc.weight", 8, 32),
      w("h.0.mlp.c_fc.bias", 32),
      w("h.0.mlp.c_proj.weight", 32, 8),
      w("h.0.mlp.c_proj.bias", 8),
      norm("ln_f.weight", 8),
      w("ln_f.bias", 8),
    ],
    linear: [
      "h.0.attn.c_attn",
      "h.0.attn.c_proj",
      "h.0.mlp.c_fc",
      "h.0.mlp.c_proj",
    ],
    transposed: [
      "h.0.attn.c_attn",
      "h.0.attn.c_proj",
      "h.0.mlp.c_fc",
      "h.0.mlp.c_proj",
    ],
  },
  opt: {
    config: { model_type: "opt", architectures: ["OPTForCausalLM"] },
    tensors: [
      w("model.decoder.embed_tokens.weight", 16, 8),
      w("model.decoder.embed_positions.weight", 14, 8),
      w("model.decoder.project_in.weight", 8, 4),
      w("model.decoder.project_out.weight", 4, 8),
      ...["q_proj", "k_proj", "v_proj", "out_proj"].flatMap((x) => [
        w(`model.decoder.layers.0.self_attn.${x}.weight`, 8, 8),
        w(`model.decoder.layers.0.self_attn.${x}.bias`, 8),
      ]),
      norm("model.decoder.layers.0.self_attn_layer_norm.weight", 8),
      w("model.decoder.layers.0.self_attn_layer_norm.bias", 8),
      w("model.decoder.layers.0.fc1.weight", 32, 8),
      w("model.decoder.layers.0.fc1.bias", 32),
      w("model.decoder.layers.0.fc2.weight", 8, 32),
      w("model.decoder.layers.0.fc2.bias", 8),
      norm("model.decoder.layers.0.final_layer_norm.weight", 8),
      w("model.decoder.layers.0.final_layer_norm.bias", 8),
      norm("model.decoder.final_layer_norm.weight", 8),
      w("model.decoder.final_layer_norm.bias", 8),
    ],
    linear: [
      "model.decoder.project_in",
      "model.decoder.project_out",
      ...["q_proj", "k_proj", "v_proj", "out_proj"].map((x) =>
        `model.decoder.layers.0.self_attn.${x}`
      ),
      "model.decoder.layers.0.fc1",
      "model.decoder.layers.0.fc2",
    ],
  },
  codegen: {
    config: { model_type: "codegen", architectures: ["CodeGenForCausalLM"] },
    tensors: [
      w("transformer.wte.weight", 16, 8),
      norm("transformer.h.0.ln_1.weight", 8),
      w("transformer.h.0.ln_1.bias", 8),
      w("transformer.h.0.attn.causal_mask", 1, 1, 4, 4),
      {
        name: "transformer.h.0.attn.masked_bias",
        shape: [],
        std: 0,
        mean: -1e9,
      },
      w("transformer.h.0.attn.qkv_proj.weight", 24, 8),
      w("transformer.h.0.attn.out_proj.weight", 8, 8),
      w("transformer.h.0.mlp.fc_in.weight", 32, 8),
      w("transformer.h.0.mlp.fc_in.bias", 32),
      w("transformer.h.0.mlp.fc_out.weight", 8, 32),
      w("transformer.h.0.mlp.fc_out.bias", 8),
      norm("transformer.ln_f.weight", 8),
      w("transformer.ln_f.bias", 8),
      w("lm_head.weight", 16, 8),
      w("lm_head.bias", 16),
    ],
    linear: [
      "transformer.h.0.attn.qkv_proj",
      "transformer.h.0.attn.out_proj",
      "transformer.h.0.mlp.fc_in",
      "transformer.h.0.mlp.fc_out",
      "lm_head",
    ],
  },
  bert: {
    config: { model_type: "bert", architectures: ["BertForMaskedLM"] },
    tensors: [
      w("bert.embeddings.word_embeddings.weight", 16, 8),
      w("bert.embeddings.position_embeddings.weight", 12, 8),
      w("bert.embeddings.token_type_embeddings.weight", 2, 8),
      norm("bert.embeddings.LayerNorm.weight", 8),
      w("bert.embeddings.LayerNorm.bias", 8),
      ...["query", "key", "value"].flatMap((x) => [
        w(`bert.encoder.layer.0.attention.self.${x}.weight`, 8, 8),
        w(`bert.encoder.layer.0.attention.self.${x}.bias`, 8),
      ]),
      w("bert.encoder.layer.0.attention.output.dense.weight", 8, 8),
      w("bert.encoder.layer.0.attention.output.dense.bias", 8),
      norm("bert.encoder.layer.0.attention.output.LayerNorm.weight", 8),
      w("bert.encoder.layer.0.attention.output.LayerNorm.bias", 8),
      w("bert.encoder.layer.0.intermediate.dense.weight", 32, 8),
      w("bert.encoder.layer.0.intermediate.dense.bias", 32),
      w("bert.encoder.layer.0.output.dense.weight", 8, 32),
      w("bert.encoder.layer.0.output.dense.bias", 8),
      norm("bert.encoder.layer.0.output.LayerNorm.weight", 8),
      w("bert.encoder.layer.0.output.LayerNorm.bias", 8),
      w("cls.predictions.bias", 16),
      w("cls.predictions.transform.dense.weight", 8, 8),
      w("cls.predictions.transform.dense.bias", 8),
      norm("cls.predictions.transform.LayerNorm.weight", 8),
      w("cls.predictions.transform.LayerNorm.bias", 8),
    ],
    linear: [
      "bert.encoder.layer.0.attention.self.query",
      "bert.encoder.layer.0.attention.self.key",
      "bert.encoder.layer.0.attention.self.value",
      "bert.encoder.layer.0.attention.output.dense",
      "bert.encoder.layer.0.intermediate.dense",
      "bert.encoder.layer.0.output.dense",
      "cls.predictions.transform.dense",
    ],
  },
  generic: {
    config: { model_type: "my_custom_net" },
    tensors: [
      w("encoder.token_embedding.weight", 16, 8),
      w("encoder.pos_embed", 1, 8),
      w("encoder.blocks.0.proj.weight", 8, 8),
      w("encoder.blocks.0.proj.bias", 8),
      norm("encoder.blocks.0.norm.weight", 8),
      w("encoder.blocks.0.conv.weight", 4, 2, 3, 3),
      w("encoder.blocks.0.fc.weight", 12, 8),
      w("head.weight", 3, 8),
      { name: "encoder.steps", shape: [], std: 0, mean: 3 },
    ],
    linear: ["encoder.blocks.0.proj", "encoder.blocks.0.fc", "head"],
  },
};

/** Writes a family fixture (sorted by name like Hugging Face's writer) into `dir`. */
export async function writeFamily(
  dir: string,
  family: string,
  options: {
    shards?: number;
    dtype?: FloatDType;
    extraFiles?: Record<string, string>;
  } = {},
): Promise<FamilyFixture> {
  const f = FAMILY_FIXTURES[family]!;
  await writeSyntheticCheckpoint(
    dir,
    [...f.tensors].sort((a, b) => a.name < b.name ? -1 : 1),
    {
      shards: options.shards ?? 2,
      ...(options.dtype ? { dtype: options.dtype } : {}),
      files: {
        ...(f.config
          ? { "config.json": JSON.stringify(f.config, null, 2) }
          : {}),
        ...options.extraFiles,
      },
    },
  );
  return f;
}

/** Runs `fn` in a new temporary folder, removed afterwards. */
export async function withDir(
  fn: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tinyq-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A CliIO that records what the CLI writes. */
export function captureIO(
  terminal = false,
): CliIO & { stdout: string; stderr: string } {
  const io = {
    stdout: "",
    stderr: "",
    out(t: string) {
      io.stdout += t;
    },
    err(t: string) {
      io.stderr += t;
    },
    errIsTerminal: terminal,
    columns: () => 100,
  };
  return io;
}

/** Every file under `dir` (relative paths, sorted) with its bytes. */
export async function snapshot(dir: string): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  const walk = async (rel: string) => {
    for await (const e of Deno.readDir(join(dir, rel))) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) await walk(r);
      else out.set(r, await Deno.readFile(join(dir, r)));
    }
  };
  await walk("");
  return new Map([...out].sort((a, b) => a[0] < b[0] ? -1 : 1));
}

/**
 * Runs the CLI's `main` in-process on `args` (stderr a terminal or not) and
 * returns its exit code and output.
 */
export async function runMain(
  args: string[],
  terminal = false,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const io = captureIO(terminal);
  const code = await main(args, io);
  return { code, stdout: io.stdout, stderr: io.stderr };
}

/**
 * Runs `tinyq quantize <input> --out <out> …flags` in-process and fails the
 * test unless it exits 0.
 */
export async function quantizeOk(
  input: string,
  out: string,
  ...flags: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const args = ["quantize", input, "--out", out, ...flags];
  const r = await runMain(args);
  assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
  return r;
}

/** Runs `deno run -A cli.ts …args` and returns its exit code and output. */
export async function runCli(
  args: string[],
  options: { env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const cli = new URL("../cli.ts", import.meta.url).pathname;
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...options.env },
  }).output();
  const dec = new TextDecoder();
  return {
    code: r.code,
    stdout: dec.decode(r.stdout),
    stderr: dec.decode(r.stderr),
  };
}
