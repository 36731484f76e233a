/**
 * Which tensors of a checkpoint are `Linear` weights: a table for the model
 * families we know (read from `config.json`), and a generic rule for the rest.
 *
 * The table names the Linear modules of each family by the tail of their
 * dotted path (`self_attn.q_proj` matches `model.layers.7.self_attn.q_proj`),
 * so base models and heads (`model.` / `transformer.` / `bert.` prefixes) share
 * a row. In a known family only the listed modules are Linear; everything
 * else is kept as it is.
 *
 * The generic rule (any other `model_type`, no `config.json`, a single file):
 * a module is Linear when its only tensors are `weight` (2-D, f32/f16/bf16)
 * and optionally `bias` (1-D, one value per output row), it has no children,
 * and its own name does not say embedding, norm or position
 * ({@linkcode NOT_LINEAR_NAME}).
 *
 * @module
 */

import { memberName } from "../member_name.ts";
import type { DType } from "../dtype.ts";

/** One row of the family table. */
export interface Family {
  /** The family's name, as shown by `inspect`. */
  readonly name: string;
  /** `config.json` `model_type` values of this family. */
  readonly modelTypes: readonly string[];
  /** `config.json` `architectures` entries (class names) of this family. */
  readonly architectures: RegExp;
  /** Path tails of the Linear modules (`*` matches one path segment). */
  readonly linear: readonly string[];
  /** Path tails of the Linear modules stored [in, out] (GPT-2's Conv1D). */
  readonly transposed?: readonly string[];
}

const LLAMA_LIKE = [
  "self_attn.q_proj",
  "self_attn.k_proj",
  "self_attn.v_proj",
  "self_attn.o_proj",
  "mlp.gate_proj",
  "mlp.up_proj",
  "mlp.down_proj",
  "lm_head",
];

/** The families TinyQ knows by name. */
export const FAMILIES: readonly Family[] = [
  {
    name: "llama",
    modelTypes: ["llama"],
    architectures: /^Llama(ForCausalLM|Model)$/,
    linear: LLAMA_LIKE,
  },
  {
    name: "mistral",
    modelTypes: ["mistral"],
    architectures: /^Mistral(ForCausalLM|Model)$/,
    linear: LLAMA_LIKE,
  },
  {
    name: "qwen2",
    modelTypes: ["qwen2"],
    architectures: /^Qwen2(ForCausalLM|Model)$/,
    linear: LLAMA_LIKE,
  },
  {
    name: "gemma",
    modelTypes: ["gemma", "gemma2"],
    architectures: /^Gemma2?(ForCausalLM|Model)$/,
    linear: LLAMA_LIKE,
  },
  {
    name: "phi3",
    modelTypes: ["phi3"],
    architectures: /^Phi3(ForCausalLM|Model)$/,
    linear: [
      "self_attn.qkv_proj",
      "self_attn.o_proj",
      "mlp.gate_up_proj",
      "mlp.down_proj",
      "lm_head",
    ],
  },
  {
    name: "gpt2",
    modelTypes: ["gpt2"],
    architectures: /^GPT2(LMHeadModel|Model)$/,
    linear: ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj", "lm_head"],
    transposed: ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
  },
  {
    // facebook/opt-*: q/k/v/out_proj and fc1/fc2 with biases; opt-350m adds
    // project_in/project_out between the 512-wide embeddings and the layers.
    name: "opt",
    modelTypes: ["opt"],
    architectures: /^OPT(ForCausalLM|Model|For\w+)$/,
    linear: [
      "self_attn.q_proj",
      "self_attn.k_proj",
      "self_attn.v_proj",
      "self_attn.out_proj",
      "fc1",
      "fc2",
      "decoder.project_in",
      "decoder.project_out",
      "lm_head",
    ],
  },
  {
    // Salesforce/codegen-*: one fused qkv_proj, GPT-J-style fc_in/fc_out,
    // and an lm_head with a bias; attn.causal_mask/masked_bias are buffers.
    name: "codegen",
    modelTypes: ["codegen"],
    architectures: /^CodeGen(ForCausalLM|Model)$/,
    linear: [
      "attn.qkv_proj",
      "attn.out_proj",
      "mlp.fc_in",
      "mlp.fc_out",
      "lm_head",
    ],
  },
  {
    name: "bert",
    modelTypes: ["bert"],
    architectures: /^Bert(Model|For\w+)$/,
    linear: [
      "attention.self.query",
      "attention.self.key",
      "attention.self.value",
      "attention.output.dense",
      "intermediate.dense",
      "output.dense",
      "pooler.dense",
      "predictions.transform.dense",
      "predictions.decoder",
      "seq_relationship",
      "classifier",
      "qa_outputs",
    ],
  },
];

