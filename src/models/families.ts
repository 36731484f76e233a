/**
 * The families: how each one's checkpoint names map onto the runtime's
 * modules. {@linkcode buildDecoderModel} takes the Module tree the
 * checkpoint loader made (lazy `Linear` layers, quantized layers, plain
 * modules holding tensors) and rebuilds it as a {@linkcode DecoderModel}
 * whose paths and tensor names are the checkpoint's.
 *
 * @module
 */

import { Linear } from "../linear.ts";
import { Module } from "../module.ts";
import type { TensorSource } from "../tensor.ts";
import { Attention, type AttentionProjections } from "./attention.ts";
import type { ModelConfig, ModelFamily } from "./config.ts";
import { DecoderLayer } from "./decoder.ts";
import { DecoderModel } from "./decoder_model.ts";
import { Embedding } from "./embedding.ts";
import { isMatmulLayer, type MatmulLayer } from "./linear_call.ts";
import { TiedLMHead } from "./lm_head.ts";
import { MLP, type MLPProjections } from "./mlp.ts";
import { LayerNorm, type Norm, RMSNorm } from "./norms.ts";
import { RotaryEmbedding } from "./rope.ts";

/** A checkpoint that does not hold what its family needs. */
export class ModelWeightsError extends Error {
  /** Builds the error; `message` is the whole line. */
  constructor(message: string) {
    super(message);
    this.name = "ModelWeightsError";
  }
}

// The HF class-name prefix of each family, for printing.
const CLASS: Record<ModelFamily, string> = {
  llama: "Llama",
  mistral: "Mistral",
  qwen2: "Qwen2",
  gemma: "Gemma",
  gemma2: "Gemma2",
  phi3: "Phi3",
  gpt2: "GPT2",
  opt: "OPT",
  codegen: "CodeGen",
};

// Tensors a checkpoint may carry that the runtime recomputes (masks, rotary
// tables of older transformers).
const IGNORED = /(^|\.)(attn\.bias|attn\.masked_bias|rotary_emb\.inv_freq)$/;

class Container extends Module {
  readonly #name: string;
  constructor(name: string) {
    super();
    this.#name = name;
  }
  override typeName(): string {
    return this.#name;
  }
}

/** Reads the loader's tree by dotted path and keeps track of what was used. */
class Source {
  readonly #root: Module;
  readonly #where: string;
  readonly #used = new Set<string>();
  constructor(root: Module, where: string) {
    this.#root = root;
    this.#where = where;
  }

  #split(path: string): [Module | undefined, string] {
    const dot = path.lastIndexOf(".");
    const parent = dot < 0
      ? this.#root
      : this.#root.getModule(path.slice(0, dot));
    return [parent, path.slice(dot + 1)];
  }

  has(path: string): boolean {
    const [m, local] = this.#split(path);
    return !!m?.getTensor(local) || isMatmulLayer(this.#root.getModule(path));
  }

  maybeTensor(path: string): TensorSource | null {
    const [m, local] = this.#split(path);
    const t = m?.getTensor(local) ?? null;
    if (t) this.#used.add(path);
    return t;
  }

  tensor(path: string): TensorSource {
    const t = this.maybeTensor(path);
    if (!t) {
      throw new ModelWeightsError(
        `${this.#where}: tensor "${path}" is missing`,
      );
    }
    return t;
  }

  /** An embedding table at `path` of `rows` × `cols` (`rows` unchecked when undefined). */
  embedding(path: string, rows: number | undefined, cols: number): Embedding {
    const t = this.tensor(`${path}.weight`);
    if (
      t.shape.length !== 2 || t.shape[1] !== cols ||
      (rows !== undefined && t.shape[0] !== rows)
    ) {
      throw new ModelWeightsError(
        `${this.#where}: tensor "${path}.weight" must be [${
          rows ?? "positions"
        }, ${cols}] for this config, got [${t.shape.join(", ")}]`,
      );
    }
    return new Embedding(t);
  }

  /** The matmul layer at `path` (a Linear from its weight and bias if the loader left plain tensors), or null. */
  maybeLinear(path: string): MatmulLayer | null {
    const m = this.#root.getModule(path);
    if (isMatmulLayer(m)) {
      for (const [n] of m.namedTensors(path)) this.#used.add(n);
      return m;
    }
    const w = m?.getTensor("weight");
    if (!w) return null;
    if (w.shape.length !== 2) {
      throw new ModelWeightsError(
        `${this.#where}: tensor "${path}.weight" must be 2-D, got [${
          w.shape.join(", ")
        }]`,
      );
    }
    this.#used.add(`${path}.weight`);
    return Linear.fromTensors(w, this.maybeTensor(`${path}.bias`));
  }

  linear(path: string, out?: number, inF?: number): MatmulLayer {
    const l = this.maybeLinear(path);
    if (!l) {
      throw new ModelWeightsError(
        `${this.#where}: tensor "${path}.weight" is missing`,
      );
    }
    if (
      (out !== undefined && l.outFeatures !== out) ||
      (inF !== undefined && l.inFeatures !== inF)
    ) {
      throw new ModelWeightsError(
        `${this.#where}: "${path}" must be [${out}, ${inF}] (out, in) for this config, got [${l.outFeatures}, ${l.inFeatures}]`,
      );
    }
    return l;
  }

  /** Names of tensors no module took (ignoring recomputed buffers). */
  unused(): string[] {
    return [...this.#root.namedTensors()].map(([n]) => n).filter((n) =>
      !this.#used.has(n) && !IGNORED.test(n)
    );
  }
}

