/**
 * {@linkcode ModelConfig}: one description of a decoder model, normalised
 * from a Hugging Face `config.json` of any supported family, that every
 * engine reads. Fields missing from a `config.json` take the defaults of the
 * family's transformers config class (`save_pretrained` omits defaults).
 *
 * @module
 */

import { join } from "node:path";

/** The model families the runtime runs (`config.json` `model_type`). */
export const SUPPORTED_MODEL_TYPES: readonly ModelFamily[] = [
  "llama",
  "mistral",
  "qwen2",
  "gemma",
  "gemma2",
  "phi3",
  "gpt2",
  "opt",
  "codegen",
];

/** A supported `model_type`. */
export type ModelFamily =
  | "llama"
  | "mistral"
  | "qwen2"
  | "gemma"
  | "gemma2"
  | "phi3"
  | "gpt2"
  | "opt"
  | "codegen";

/** The MLP nonlinearity: SiLU, exact GELU, GELU with the tanh approximation, ReLU. */
export type Activation = "silu" | "gelu" | "gelu_tanh" | "relu";

/** RoPE frequency scaling (`rope_scaling` / `rope_parameters`). */
export type RopeScaling =
  | { readonly type: "linear"; readonly factor: number }
  | {
    readonly type: "llama3";
    readonly factor: number;
    readonly lowFreqFactor: number;
    readonly highFreqFactor: number;
    readonly originalMaxPositions: number;
  };

/** How positions enter the model. */
export type Positions =
  | {
    readonly kind: "rope";
    /** `rope_theta`. */
    readonly theta: number;
    /** Dimensions of each head that rotate (head dim × `partial_rotary_factor`). */
    readonly rotaryDim: number;
    /** Frequency scaling, or null. */
    readonly scaling: RopeScaling | null;
    /** `neox`: pairs (i, i + d/2) (Llama & co); `interleaved`: pairs (2i, 2i + 1) (GPT-J). */
    readonly layout: "neox" | "interleaved";
  }
  | {
    readonly kind: "learned";
    /** Row of the position table for position 0 (OPT: 2). */
    readonly offset: number;
  };

/** The normalised description of a decoder-only causal LM. */
export interface ModelConfig {
  /** The family (its `model_type`). */
  readonly family: ModelFamily;
  /** Tokens in the vocabulary (rows of the embedding and the LM head). */
  readonly vocabSize: number;
  /** Width of the residual stream. */
  readonly hiddenSize: number;
  /** Decoder blocks. */
  readonly numLayers: number;
  /** Query heads. */
  readonly numHeads: number;
  /** Key/value heads (fewer than `numHeads` under grouped-query attention). */
  readonly numKvHeads: number;
  /** Width of one head. */
  readonly headDim: number;
  /** Width of the MLP's hidden layer. */
  readonly intermediateSize: number;
  /** Norm kind, epsilon, and whether the weight is stored as `w − 1` (Gemma: scale by `1 + w`). */
  readonly norm: {
    readonly kind: "rms" | "layer";
    readonly eps: number;
    readonly addOne: boolean;
  };
  /** The MLP nonlinearity. */
  readonly activation: Activation;
  /** Gated MLP (`down(act(gate(x)) · up(x))`) or plain (`fc2(act(fc1(x)))`). */
  readonly gatedMlp: boolean;
  /** Rotary or learned positions. */
  readonly positions: Positions;
  /** Whether the LM head reuses the token embedding's weight. */
  readonly tieWordEmbeddings: boolean;
  /** Factor on the token embeddings (Gemma: √hidden), 1 elsewhere. */
  readonly embeddingScale: number;
  /** Factor on q·k (1/√headDim, Gemma 2: `query_pre_attn_scalar`^−½). */
  readonly attentionScale: number;
  /** Attention scores become `c · tanh(s / c)` (Gemma 2), or null. */
  readonly attnSoftcap: number | null;
  /** Logits become `c · tanh(l / c)` (Gemma 2), or null. */
  readonly finalSoftcap: number | null;
  /** Per layer: how many most recent positions a query sees (itself included), or null for all. */
  readonly slidingWindow: readonly (number | null)[];
  /** Bias flags: q/k/v projections, output projection, MLP. */
  readonly bias: {
    readonly qkv: boolean;
    readonly o: boolean;
    readonly mlp: boolean;
  };
  /** Attention and MLP read the same normed input and add together (GPT-J/CodeGen). */
  readonly parallelResidual: boolean;
  /** Norm before each sub-block (pre-LN); false: after the residual add (OPT-350m). */
  readonly preNorm: boolean;
  /** Extra norms after attention and MLP outputs, before the residual add (Gemma 2). */
  readonly postNorms: boolean;
  /** Whether a norm follows the last block. */
  readonly finalNorm: boolean;
  /** Width of the embedding when it differs from the hidden size (OPT `project_in/out`), else null. */
  readonly embedProjDim: number | null;
  /** Beginning-of-sequence token, or null. */
  readonly bosTokenId: number | null;
  /** End-of-sequence tokens (may be several). */
  readonly eosTokenIds: readonly number[];
  /** The context length the model was trained for. */
  readonly maxPositions: number;
  /** The checkpoint's float dtype (`torch_dtype` / `dtype`), or null. */
  readonly dtype: "f32" | "f16" | "bf16" | null;
}

