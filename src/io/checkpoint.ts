/**
 * Model checkpoints on disk: a Hugging Face model folder (`model.safetensors`,
 * or shards plus `model.safetensors.index.json`) or a single `.safetensors`
 * file. {@linkcode Checkpoint} opens one, decides which tensors are `Linear`
 * weights and builds a {@linkcode Module} tree of lazy tensors. Writing a
 * checkpoint is `quantizeCheckpoint`, `dequantizeCheckpoint` and `saveModule`
 * (each in its own module).
 *
 * Which tensors are Linear: a table of families read from `config.json`
 * (`model_type`, else `architectures`): llama, mistral, qwen2, gemma/gemma2,
 * phi3, gpt2 (Conv1D weights stored [in, out], transposed on the way in), bert.
 * Any other model uses the generic rule: a module whose only tensors are a
 * 2-D float `weight` and optionally a matching 1-D `bias`, with no children,
 * whose name does not say embedding, norm or position. Embeddings, norms and
 * 1-D tensors are never Linear; a tied `lm_head` (no tensor of its own) is
 * not invented.
 *
 * A broken `config.json` is an error, not a silent fallback: the output's
 * `config.json` is the input's plus a `quantization_config` block, so a config
 * TinyQ cannot read cannot be carried over either.
 *
 * @module
 */

import { memberName } from "../_member_name.ts";
import { join } from "node:path";
import type { DType } from "../dtype.ts";
import { Linear } from "../linear.ts";
import { Module } from "../module.ts";
import { Tensor } from "../tensor.ts";
import { excludeMatcher, type QuantizedLinear } from "../quant/replace.ts";
import { W8A16LinearLayer } from "../quant/w8a16_linear_layer.ts";
import type { Int8LinearLayer } from "../quant/int8_linear_layer.ts";
import { isQuantMethod, METHODS } from "../quant/schemes.ts";
import { INT8_PER_ROW } from "../quant/layouts.ts";
import { W4A16LinearLayer } from "../quant/w4a16_linear_layer.ts";
import { dequantizeInt4 } from "../quant/int4.ts";
import type { Int4Weight } from "../backend/backend.ts";
import type { SafetensorsFile } from "./safetensors.ts";
import type {
  CheckpointFormat,
  DecodedLinear,
  FormatLayer,
  QuantizationSummary,
} from "./formats/format.ts";
import { FORMATS } from "./formats/registry.ts";
import { CheckpointError } from "./_checkpoint_error.ts";
import {
  chooseFamily,
  classifyModule,
  type FamilyChoice,
} from "./_families.ts";
import { type Layout, locate } from "./_folder.ts";
import { openShards } from "./_shards.ts";
import {
  type DetectedQuantization,
  detectQuantization,
} from "./_detect_format.ts";
import { CheckpointTensor } from "./checkpoint_tensor.ts";

export { CheckpointError } from "./_checkpoint_error.ts";
// The types this API speaks in, so the module documents on its own.
export type { DType, FloatDType, TypedArray } from "../dtype.ts";
export type { LazyTensor, Tensor, TensorSource } from "../tensor.ts";
export type { Module } from "../module.ts";
export type { SafetensorsFile, TensorInfo } from "./safetensors.ts";
export type {
  CheckpointFormat,
  DecodedLinear,
  DetectContext,
  FormatLayer,
  FormatWarning,
  Int4RowsRecord,
  QuantizationSummary,
  QuantizedRowsRecord,
  TensorSpec,
  WeightScheme,
} from "./formats/format.ts";

export type { CheckpointEntry, ShardFiles } from "./checkpoint_entry.ts";
import type { CheckpointEntry } from "./checkpoint_entry.ts";

/** What TinyQ makes of one module that holds tensors. */
export interface LayerInfo {
  /** Dotted module path (`""` for tensors without a dot). */
  readonly path: string;
  /** Quantizable Linear layer. */
  readonly linear: boolean;
  /** Already quantized by TinyQ (in a quantized checkpoint). */
  readonly quantized: boolean;
  /** Weight stored [in, out] (GPT-2 Conv1D). */
  readonly transposed: boolean;
  /** Why, in words (`"llama table: self_attn.q_proj"`). */
  readonly reason: string;
  /** Output features of a Linear. */
  readonly outFeatures?: number;
  /** Input features of a Linear. */
  readonly inFeatures?: number;
  /** Dtype of a Linear's weight. */
  readonly dtype?: DType;
}