/** Builds the tree: `place(path, module)` puts modules at dotted paths, making containers on the way. */
class Tree {
  readonly placements: [string, Module][] = [];
  container(path: string, name: string): void {
    this.placements.push([path, new Container(name)]);
  }
  place(path: string, module: Module): void {
    this.placements.push([path, module]);
  }
  attach(root: Module): void {
    // Parents before children; siblings in the order given (HF's order).
    const all = [...this.placements].sort((a, b) =>
      a[0].split(".").length - b[0].split(".").length
    );
    for (const [path, m] of all) {
      const dot = path.lastIndexOf(".");
      const parent = dot < 0 ? root : root.getModule(path.slice(0, dot))!;
      parent.setChild(path.slice(dot + 1), m);
    }
  }
}

function slot(tree: Tree, path: string, layer: MatmulLayer): string {
  tree.place(path, layer);
  return path;
}

/**
 * Rebuilds the loader's tree `raw` (from `Checkpoint.toModule()`) as the
 * {@linkcode DecoderModel} of `config`'s family. `where` (the checkpoint
 * path) starts every error. A missing tensor, a layer of the wrong shape or
 * a tensor no module uses is a {@linkcode ModelWeightsError} naming it.
 */
export function buildDecoderModel(
  config: ModelConfig,
  raw: Module,
  where: string,
): DecoderModel {
  const src = new Source(raw, where);
  const tree = new Tree();
  const build = config.family === "gpt2"
    ? gpt2
    : config.family === "opt"
    ? opt
    : config.family === "codegen"
    ? codegen
    : llamaLike;
  const { parts, name } = build(config, src, tree);
  const unused = src.unused();
  if (unused.length > 0) {
    throw new ModelWeightsError(
      `${where}: tensor "${
        unused[0]
      }" is not used by the ${config.family} runtime${
        unused.length > 1 ? ` (nor ${unused.length - 1} more)` : ""
      }; is model_type right?`,
    );
  }
  const root = new DecoderModel(config, parts, name);
  tree.attach(root);
  return root;
}

type Built = { parts: DecoderModel["parts"]; name: string };

function prefixOf(src: Source, candidates: string[], probe: string): string {
  for (const p of candidates) if (src.has(`${p}${probe}`)) return p;
  return candidates[0]!;
}

// The stored head, else (tied embeddings) one that reads the embedding.
function lmHead(
  config: ModelConfig,
  src: Source,
  tree: Tree,
  embed: Embedding,
  embedPath: string,
  width: number,
): string {
  const stored = src.maybeLinear("lm_head") !== null;
  const head = stored || !config.tieWordEmbeddings
    ? src.linear("lm_head", config.vocabSize, width)
    : new TiedLMHead(embed, `${embedPath}.weight`);
  return slot(tree, "lm_head", head);
}

function rmsNorm(
  c: ModelConfig,
  src: Source,
  tree: Tree,
  path: string,
): Norm {
  const n = new RMSNorm(src.tensor(`${path}.weight`), {
    eps: c.norm.eps,
    addOne: c.norm.addOne,
    name: `${CLASS[c.family]}RMSNorm`,
  });
  tree.place(path, n);
  return n;
}