/** A `config.json` the runtime cannot use (unknown family, missing or bad field). */
export class ModelConfigError extends Error {
  /** Builds the error; `message` is the whole line. */
  constructor(message: string) {
    super(message);
    this.name = "ModelConfigError";
  }
}

type Json = Record<string, unknown>;

function num(c: Json, key: string, fallback?: number, where = ""): number {
  const v = c[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw new ModelConfigError(`${where}config.json has no "${key}"`);
  }
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new ModelConfigError(
      `${where}config.json "${key}" must be a number, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function int(c: Json, key: string, fallback?: number, where = ""): number {
  const v = num(c, key, fallback, where);
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new ModelConfigError(
      `${where}config.json "${key}" must be a non-negative integer, got ${v}`,
    );
  }
  return v;
}

function bool(c: Json, key: string, fallback: boolean): boolean {
  const v = c[key];
  return typeof v === "boolean" ? v : fallback;
}

function activation(name: unknown, where: string): Activation {
  switch (name) {
    case "silu":
    case "swish":
      return "silu";
    case "gelu":
      return "gelu";
    case "gelu_new":
    case "gelu_pytorch_tanh":
    case "gelu_fast":
      return "gelu_tanh";
    case "relu":
      return "relu";
  }
  throw new ModelConfigError(
    `${where}config.json activation ${
      JSON.stringify(name)
    } is not supported; supported: silu, gelu, gelu_new, gelu_pytorch_tanh, relu`,
  );
}

function dtypeOf(c: Json): ModelConfig["dtype"] {
  const d = c.torch_dtype ?? c.dtype;
  return d === "float32"
    ? "f32"
    : d === "float16"
    ? "f16"
    : d === "bfloat16"
    ? "bf16"
    : null;
}

function eosIds(v: unknown): number[] {
  if (typeof v === "number") return [v];
  if (Array.isArray(v)) return v.filter((x) => typeof x === "number");
  return [];
}

// RoPE: transformers 4.x writes `rope_theta` + `rope_scaling`; 5.x writes one
// `rope_parameters` object holding both (and maybe `partial_rotary_factor`).
function rope(
  c: Json,
  headDim: number,
  defaultTheta: number,
  where: string,
): Positions {
  const params = (c.rope_parameters ?? c.rope_scaling ?? null) as Json | null;
  const theta = num(
    params && typeof params.rope_theta === "number" ? params : c,
    "rope_theta",
    defaultTheta,
    where,
  );
  const partial = typeof params?.partial_rotary_factor === "number"
    ? params.partial_rotary_factor
    : num(c, "partial_rotary_factor", 1, where);
  const rotaryDim = Math.floor(headDim * partial);
  const type = params ? (params.rope_type ?? params.type ?? "default") : null;
  let scaling: RopeScaling | null = null;
  if (type === "linear") {
    scaling = {
      type: "linear",
      factor: num(params!, "factor", undefined, where),
    };
  } else if (type === "llama3") {
    scaling = {
      type: "llama3",
      factor: num(params!, "factor", undefined, where),
      lowFreqFactor: num(params!, "low_freq_factor", undefined, where),
      highFreqFactor: num(params!, "high_freq_factor", undefined, where),
      originalMaxPositions: num(
        params!,
        "original_max_position_embeddings",
        undefined,
        where,
      ),
    };
  } else if (type !== null && type !== "default") {
    throw new ModelConfigError(
      `${where}config.json rope type ${
        JSON.stringify(type)
      } is not supported; supported: default, linear, llama3`,
    );
  }
  return { kind: "rope", theta, rotaryDim, scaling, layout: "neox" };
}

/**
 * Normalises a parsed Hugging Face `config.json` into a
 * {@linkcode ModelConfig}. `source` (the file's path) prefixes error
 * messages. An unknown `model_type` is a {@linkcode ModelConfigError} naming
 * it and the supported list.
 *
 * @example
 * ```ts
 * import { parseModelConfig } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const config = JSON.parse(await Deno.readTextFile("models/tinystories-656k/config.json"));
 * const c = parseModelConfig(config);
 * assert.deepEqual([c.family, c.numLayers, c.numKvHeads, c.headDim], ["llama", 2, 4, 16]);
 * assert.throws(() => parseModelConfig({ model_type: "bert" }), /model_type "bert" is not supported/);
 * ```
 */
export function parseModelConfig(json: unknown, source?: string): ModelConfig {
  const where = source ? `${source}: ` : "";
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new ModelConfigError(`${where}config.json must be a JSON object`);
  }
  const c = json as Json;
  const type = c.model_type;
  if (!SUPPORTED_MODEL_TYPES.includes(type as ModelFamily)) {
    throw new ModelConfigError(
      `${where}model_type ${
        JSON.stringify(type ?? null)
      } is not supported; supported: ${SUPPORTED_MODEL_TYPES.join(", ")}`,
    );
  }
  const family = type as ModelFamily;
  if (family === "gpt2") return gpt2(c, where);
  if (family === "opt") return opt(c, where);
  if (family === "codegen") return codegen(c, where);

  // The Llama-shaped families.
  const gemma = family === "gemma" || family === "gemma2";
  const hiddenSize = int(c, "hidden_size", undefined, where);
  const numHeads = int(c, "num_attention_heads", undefined, where);
  const numKvHeads = int(c, "num_key_value_heads", numHeads, where);
  const headDim = int(c, "head_dim", Math.floor(hiddenSize / numHeads), where);
  const numLayers = int(c, "num_hidden_layers", undefined, where);
  const window = (c.sliding_window ?? null) as number | null;
  let slidingWindow: (number | null)[] = Array(numLayers).fill(null);
  const layerTypes = Array.isArray(c.layer_types) ? c.layer_types : null;
  if (family === "mistral" || family === "phi3") {
    slidingWindow.fill(window);
  } else if (family === "gemma2" || family === "qwen2") {
    const useWindow = family === "gemma2" ||
      bool(c, "use_sliding_window", false);
    const maxWindowLayers = int(c, "max_window_layers", 28, where);
    slidingWindow = slidingWindow.map((_, i) => {
      const sliding = layerTypes
        ? layerTypes[i] === "sliding_attention"
        : family === "gemma2"
        ? i % 2 === 0
        : i >= maxWindowLayers;
      return useWindow && sliding ? window : null;
    });
  }
  const attnBias = bool(c, "attention_bias", false);
  return {
    family,
    vocabSize: int(c, "vocab_size", undefined, where),
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: int(c, "intermediate_size", undefined, where),
    norm: {
      kind: "rms",
      eps: num(c, "rms_norm_eps", family === "phi3" ? 1e-5 : 1e-6, where),
      addOne: gemma,
    },
    activation: activation(
      // Gemma checkpoints say hidden_act "gelu" for the tanh approximation
      // (transformers substitutes it); hidden_activation, where set, wins.
      gemma
        ? c.hidden_activation ??
          (c.hidden_act === "gelu" ? "gelu_pytorch_tanh" : c.hidden_act) ??
          "gelu_pytorch_tanh"
        : c.hidden_act ?? "silu",
      where,
    ),
    gatedMlp: true,
    positions: rope(c, headDim, 10000, where),
    tieWordEmbeddings: bool(c, "tie_word_embeddings", gemma),
    embeddingScale: gemma ? Math.fround(Math.sqrt(hiddenSize)) : 1,
    attentionScale: family === "gemma2"
      ? num(c, "query_pre_attn_scalar", 256, where) ** -0.5
      : headDim ** -0.5,
    attnSoftcap: family === "gemma2"
      ? (c.attn_logit_softcapping === undefined
        ? 50
        : (c.attn_logit_softcapping as number | null))
      : null,
    finalSoftcap: family === "gemma2"
      ? (c.final_logit_softcapping === undefined
        ? 30
        : (c.final_logit_softcapping as number | null))
      : null,
    slidingWindow,
    bias: {
      qkv: family === "qwen2" || attnBias,
      o: attnBias && family !== "qwen2",
      mlp: bool(c, "mlp_bias", false),
    },
    parallelResidual: false,
    preNorm: true,
    postNorms: family === "gemma2",
    finalNorm: true,
    embedProjDim: null,
    bosTokenId:
      (c.bos_token_id ?? (gemma ? 2 : family === "qwen2" ? null : 1)) as
        | number
        | null,
    eosTokenIds: eosIds(
      c.eos_token_id !== undefined
        ? c.eos_token_id
        : gemma
        ? 1
        : family === "phi3"
        ? 32000
        : family === "qwen2"
        ? null
        : 2,
    ),
    maxPositions: int(c, "max_position_embeddings", 2048, where),
    dtype: dtypeOf(c),
  };
}

function gpt2(c: Json, where: string): ModelConfig {
  const hiddenSize = int(c, "n_embd", 768, where);
  const numHeads = int(c, "n_head", 12, where);
  const numLayers = int(c, "n_layer", 12, where);
  const headDim = Math.floor(hiddenSize / numHeads);
  if (bool(c, "scale_attn_by_inverse_layer_idx", false)) {
    throw new ModelConfigError(
      `${where}config.json scale_attn_by_inverse_layer_idx is not supported`,
    );
  }
  return {
    family: "gpt2",
    vocabSize: int(c, "vocab_size", 50257, where),
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads: numHeads,
    headDim,
    intermediateSize: int(c, "n_inner", 4 * hiddenSize, where),
    norm: {
      kind: "layer",
      eps: num(c, "layer_norm_epsilon", 1e-5, where),
      addOne: false,
    },
    activation: activation(c.activation_function ?? "gelu_new", where),
    gatedMlp: false,
    positions: { kind: "learned", offset: 0 },
    tieWordEmbeddings: bool(c, "tie_word_embeddings", true),
    embeddingScale: 1,
    attentionScale: bool(c, "scale_attn_weights", true) ? headDim ** -0.5 : 1,
    attnSoftcap: null,
    finalSoftcap: null,
    slidingWindow: Array(numLayers).fill(null),
    bias: { qkv: true, o: true, mlp: true },
    parallelResidual: false,
    preNorm: true,
    postNorms: false,
    finalNorm: true,
    embedProjDim: null,
    bosTokenId: (c.bos_token_id ?? 50256) as number | null,
    eosTokenIds: eosIds(c.eos_token_id ?? 50256),
    maxPositions: int(c, "n_positions", 1024, where),
    dtype: dtypeOf(c),
  };
}

function opt(c: Json, where: string): ModelConfig {
  const hiddenSize = int(c, "hidden_size", 768, where);
  const numHeads = int(c, "num_attention_heads", 12, where);
  const numLayers = int(c, "num_hidden_layers", 12, where);
  const headDim = Math.floor(hiddenSize / numHeads);
  const proj = int(c, "word_embed_proj_dim", hiddenSize, where);
  const preNorm = bool(c, "do_layer_norm_before", true);
  const bias = bool(c, "enable_bias", true);
  return {
    family: "opt",
    vocabSize: int(c, "vocab_size", 50272, where),
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads: numHeads,
    headDim,
    intermediateSize: int(c, "ffn_dim", 3072, where),
    norm: { kind: "layer", eps: 1e-5, addOne: false },
    activation: activation(c.activation_function ?? "relu", where),
    gatedMlp: false,
    positions: { kind: "learned", offset: 2 },
    tieWordEmbeddings: bool(c, "tie_word_embeddings", true),
    embeddingScale: 1,
    attentionScale: headDim ** -0.5,
    attnSoftcap: null,
    finalSoftcap: null,
    slidingWindow: Array(numLayers).fill(null),
    bias: { qkv: bias, o: bias, mlp: bias },
    parallelResidual: false,
    preNorm,
    postNorms: false,
    finalNorm: preNorm && !bool(c, "_remove_final_layer_norm", false),
    embedProjDim: proj !== hiddenSize ? proj : null,
    bosTokenId: (c.bos_token_id ?? 2) as number | null,
    eosTokenIds: eosIds(c.eos_token_id ?? 2),
    maxPositions: int(c, "max_position_embeddings", 2048, where),
    dtype: dtypeOf(c),
  };
}

function codegen(c: Json, where: string): ModelConfig {
  const base = gpt2({
    ...c,
    tie_word_embeddings: c.tie_word_embeddings ?? false,
  }, where);
  const ctx = int(c, "n_ctx", 2048, where);
  // transformers caps the rotary width at n_ctx / heads.
  const rotaryDim = Math.min(
    int(c, "rotary_dim", base.headDim, where),
    Math.floor(ctx / base.numHeads),
  );
  return {
    ...base,
    family: "codegen",
    positions: {
      kind: "rope",
      theta: 10000,
      rotaryDim,
      scaling: null,
      layout: "interleaved",
    },
    attentionScale: base.headDim ** -0.5,
    bias: { qkv: false, o: false, mlp: true },
    parallelResidual: true,
  };
}

/**
 * Reads and normalises `<dir>/config.json`. A missing or unparsable file
 * is a {@linkcode ModelConfigError} naming it.
 *
 * @example
 * ```ts
 * import { readModelConfig } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const c = await readModelConfig("models/tinystories-656k");
 * assert.equal(c.vocabSize, 2048);
 * ```
 */
export async function readModelConfig(dir: string): Promise<ModelConfig> {
  const path = join(dir, "config.json");
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new ModelConfigError(
      `${path}: cannot read config.json (${(e as Error).message})`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ModelConfigError(
      `${path}: config.json is not valid JSON (${(e as Error).message})`,
    );
  }
  return parseModelConfig(json, path);
}