/** A Linear layer of a checkpoint as an output format sees it. */
export function formatLayer(l: LayerInfo): FormatLayer {
  return {
    path: l.path,
    outFeatures: l.outFeatures!,
    inFeatures: l.inFeatures!,
    transposed: l.transposed,
  };
}

/** What a checkpoint tensor becomes when quantized, for `inspect`. */
export interface TensorPlan {
  /** Full tensor name. */
  readonly name: string;
  /** `quantize` (a Linear weight), `exclude` (one left by `exclude`), `keep`, or `quantized` (already int8). */
  readonly action: "quantize" | "exclude" | "keep" | "quantized";
  /** Why. */
  readonly reason: string;
}

// Tensor-name tails that other quantizers write (GPTQ/AWQ, compressed-tensors,
// optimum-quanto, bitsandbytes): quantizing their output again is refused.
const FOREIGN_QUANTIZED: readonly [RegExp, string][] = [
  [/\.int8_weights$/, "TinyQ"],
  [/\.(qweight|qzeros|g_idx)$/, "GPTQ/AWQ"],
  [/\.(weight_packed|weight_scale|weight_zero_point)$/, "compressed-tensors"],
  [/\.weight\._(data|scale)$/, "optimum-quanto"],
  [
    /\.(SCB|weight_format)$|\.weight\.(absmax|quant_map|quant_state)/,
    "bitsandbytes",
  ],
];

/**
 * Where an int8 layer's arrays may live: given [out, in] and whether it has
 * zero points, arrays of those sizes (codes [out·in], scales [out], zero
 * points [out] or null) for the reader to fill, or null to keep its own.
 * `CpuBackend.allocInt8Weight` is one: the weight is then read straight
 * into the CPU kernels' shared memory and never held twice.
 */
export type Int8Arrays = (
  outFeatures: number,
  inFeatures: number,
  asymmetric: boolean,
) => Promise<
  { q: Int8Array; scales: Float32Array; zeroPoints: Int8Array | null } | null
>;