function layerNorm(
  c: ModelConfig,
  src: Source,
  tree: Tree,
  path: string,
): Norm {
  const n = new LayerNorm(
    src.tensor(`${path}.weight`),
    src.maybeTensor(`${path}.bias`),
    { eps: c.norm.eps },
  );
  tree.place(path, n);
  return n;
}

function llamaLike(c: ModelConfig, src: Source, tree: Tree): Built {
  const cls = CLASS[c.family];
  const P = prefixOf(src, ["model.", ""], "embed_tokens.weight");
  const body = P.slice(0, -1);
  if (body) tree.container(body, `${cls}Model`);
  const embed = src.embedding(`${P}embed_tokens`, c.vocabSize, c.hiddenSize);
  tree.place(`${P}embed_tokens`, embed);
  tree.container(`${P}layers`, "ModuleList");
  const H = c.hiddenSize,
    qw = c.numHeads * c.headDim,
    kvw = c.numKvHeads * c.headDim;
  const I = c.intermediateSize;
  const layers: DecoderLayer[] = [];
  const rope = c.positions.kind === "rope"
    ? new RotaryEmbedding(c.headDim, c.positions, `${cls}RotaryEmbedding`)
    : null;
  for (let i = 0; i < c.numLayers; i++) {
    const L = `${P}layers.${i}`;
    const fused = c.family === "phi3";
    const projections: AttentionProjections = fused
      ? { qkv: "qkv_proj", o: "o_proj" }
      : { q: "q_proj", k: "k_proj", v: "v_proj", o: "o_proj" };
    const attention = new Attention({
      numHeads: c.numHeads,
      numKvHeads: c.numKvHeads,
      headDim: c.headDim,
      scale: c.attentionScale,
      softcap: c.attnSoftcap,
      slidingWindow: c.slidingWindow[i] ?? null,
      projections,
      name: `${cls}Attention`,
    });
    const A = `${L}.self_attn`;
    if (fused) {
      tree.place(`${A}.qkv_proj`, src.linear(`${A}.qkv_proj`, qw + 2 * kvw, H));
    } else {
      tree.place(`${A}.q_proj`, src.linear(`${A}.q_proj`, qw, H));
      tree.place(`${A}.k_proj`, src.linear(`${A}.k_proj`, kvw, H));
      tree.place(`${A}.v_proj`, src.linear(`${A}.v_proj`, kvw, H));
    }
    tree.place(`${A}.o_proj`, src.linear(`${A}.o_proj`, H, qw));
    const mp: MLPProjections = fused
      ? { gateUp: "gate_up_proj", down: "down_proj" }
      : { gate: "gate_proj", up: "up_proj", down: "down_proj" };
    const mlp = new MLP(c.activation, mp, { name: `${cls}MLP` });
    const M = `${L}.mlp`;
    if (fused) {
      tree.place(
        `${M}.gate_up_proj`,
        src.linear(`${M}.gate_up_proj`, 2 * I, H),
      );
    } else {
      tree.place(`${M}.gate_proj`, src.linear(`${M}.gate_proj`, I, H));
      tree.place(`${M}.up_proj`, src.linear(`${M}.up_proj`, I, H));
    }
    tree.place(`${M}.down_proj`, src.linear(`${M}.down_proj`, H, I));
    tree.place(A, attention);
    tree.place(M, mlp);
    const inputNorm = rmsNorm(c, src, tree, `${L}.input_layernorm`);
    const second = rmsNorm(c, src, tree, `${L}.post_attention_layernorm`);
    const gemma2 = c.family === "gemma2";
    const preFf = gemma2
      ? rmsNorm(c, src, tree, `${L}.pre_feedforward_layernorm`)
      : null;
    const postFf = gemma2
      ? rmsNorm(c, src, tree, `${L}.post_feedforward_layernorm`)
      : null;
    const layer = new DecoderLayer({
      inputNorm,
      attention,
      mlpNorm: preFf ?? second,
      mlp,
      postAttentionNorm: gemma2 ? second : null,
      postMlpNorm: postFf,
      preNorm: true,
    }, `${cls}DecoderLayer`);
    tree.place(L, layer);
    layers.push(layer);
  }
  const finalNorm = rmsNorm(c, src, tree, `${P}norm`);
  if (rope) tree.place(`${P}rotary_emb`, rope);
  const head = lmHead(c, src, tree, embed, `${P}embed_tokens`, H);
  return {
    name: `${cls}ForCausalLM`,
    parts: {
      embedTokens: embed,
      embedPositions: null,
      projectIn: null,
      layers,
      finalNorm,
      projectOut: null,
      lmHead: head,
      rope,
    },
  };
}