/**
 * Module names the generic rule never takes for Linear: embeddings (`embed`,
 * `wte`, `wpe`, `shared`), norms (`norm`, `ln_f`, `ln_1`, `LayerNorm`),
 * positions and token types, rotary tables, convolutions.
 */
export const NOT_LINEAR_NAME: RegExp =
  /emb|^wte$|^wpe$|^shared$|norm|^ln(_|\d|$)|position|pos_|token_type|rotary|conv/i;

/** How the Linear decision was reached, for `inspect`. */
export interface FamilyChoice {
  /** The family row, or null for the generic rule. */
  readonly family: Family | null;
  /** Where the choice came from, in words. */
  readonly source: string;
}

/**
 * Picks the family row from a parsed `config.json` (or its absence):
 * `model_type` first, then `architectures`.
 */
export function chooseFamily(
  config: Record<string, unknown> | null,
): FamilyChoice {
  if (config === null) {
    return { family: null, source: "no config.json: generic rule" };
  }
  const modelType = config.model_type;
  if (typeof modelType === "string") {
    const f = FAMILIES.find((x) => x.modelTypes.includes(modelType));
    if (f) {
      return { family: f, source: `config.json model_type "${modelType}"` };
    }
  }
  const archs = Array.isArray(config.architectures)
    ? config.architectures.filter((a): a is string => typeof a === "string")
    : [];
  for (const a of archs) {
    const f = FAMILIES.find((x) => x.architectures.test(a));
    if (f) return { family: f, source: `config.json architectures "${a}"` };
  }
  const what = typeof modelType === "string"
    ? `model_type "${modelType}"`
    : archs.length > 0
    ? `architectures "${archs[0]}"`
    : "no model_type";
  return {
    family: null,
    source: `config.json ${what} is not in the table: generic rule`,
  };
}

function tailRegExp(tail: string): RegExp {
  const src = tail.split(".").map((seg) =>
    seg === "*" ? "[^.]+" : seg.replace(/[\\^$+?.()|[\]{}*]/g, "\\$&")
  ).join("\\.");
  return new RegExp(`(^|\\.)${src}$`);
}

const tailCache = new Map<string, RegExp>();

/** The first tail of `tails` that `path` ends with, or undefined. */
export function matchTail(
  path: string,
  tails: readonly string[] | undefined,
): string | undefined {
  for (const t of tails ?? []) {
    let re = tailCache.get(t);
    if (!re) tailCache.set(t, re = tailRegExp(t));
    if (re.test(path)) return t;
  }
  return undefined;
}

/** A module as the classifier sees it: its own tensors and whether it has children. */
export interface ModuleShape {
  /** The dotted path (`""` for tensors without a dot in their name). */
  readonly path: string;
  /** Own tensors by local name. */
  readonly tensors: ReadonlyMap<
    string,
    { dtype: DType; shape: readonly number[] }
  >;
  /** Whether other modules live under this path. */
  readonly hasChildren: boolean;
}

/** The verdict on one module. */
export type LinearVerdict =
  | { linear: true; transposed: boolean; reason: string }
  | { linear: false; reason: string }
  | { linear: false; error: string; tensor: string };