/**
 * An open checkpoint: its files, config, family and tensors, with nothing
 * read beyond the headers.
 *
 * @example Open the demo checkpoint and list its Linear layers
 * ```ts
 * import { Checkpoint, makeDemoCheckpoint } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * await makeDemoCheckpoint(dir, { layers: 1, hidden: 16 });
 * using ckpt = await Checkpoint.open(dir);
 * assert.equal(ckpt.family, "llama");
 * assert.ok(ckpt.layers().some((l) => l.path === "model.layers.0.self_attn.q_proj" && l.linear));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class Checkpoint {
  /** The path it was opened with. */
  readonly path: string;
  /** A model folder or a single file. */
  readonly kind: "folder" | "file";
  /** Its folder (for a file: the folder the file is in). */
  readonly dir: string;
  /** Shard file names in order. */
  readonly shardNames: readonly string[];
  /** Whether the folder has a `model.safetensors.index.json`. */
  readonly indexed: boolean;
  /** The parsed `config.json`, or null. */
  readonly config: Readonly<Record<string, unknown>> | null;
  /** The Linear table used (`"llama"`, …), or null for the generic rule. */
  readonly family: string | null;
  /** Why that table (or the generic rule) was chosen. */
  readonly familySource: string;
  /** The quantization this checkpoint records, or null for a float one. */
  readonly quantization: QuantizationSummary | null;
  /** The format that wrote the quantization, or null. */
  readonly format: CheckpointFormat | null;

  #files: Map<string, SafetensorsFile>;
  #entries: CheckpointEntry[];
  #byName: Map<string, CheckpointEntry>;
  #choice: FamilyChoice;
  #layers: LayerInfo[] | null = null;
  // Tensor name → quantized module it belongs to (quanto's `P.weight._data`
  // belongs to `P`, not to a module `P.weight`).
  #owners = new Map<string, string>();
  #shapes: ReadonlyMap<string, [number, number]>;

  private constructor(
    layout: Layout,
    files: Map<string, SafetensorsFile>,
    entries: CheckpointEntry[],
    quantization: DetectedQuantization | null,
  ) {
    this.path = layout.input;
    this.kind = layout.kind;
    this.dir = layout.dir;
    this.shardNames = layout.shardNames;
    this.indexed = layout.weightMap !== null;
    this.config = layout.config;
    this.#choice = chooseFamily(layout.config);
    this.family = this.#choice.family?.name ?? null;
    this.familySource = this.#choice.source;
    this.#files = files;
    this.#entries = entries;
    this.#byName = new Map(entries.map((e) => [e.name, e]));
    this.quantization = quantization?.summary ?? null;
    this.format = quantization?.format ?? null;
    this.#shapes = quantization?.shapes ?? new Map();
    for (const p of this.quantization?.modules ?? []) {
      for (const n of [...this.format!.storedNames(p), memberName(p, "bias")]) {
        if (this.#byName.has(n)) this.#owners.set(n, p);
      }
    }
  }

  /** The module a tensor belongs to and its name there. */
  #split(name: string): [path: string, local: string] {
    const owner = this.#owners.get(name);
    if (owner !== undefined) return [owner, name.slice(owner.length + 1)];
    const dot = name.lastIndexOf(".");
    return [dot < 0 ? "" : name.slice(0, dot), name.slice(dot + 1)];
  }

  /**
   * Opens a checkpoint folder or file and validates it: the index (JSON, a
   * `weight_map`, shard paths inside the folder, every tensor where the index
   * says), `config.json`, every shard's header. Throws
   * {@linkcode CheckpointError} or `SafetensorsError` naming the file.
   *
   * @example
   * ```ts
   * import { Checkpoint, CheckpointError } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * await assert.rejects(Checkpoint.open("no/such/model"), CheckpointError);
   * ```
   */
  static async open(
    path: string,
    formats: readonly CheckpointFormat[] = FORMATS,
  ): Promise<Checkpoint> {
    const layout = await locate(path);
    const files = new Map<string, SafetensorsFile>();
    try {
      const { entries, shardOf } = await openShards(layout, files);
      const quantization = await detectQuantization(
        layout,
        files,
        shardOf,
        new Map(entries.map((e) => [e.name, e.info])),
        formats,
      );
      return new Checkpoint(layout, files, entries, quantization);
    } catch (e) {
      for (const f of files.values()) f.close();
      throw e;
    }
  }

  /** Every tensor, shard by shard in data order. */
  get entries(): readonly CheckpointEntry[] {
    return this.#entries;
  }

  /** The entry of tensor `name`, or undefined. */
  entry(name: string): CheckpointEntry | undefined {
    return this.#byName.get(name);
  }

  /** The open file of shard `name`. */
  file(shard: string): SafetensorsFile {
    const f = this.#files.get(shard);
    if (!f) {
      throw new CheckpointError(
        this.path,
        `no shard named ${JSON.stringify(shard)}`,
      );
    }
    return f;
  }

  /** The path of shard `name` on disk. */
  shardPath(shard: string): string {
    return this.kind === "file" ? this.path : join(this.dir, shard);
  }

  /** Reads tensor `name` as stored (no transposition). */
  async read(name: string): Promise<Tensor> {
    const e = this.#byName.get(name);
    if (!e) throw new CheckpointError(this.path, "no such tensor", name);
    return await this.file(e.shard).read(name);
  }

  /**
   * Every module that holds tensors, with TinyQ's verdict: Linear or not,
   * and why. Throws {@linkcode CheckpointError} when a module the family
   * table calls Linear is not one (weight not 2-D, not float).
   */
  layers(): readonly LayerInfo[] {
    if (this.#layers) return this.#layers;
    const modules = new Map<
      string,
      Map<string, { dtype: DType; shape: readonly number[] }>
    >();
    for (const e of this.#entries) {
      const [path, local] = this.#split(e.name);
      let m = modules.get(path);
      if (!m) modules.set(path, m = new Map());
      m.set(local, e.info);
    }
    const parents = new Set<string>();
    for (const path of modules.keys()) {
      let p = path;
      while (p.includes(".")) {
        p = p.slice(0, p.lastIndexOf("."));
        parents.add(p);
      }
      if (path !== "") parents.add("");
    }
    const quantized = new Set(this.quantization?.modules ?? []);
    const layers: LayerInfo[] = [];
    for (const [path, tensors] of modules) {
      if (quantized.has(path)) {
        const q = this.#shapes.get(path);
        layers.push({
          path,
          linear: false,
          quantized: true,
          transposed: this.quantization!.transposed.includes(path),
          reason: `quantized (${this.format!.name} ${
            this.quantization!.method
          })`,
          ...(q ? { outFeatures: q[0], inFeatures: q[1] } : {}),
        });
        continue;
      }
      const v = classifyModule(this.#choice, {
        path,
        tensors,
        hasChildren: parents.has(path),
      });
      if ("error" in v) {
        const e = this.#byName.get(v.tensor)!;
        throw new CheckpointError(this.shardPath(e.shard), v.error, v.tensor);
      }
      if (v.linear) {
        const w = tensors.get("weight")!;
        const [a, b] = w.shape as [number, number];
        layers.push({
          path,
          linear: true,
          quantized: false,
          transposed: v.transposed,
          reason: v.reason,
          outFeatures: v.transposed ? b : a,
          inFeatures: v.transposed ? a : b,
          dtype: w.dtype,
        });
      } else {
        layers.push({
          path,
          linear: false,
          quantized: false,
          transposed: false,
          reason: v.reason,
        });
      }
    }
    return this.#layers = layers;
  }

  /** The Linear layers (quantizable), in tensor order. */
  linears(): LayerInfo[] {
    return this.layers().filter((l) => l.linear);
  }

  /**
   * Why this checkpoint cannot be quantized again, or null when it can: it
   * records a quantization, its config has a `quantization_config`, or its
   * tensors are named like another quantizer's output.
   */
  alreadyQuantized(): string | null {
    if (this.quantization) {
      return `already quantized by ${this.quantization.library} ` +
        `(${this.quantization.method}, ${this.quantization.modules.length} modules)`;
    }
    const qc = this.config?.quantization_config;
    if (qc !== undefined && qc !== null) {
      const method = (qc as Record<string, unknown>).quant_method;
      return `already quantized (config.json has a quantization_config` +
        `${
          typeof method === "string" ? ` with quant_method "${method}"` : ""
        })`;
    }
    for (const e of this.#entries) {
      for (const [re, who] of FOREIGN_QUANTIZED) {
        if (re.test(e.name)) {
          return `already quantized (tensor "${e.name}" is ${who} output)`;
        }
      }
    }
    return null;
  }

  /**
   * What quantizing would do to each tensor, with `exclude` (child names or
   * dotted-path globs, as for `replaceLinearWithTargetAndQuantize`).
   */
  plan(exclude: readonly string[] = []): TensorPlan[] {
    const excluded = excludeMatcher(exclude);
    const byPath = new Map(this.layers().map((l) => [l.path, l]));
    return this.#entries.map((e): TensorPlan => {
      const [path, local] = this.#split(e.name);
      const layer = byPath.get(path)!;
      if (layer.quantized) {
        return { name: e.name, action: "quantized", reason: layer.reason };
      }
      if (layer.linear && local === "weight") {
        if (excluded(layer.path)) {
          return {
            name: e.name,
            action: "exclude",
            reason: "matched --exclude",
          };
        }
        return { name: e.name, action: "quantize", reason: layer.reason };
      }
      if (layer.linear) {
        return {
          name: e.name,
          action: "keep",
          reason: "bias of a Linear (kept as is)",
        };
      }
      if (e.info.shape.length < 2) {
        return {
          name: e.name,
          action: "keep",
          reason: `${e.info.shape.length}-D tensor`,
        };
      }
      return { name: e.name, action: "keep", reason: layer.reason };
    });
  }

  /**
   * Builds the model as a {@linkcode Module} tree: a {@linkcode Linear} (with
   * lazy, file-backed weight and bias) for each Linear layer, plain modules
   * holding lazy tensors for everything else. In a quantized checkpoint the
   * quantized layers come back as the layers of the recorded method (see
   * {@linkcode Checkpoint.quantizedLayer}; their tensors read now).
   * `options.int8Arrays`, when given, supplies the arrays int8 layers are
   * built on (see {@linkcode Int8Arrays}).
   */
  async toModule(options: { int8Arrays?: Int8Arrays } = {}): Promise<Module> {
    const root = new Module();
    const byPath = new Map(this.layers().map((l) => [l.path, l]));
    const nodeAt = (path: string, name: string): Module => {
      let m = root;
      if (path === "") return m;
      for (const part of path.split(".")) {
        if (part === "") {
          throw new CheckpointError(
            this.path,
            "has an empty part in its dotted name; cannot build a module tree",
            name,
          );
        }
        let c = m.getChild(part);
        if (!c) m.setChild(part, c = new Module());
        m = c;
      }
      return m;
    };
    const done = new Set<string>();
    for (const e of this.#entries) {
      const [path, local] = this.#split(e.name);
      const layer = byPath.get(path)!;
      if ((layer.linear || layer.quantized) && path !== "") {
        if (done.has(path)) continue;
        done.add(path);
        const cut = path.lastIndexOf(".");
        const parent = nodeAt(cut < 0 ? "" : path.slice(0, cut), e.name);
        const childName = path.slice(cut + 1);
        if (childName === "") {
          throw new CheckpointError(
            this.path,
            "has an empty part in its dotted name; cannot build a module tree",
            e.name,
          );
        }
        const biasEntry = this.#byName.get(memberName(path, "bias"));
        if (layer.linear) {
          const weight = new CheckpointTensor(
            this,
            this.#byName.get(memberName(path, "weight"))!,
            layer.transposed,
          );
          const bias = biasEntry ? new CheckpointTensor(this, biasEntry) : null;
          parent.setChild(childName, Linear.fromTensors(weight, bias));
        } else {
          parent.setChild(
            childName,
            await this.quantizedLayer(path, options.int8Arrays),
          );
        }
        continue;
      }
      nodeAt(path, e.name).setTensor(local, new CheckpointTensor(this, e));
    }
    return root;
  }

  /**
   * [out, in] of the quantized Linear at `path` (Linear orientation, from the
   * headers or the format's shape tensor), or undefined when it has none.
   */
  quantizedShape(path: string): readonly [number, number] | undefined {
    return this.#shapes.get(path);
  }

  /**
   * The quantized Linear at `path` as a layer of the recorded method, with
   * its bias: `W4A16LinearLayer` for w4a16 (through
   * `W4A16LinearLayer.fromTensors`), `W8A8LinearLayer`, `W8A32LinearLayer`
   * or `W8A16LinearLayer` (zero points included where stored).
   *
   * @example
   * ```ts
   * import { Checkpoint, makeDemoCheckpoint, quantizeCheckpoint, W4A16LinearLayer } from "@tinyq/tinyq";
   * import assert from "node:assert/strict";
   * const dir = await Deno.makeTempDir();
   * await makeDemoCheckpoint(`${dir}/m`, { layers: 1, hidden: 64, intermediate: 128 });
   * await quantizeCheckpoint(`${dir}/m`, `${dir}/q`, { method: "w4a16", groupSize: 32 });
   * using q = await Checkpoint.open(`${dir}/q`);
   * const layer = await q.quantizedLayer("model.layers.0.mlp.down_proj");
   * assert.ok(layer instanceof W4A16LinearLayer && layer.groupSize === 32);
   * await Deno.remove(dir, { recursive: true });
   * ```
   */
  async quantizedLayer(
    path: string,
    int8Arrays?: Int8Arrays,
  ): Promise<QuantizedLinear> {
    const method = this.quantization?.method;
    const biasEntry = this.#byName.get(memberName(path, "bias"));
    const bias = biasEntry ? await this.read(biasEntry.name) : null;
    if (this.quantization?.bits === 4) {
      const w = await this.decodeInt4Linear(path);
      const groups = [w.n, w.k / w.groupSize];
      return W4A16LinearLayer.fromTensors({
        int4Weights: new Tensor(w.packed, [w.n, w.k / 2]),
        scales: new Tensor(w.scales, groups),
        zeroPoints: w.zeroPoints ? new Tensor(w.zeroPoints, groups) : null,
        bias,
      });
    }
    const d = await this.decodeLinear(path);
    // A checkpoint without a known int8 method holds W8A16's tensors.
    const Target = (method && isQuantMethod(method) &&
        METHODS[method].layout === INT8_PER_ROW
      ? METHODS[method].layer
      : W8A16LinearLayer) as unknown as new (
        inFeatures: number,
        outFeatures: number,
        options: { bias: boolean },
      ) => Int8LinearLayer;
    const ql = new Target(d.inFeatures, d.outFeatures, { bias: false });
    // Moved into the caller's arrays (the CPU kernels' shared memory) where
    // it offers them, so that the decoded ones are dropped layer by layer.
    const into = await int8Arrays?.(
      d.outFeatures,
      d.inFeatures,
      d.zeroPoints !== null,
    );
    if (into) {
      into.q.set(d.q);
      into.scales.set(d.scales);
      if (d.zeroPoints) into.zeroPoints?.set(d.zeroPoints);
    }
    ql.int8Weights = new Tensor(into?.q ?? d.q, [d.outFeatures, d.inFeatures]);
    ql.scales = new Tensor(into?.scales ?? d.scales, [d.outFeatures]);
    ql.zeroPoints = d.zeroPoints
      ? new Tensor(into?.zeroPoints ?? d.zeroPoints, [d.outFeatures], "i8")
      : null;
    ql.bias = bias;
    return ql;
  }

  /**
   * The float weight the quantized Linear at `path` stands for, f32 [out, in]
   * in Linear orientation: `(q − zp) · scale` per row for int8,
   * `(code − offset) · scale` per group for 4-bit weights.
   */
  async dequantizedWeight(path: string): Promise<Float32Array> {
    if (this.quantization?.bits === 4) {
      return dequantizeInt4(await this.decodeInt4Linear(path));
    }
    const d = await this.decodeLinear(path);
    const w = new Float32Array(d.q.length);
    const k = d.inFeatures;
    for (let r = 0; r < d.outFeatures; r++) {
      const s = d.scales[r]!;
      const z = d.zeroPoints ? d.zeroPoints[r]! : 0;
      for (let c = r * k; c < (r + 1) * k; c++) w[c] = (d.q[c]! - z) * s;
    }
    return w;
  }

  /**
   * Reads the 4-bit Linear at `path` of a w4a16 checkpoint through its
   * format; a malformed one is a {@linkcode CheckpointError}.
   */
  async decodeInt4Linear(path: string): Promise<Int4Weight> {
    const format = this.format;
    if (!format?.decodeInt4Linear) {
      throw new CheckpointError(
        this.path,
        format
          ? `the ${format.name} format has no 4-bit layers to read`
          : "is not a quantized checkpoint",
      );
    }
    return await this.#decode((read) => format.decodeInt4Linear!(path, read));
  }

  /**
   * Reads the quantized Linear at `path` of a quantized checkpoint through
   * its format; a malformed one is a {@linkcode CheckpointError}.
   */
  async decodeLinear(path: string): Promise<DecodedLinear> {
    const format = this.format;
    if (!format) {
      throw new CheckpointError(this.path, "is not a quantized checkpoint");
    }
    return await this.#decode((read) => format.decodeLinear(path, read));
  }

  // A format reports a malformed layer as a TypeError or RangeError; the
  // caller gets it as a CheckpointError naming this checkpoint.
  async #decode<T>(
    decode: (read: (name: string) => Promise<Tensor | null>) => Promise<T>,
  ): Promise<T> {
    try {
      return await decode(async (n) =>
        this.#byName.has(n) ? await this.read(n) : null
      );
    } catch (e) {
      if (e instanceof TypeError || e instanceof RangeError) {
        throw new CheckpointError(this.path, e.message, undefined, {
          cause: e,
        });
      }
      throw e;
    }
  }

  /** Closes the shard files. */
  close(): void {
    for (const f of this.#files.values()) f.close();
  }

  /** Closes the shard files (for `using`). */
  [Symbol.dispose](): void {
    this.close();
  }
}