function gpt2(c: ModelConfig, src: Source, tree: Tree): Built {
  const P = prefixOf(src, ["transformer.", ""], "wte.weight");
  const body = P.slice(0, -1);
  if (body) tree.container(body, "GPT2Model");
  const H = c.hiddenSize, I = c.intermediateSize;
  const wte = src.embedding(`${P}wte`, c.vocabSize, c.hiddenSize);
  const wpe = src.embedding(`${P}wpe`, undefined, c.hiddenSize);
  tree.place(`${P}wte`, wte);
  tree.place(`${P}wpe`, wpe);
  tree.container(`${P}h`, "ModuleList");
  const layers: DecoderLayer[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const L = `${P}h.${i}`;
    const inputNorm = layerNorm(c, src, tree, `${L}.ln_1`);
    const attention = new Attention({
      numHeads: c.numHeads,
      numKvHeads: c.numHeads,
      headDim: c.headDim,
      scale: c.attentionScale,
      softcap: null,
      slidingWindow: null,
      projections: { qkv: "c_attn", o: "c_proj" },
      name: "GPT2Attention",
    });
    tree.place(`${L}.attn`, attention);
    tree.place(`${L}.attn.c_attn`, src.linear(`${L}.attn.c_attn`, 3 * H, H));
    tree.place(`${L}.attn.c_proj`, src.linear(`${L}.attn.c_proj`, H, H));
    const mlpNorm = layerNorm(c, src, tree, `${L}.ln_2`);
    const mlp = new MLP(c.activation, { fc1: "c_fc", fc2: "c_proj" }, {
      name: "GPT2MLP",
    });
    tree.place(`${L}.mlp`, mlp);
    tree.place(`${L}.mlp.c_fc`, src.linear(`${L}.mlp.c_fc`, I, H));
    tree.place(`${L}.mlp.c_proj`, src.linear(`${L}.mlp.c_proj`, H, I));
    const layer = new DecoderLayer({
      inputNorm,
      attention,
      mlpNorm,
      mlp,
      postAttentionNorm: null,
      postMlpNorm: null,
      preNorm: true,
    }, "GPT2Block");
    tree.place(L, layer);
    layers.push(layer);
  }
  const finalNorm = layerNorm(c, src, tree, `${P}ln_f`);
  const head = lmHead(c, src, tree, wte, `${P}wte`, H);
  return {
    name: "GPT2LMHeadModel",
    parts: {
      embedTokens: wte,
      embedPositions: wpe,
      projectIn: null,
      layers,
      finalNorm,
      projectOut: null,
      lmHead: head,
      rope: null,
    },
  };
}