const FLOAT_WEIGHT = new Set<DType>(["f32", "f16", "bf16"]);

// A weight with a zero-sized dimension holds nothing to quantize; it is
// copied as is. Quantizing it would make scales for rows of nothing: a
// [16777216, 0] weight (0 bytes) would become 64 MiB of scales.
const EMPTY: LinearVerdict = {
  linear: false,
  reason: "zero-sized dimension: nothing to quantize, copied as is",
};

/**
 * Decides whether the module is a Linear layer. In a table family a listed
 * module whose weight is not a 2-D float matrix is an error (the file is not
 * what its config says); under the generic rule it is simply not Linear.
 */
export function classifyModule(
  choice: FamilyChoice,
  m: ModuleShape,
): LinearVerdict {
  const weight = m.tensors.get("weight");
  const bias = m.tensors.get("bias");
  const name = m.path.slice(m.path.lastIndexOf(".") + 1);
  const f = choice.family;
  if (f) {
    const tail = matchTail(m.path, f.linear);
    if (tail === undefined) {
      return { linear: false, reason: `not a Linear of the ${f.name} table` };
    }
    if (!weight) {
      return { linear: false, reason: "no weight of its own (tied)" };
    }
    const wName = memberName(m.path, "weight");
    if (weight.shape.length !== 2) {
      return {
        linear: false,
        tensor: wName,
        error: `a Linear weight (${f.name} ${tail}) must be 2-D, got shape ` +
          `[${weight.shape.join(", ")}]`,
      };
    }
    if (!FLOAT_WEIGHT.has(weight.dtype)) {
      return {
        linear: false,
        tensor: wName,
        error: `a Linear weight (${f.name} ${tail}) must be F32, F16 or ` +
          `BF16, got ${weight.dtype.toUpperCase()}`,
      };
    }
    if (weight.shape.includes(0)) return EMPTY;
    const transposed = matchTail(m.path, f.transposed) !== undefined;
    const out = weight.shape[transposed ? 1 : 0]!;
    if (bias && (bias.shape.length !== 1 || bias.shape[0] !== out)) {
      return {
        linear: false,
        tensor: memberName(m.path, "bias"),
        error: `a Linear bias must be [${out}], got [${bias.shape.join(", ")}]`,
      };
    }
    const extra = [...m.tensors.keys()].find((k) =>
      k !== "weight" && k !== "bias"
    );
    if (extra !== undefined || m.hasChildren) {
      return {
        linear: false,
        tensor: wName,
        error: `a Linear (${f.name} ${tail}) must hold only weight and ` +
          `bias, but it also has ${
            extra !== undefined ? `"${extra}"` : "submodules"
          }`,
      };
    }
    return {
      linear: true,
      transposed,
      reason: `${f.name} table: ${tail}${
        transposed ? " (Conv1D [in, out])" : ""
      }`,
    };
  }
  if (!weight) return { linear: false, reason: "no weight" };
  if (weight.shape.length !== 2) {
    return {
      linear: false,
      reason: `${weight.shape.length}-D weight`,
    };
  }
  if (NOT_LINEAR_NAME.test(name)) {
    return { linear: false, reason: `name "${name}" is an embedding/norm` };
  }
  if (weight.shape.includes(0)) return EMPTY;
  if (!FLOAT_WEIGHT.has(weight.dtype)) {
    return { linear: false, reason: `${weight.dtype.toUpperCase()} weight` };
  }
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== weight.shape[0])) {
    return { linear: false, reason: "bias does not match the weight" };
  }
  if (
    m.hasChildren ||
    [...m.tensors.keys()].some((k) => k !== "weight" && k !== "bias")
  ) {
    return { linear: false, reason: "holds more than weight and bias" };
  }
  return {
    linear: true,
    transposed: false,
    reason: "generic rule: 2-D float weight",
  };
}