function opt(c: ModelConfig, src: Source, tree: Tree): Built {
  const P = prefixOf(
    src,
    ["model.decoder.", "decoder."],
    "embed_tokens.weight",
  );
  if (P === "model.decoder.") tree.container("model", "OPTModel");
  tree.container(P.slice(0, -1), "OPTDecoder");
  const H = c.hiddenSize, I = c.intermediateSize;
  const E = c.embedProjDim ?? H;
  const embed = src.embedding(
    `${P}embed_tokens`,
    c.vocabSize,
    c.embedProjDim ?? c.hiddenSize,
  );
  const pos = src.embedding(`${P}embed_positions`, undefined, c.hiddenSize);
  tree.place(`${P}embed_tokens`, embed);
  tree.place(`${P}embed_positions`, pos);
  const projectOut = c.embedProjDim !== null
    ? slot(tree, `${P}project_out`, src.linear(`${P}project_out`, E, H))
    : null;
  const projectIn = c.embedProjDim !== null
    ? slot(tree, `${P}project_in`, src.linear(`${P}project_in`, H, E))
    : null;
  const finalNorm = c.finalNorm
    ? layerNorm(c, src, tree, `${P}final_layer_norm`)
    : null;
  tree.container(`${P}layers`, "ModuleList");
  const layers: DecoderLayer[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const L = `${P}layers.${i}`;
    const attention = new Attention({
      numHeads: c.numHeads,
      numKvHeads: c.numHeads,
      headDim: c.headDim,
      scale: c.attentionScale,
      softcap: null,
      slidingWindow: null,
      projections: { q: "q_proj", k: "k_proj", v: "v_proj", o: "out_proj" },
      name: "OPTAttention",
    });
    const A = `${L}.self_attn`;
    tree.place(A, attention);
    for (const p of ["k_proj", "v_proj", "q_proj", "out_proj"]) {
      tree.place(`${A}.${p}`, src.linear(`${A}.${p}`, H, H));
    }
    const inputNorm = layerNorm(c, src, tree, `${L}.self_attn_layer_norm`);
    tree.place(`${L}.fc1`, src.linear(`${L}.fc1`, I, H));
    tree.place(`${L}.fc2`, src.linear(`${L}.fc2`, H, I));
    const mlpNorm = layerNorm(c, src, tree, `${L}.final_layer_norm`);
    // OPT keeps fc1/fc2 on the layer itself: the MLP reads them there.
    const mlp = new MLP(c.activation, { fc1: "fc1", fc2: "fc2" }, {
      name: "OPTMLP",
    });
    const layer = new DecoderLayer({
      inputNorm,
      attention,
      mlpNorm,
      mlp,
      postAttentionNorm: null,
      postMlpNorm: null,
      preNorm: c.preNorm,
    }, "OPTDecoderLayer");
    mlp.host = layer;
    tree.place(L, layer);
    layers.push(layer);
  }
  const head = lmHead(c, src, tree, embed, `${P}embed_tokens`, E);
  return {
    name: "OPTForCausalLM",
    parts: {
      embedTokens: embed,
      embedPositions: pos,
      projectIn,
      layers,
      finalNorm,
      projectOut,
      lmHead: head,
      rope: null,
    },
  };
}

function codegen(c: ModelConfig, src: Source, tree: Tree): Built {
  const P = prefixOf(src, ["transformer.", ""], "wte.weight");
  const body = P.slice(0, -1);
  if (body) tree.container(body, "CodeGenModel");
  const H = c.hiddenSize, I = c.intermediateSize;
  const wte = src.embedding(`${P}wte`, c.vocabSize, c.hiddenSize);
  tree.place(`${P}wte`, wte);
  tree.container(`${P}h`, "ModuleList");
  const rope = c.positions.kind === "rope"
    ? new RotaryEmbedding(c.headDim, c.positions, "CodeGenRotaryEmbedding")
    : null;
  const layers: DecoderLayer[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const L = `${P}h.${i}`;
    const inputNorm = layerNorm(c, src, tree, `${L}.ln_1`);
    const attention = new Attention({
      numHeads: c.numHeads,
      numKvHeads: c.numHeads,
      headDim: c.headDim,
      scale: c.attentionScale,
      softcap: null,
      slidingWindow: null,
      projections: { qkv: "qkv_proj", o: "out_proj", mpNum: 4 },
      name: "CodeGenAttention",
    });
    tree.place(`${L}.attn`, attention);
    tree.place(
      `${L}.attn.qkv_proj`,
      src.linear(`${L}.attn.qkv_proj`, 3 * H, H),
    );
    tree.place(`${L}.attn.out_proj`, src.linear(`${L}.attn.out_proj`, H, H));
    const mlp = new MLP(c.activation, { fc1: "fc_in", fc2: "fc_out" }, {
      name: "CodeGenMLP",
    });
    tree.place(`${L}.mlp`, mlp);
    tree.place(`${L}.mlp.fc_in`, src.linear(`${L}.mlp.fc_in`, I, H));
    tree.place(`${L}.mlp.fc_out`, src.linear(`${L}.mlp.fc_out`, H, I));
    const layer = new DecoderLayer({
      inputNorm,
      attention,
      mlpNorm: inputNorm,
      mlp,
      postAttentionNorm: null,
      postMlpNorm: null,
      preNorm: true,
      parallel: true,
    }, "CodeGenBlock");
    tree.place(L, layer);
    layers.push(layer);
  }
  const finalNorm = layerNorm(c, src, tree, `${P}ln_f`);
  const head = lmHead(c, src, tree, wte, `${P}wte`, H);
  return {
    name: "CodeGenForCausalLM",
    parts: {
      embedTokens: wte,
      embedPositions: null,
      projectIn: null,
      layers,
      finalNorm,
      projectOut: null,
      lmHead: head,
      rope,
    },
  };
}
