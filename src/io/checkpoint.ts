/**
 * Model checkpoints on disk: a Hugging Face model folder (`model.safetensors`,
 * or shards plus `model.safetensors.index.json`) or a single `.safetensors`
 * file. {@linkcode Checkpoint} opens one, decides which tensors are `Linear`
 * weights and builds a {@linkcode Module} tree of lazy tensors;
 * {@linkcode quantizeCheckpoint} and {@linkcode dequantizeCheckpoint} stream a
 * checkpoint to a new one tensor block by tensor block, and
 * {@linkcode saveModule} writes a model quantized in memory to the same bytes.
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

import { join } from "node:path";
import {
  type DType,
  DTYPE_SIZE,
  type FloatDType,
  isFloatDType,
} from "../dtype.ts";
import { Linear } from "../linear.ts";
import { Module } from "../module.ts";
import { numel, Tensor } from "../tensor.ts";
import type { LazyTensor } from "../tensor.ts";
import type { Int8LinearLayer } from "../quant/int8_linear_layer.ts";
import { Int8LinearLayer as Int8Base } from "../quant/int8_linear_layer.ts";
import { excludeMatcher, type QuantizedLinear } from "../quant/replace.ts";
import { W8A16LinearLayer } from "../quant/w8a16_linear_layer.ts";
import { W8A32LinearLayer } from "../quant/w8a32_linear_layer.ts";
import { W8A8LinearLayer } from "../quant/w8a8_linear_layer.ts";
import { W4A16LinearLayer } from "../quant/w4a16_linear_layer.ts";
import { DEFAULT_INT4_GROUP_SIZE, dequantizeInt4 } from "../quant/int4.ts";
import type { Int4Weight } from "../backend/cpu_lowbit.ts";
import { SafetensorsFile, type TensorInfo } from "./safetensors.ts";
import {
  type CheckpointFormat,
  type DecodedLinear,
  type FormatLayer,
  type FormatWarning,
  INT8_SYMMETRIC,
  type QuantizationSummary,
  type TensorSpec,
  type WeightScheme,
} from "./formats/format.ts";
import { checkGroupSizes } from "./_group_check.ts";
import { TINYQ_VERSION, tinyqFormat } from "./formats/tinyq.ts";
import { FORMATS } from "./formats/registry.ts";
import { EXPORT_METADATA_KEY } from "./formats/_export.ts";
import { CheckpointError, osReason } from "./_checkpoint_error.ts";
import {
  chooseFamily,
  classifyModule,
  type FamilyChoice,
} from "./_families.ts";
import { INDEX_NAME, type Layout, locate } from "./_folder.ts";
import { specBytes, type Unit } from "./_emit.ts";
import { type InputGroup, writeOutput } from "./_output.ts";

export { CheckpointError } from "./_checkpoint_error.ts";
// The types this API speaks in, so the module documents on its own.
export type { DType, FloatDType, TypedArray } from "../dtype.ts";
export type { LazyTensor, Tensor, TensorSource } from "../tensor.ts";
export type { Module } from "../module.ts";
export type { SafetensorsFile, TensorInfo } from "./safetensors.ts";
export { removeActiveTemps } from "./_atomic.ts";
export { parseSize } from "./_sharding.ts";
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

/**
 * The quantization methods a checkpoint can record. W8A32, W8A16 and W8A8
 * store the same int8 tensors (they differ in what forward does with the
 * activations); W4A16 stores group-wise 4-bit weights.
 */
export type CheckpointMethod = "w8a16" | "w8a32" | "w8a8" | "w4a16";

/** One tensor of a checkpoint and the file it is in. */
export interface CheckpointEntry {
  /** Full tensor name. */
  readonly name: string;
  /** The shard's file name (relative to the folder). */
  readonly shard: string;
  /** Dtype, shape and position in the shard. */
  readonly info: TensorInfo;
}

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

/** What a checkpoint tensor becomes when quantized, for `inspect`. */
export interface TensorPlan {
  /** Full tensor name. */
  readonly name: string;
  /** `quantize` (a Linear weight), `exclude` (one left by `exclude`), `keep`, or `quantized` (already int8). */
  readonly action: "quantize" | "exclude" | "keep" | "quantized";
  /** Why. */
  readonly reason: string;
}

/**
 * A tensor of a checkpoint, read when loaded. GPT-2's Conv1D weights are
 * transposed on load, so `shape` is the Linear shape [out, in].
 *
 * @example
 * ```ts
 * import { Checkpoint, CheckpointTensor, makeDemoCheckpoint } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * await makeDemoCheckpoint(dir, { layers: 1, hidden: 16 });
 * using ckpt = await Checkpoint.open(dir);
 * const lazy = new CheckpointTensor(ckpt, ckpt.entry("model.norm.weight")!);
 * assert.deepEqual(lazy.shape, [16]);
 * assert.equal((await lazy.load()).dtype, "bf16");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class CheckpointTensor implements LazyTensor {
  /** The checkpoint it belongs to. */
  readonly checkpoint: Checkpoint;
  /** Its entry. */
  readonly entry: CheckpointEntry;
  /** Whether `load()` transposes the stored [in, out] matrix. */
  readonly transposed: boolean;

  /** Wraps `entry` of `checkpoint`. */
  constructor(
    checkpoint: Checkpoint,
    entry: CheckpointEntry,
    transposed = false,
  ) {
    this.checkpoint = checkpoint;
    this.entry = entry;
    this.transposed = transposed;
  }

  /** The element type. */
  get dtype(): DType {
    return this.entry.info.dtype;
  }

  /** The dimensions (transposed ones swapped). */
  get shape(): readonly number[] {
    const s = this.entry.info.shape;
    return this.transposed ? [s[1]!, s[0]!] : s;
  }

  /** Reads the tensor (and transposes it where needed). */
  async load(): Promise<Tensor> {
    const t = await this.checkpoint.file(this.entry.shard).read(
      this.entry.name,
    );
    if (!this.transposed) return t;
    const [rows, cols] = t.shape as [number, number];
    const src = t.data;
    const dst = new (src.constructor as new (n: number) => typeof src)(
      src.length,
    );
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        (dst as Uint16Array)[c * rows + r] =
          (src as Uint16Array)[r * cols + c]!;
      }
    }
    return new Tensor(dst, [cols, rows], t.dtype);
  }
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
    quantization:
      | { summary: QuantizationSummary; format: CheckpointFormat }
      | null,
    shapes: ReadonlyMap<string, [number, number]> = new Map(),
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
    this.#shapes = shapes;
    for (const p of this.quantization?.modules ?? []) {
      for (const n of [...this.format!.storedNames(p), `${p}.bias`]) {
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
      const entries: CheckpointEntry[] = [];
      const seen = new Map<string, string>();
      for (const shard of layout.shardNames) {
        const filePath = layout.kind === "file"
          ? layout.input
          : join(layout.dir, shard);
        const f = await SafetensorsFile.open(filePath);
        files.set(shard, f);
        for (const info of f.tensors) {
          const other = seen.get(info.name);
          if (other !== undefined) {
            throw new CheckpointError(
              filePath,
              `also in ${other}; a tensor must be in one shard`,
              info.name,
            );
          }
          seen.set(info.name, shard);
          entries.push({ name: info.name, shard, info });
        }
      }
      if (layout.weightMap) {
        const indexPath = join(layout.dir, INDEX_NAME);
        for (const [name, shard] of layout.weightMap) {
          if (seen.get(name) !== shard) {
            throw new CheckpointError(
              indexPath,
              `weight_map puts it in ${shard}, which has no tensor of that name`,
              name,
            );
          }
        }
        for (const e of entries) {
          if (!layout.weightMap.has(e.name)) {
            throw new CheckpointError(
              join(layout.dir, e.shard),
              `is not in the weight_map of ${INDEX_NAME}`,
              e.name,
            );
          }
        }
      }
      let quantization: {
        summary: QuantizationSummary;
        format: CheckpointFormat;
      } | null = null;
      const firstFile = files.get(layout.shardNames[0]!)!;
      const tensors = new Map(entries.map((e) => [e.name, e.info]));
      for (const format of formats) {
        const texts: Record<string, string> = {};
        for (const name of format.detectFiles ?? []) {
          const text = await readBeside(layout, name);
          if (text !== null) texts[name] = text;
        }
        try {
          const summary = format.detect(firstFile.metadata, layout.config, {
            tensors,
            files: texts,
          });
          if (summary) {
            quantization = { summary, format };
            break;
          }
        } catch (e) {
          throw new CheckpointError(
            Object.keys(texts).length > 0
              ? join(layout.dir, Object.keys(texts)[0]!)
              : firstFile.path,
            (e as Error).message,
          );
        }
      }
      const shapes = quantization
        ? await quantizedShapes(quantization, tensors, files, seen)
        : new Map();
      return new Checkpoint(layout, files, entries, quantization, shapes);
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
   */
  async toModule(): Promise<Module> {
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
        const biasEntry = this.#byName.get(`${path}.bias`);
        if (layer.linear) {
          const weight = new CheckpointTensor(
            this,
            this.#byName.get(`${path}.weight`)!,
            layer.transposed,
          );
          const bias = biasEntry ? new CheckpointTensor(this, biasEntry) : null;
          parent.setChild(childName, Linear.fromTensors(weight, bias));
        } else {
          parent.setChild(childName, await this.quantizedLayer(path));
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
  async quantizedLayer(path: string): Promise<QuantizedLinear> {
    const method = this.quantization?.method;
    const biasEntry = this.#byName.get(`${path}.bias`);
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
    const Target = method === "w8a32"
      ? W8A32LinearLayer
      : method === "w8a8"
      ? W8A8LinearLayer
      : W8A16LinearLayer;
    const ql = new Target(d.inFeatures, d.outFeatures, { bias: false });
    ql.int8Weights = new Tensor(d.q, [d.outFeatures, d.inFeatures]);
    ql.scales = new Tensor(d.scales, [d.outFeatures]);
    ql.zeroPoints = d.zeroPoints
      ? new Tensor(d.zeroPoints, [d.outFeatures], "i8")
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
    try {
      return await format.decodeInt4Linear(
        path,
        async (n) => this.#byName.has(n) ? await this.read(n) : null,
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

  /**
   * Reads the quantized Linear at `path` of a quantized checkpoint through
   * its format; a malformed one is a {@linkcode CheckpointError}.
   */
  async decodeLinear(path: string): Promise<DecodedLinear> {
    if (!this.format) {
      throw new CheckpointError(this.path, "is not a quantized checkpoint");
    }
    try {
      return await this.format.decodeLinear(
        path,
        async (n) => this.#byName.has(n) ? await this.read(n) : null,
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

/** One line of progress. */
export interface CheckpointProgress {
  /** Input bytes processed so far. */
  readonly bytesDone: number;
  /** Input bytes in all. */
  readonly bytesTotal: number;
  /** Tensors (units) finished so far. */
  readonly tensorsDone: number;
  /** Tensors (units) in all. */
  readonly tensorsTotal: number;
  /** Linear layers converted so far. */
  readonly layersDone: number;
  /** Linear layers to convert in all. */
  readonly layersTotal: number;
}

/** One finished output unit (for a per-tensor log like llama.cpp's). */
export interface TensorEvent {
  /** 1-based position among all units. */
  readonly index: number;
  /** Units in all. */
  readonly total: number;
  /** Input tensor name (for a converted Linear: its weight). */
  readonly name: string;
  /** `quantized`, `dequantized`, `excluded` (a Linear left in float) or `kept`. */
  readonly action: "quantized" | "dequantized" | "excluded" | "kept";
  /** Input dtype. */
  readonly dtype: DType;
  /** Input shape as stored. */
  readonly shape: readonly number[];
  /** Input bytes. */
  readonly bytesIn: number;
  /** Output bytes. */
  readonly bytesOut: number;
}

/** Options of {@linkcode quantizeCheckpoint}. */
export interface QuantizeCheckpointOptions {
  /**
   * `w8a16` (default), `w8a32` or `w8a8` (the same int8 tensors, a different
   * recorded method), or `w4a16` (group-wise 4-bit weights).
   */
  method?: CheckpointMethod;
  /** Zero points: per row (int8 methods) or per group (w4a16). Default false. */
  asymmetric?: boolean;
  /** Inputs per 4-bit group, w4a16 only: 32, 64 or 128 (default 128). */
  groupSize?: number;
  /** Linear layers to leave in float: child names or dotted-path globs. */
  exclude?: readonly string[];
  /** Split the output into shards of at most this many bytes (default: the input's plan). */
  maxShardSize?: number;
  /** Replace an existing output. */
  force?: boolean;
  /** The output format (default TinyQ's own). */
  format?: CheckpointFormat;
  /** Called as bytes are processed. */
  onProgress?: (p: CheckpointProgress) => void;
  /** Called as each tensor is finished. */
  onTensor?: (e: TensorEvent) => void;
}

/** A Linear layer the output format keeps in float. */
export interface KeptFloat {
  /** Dotted module path. */
  readonly path: string;
  /** Why the format cannot hold it quantized. */
  readonly reason: string;
}

function formatLayer(l: LayerInfo): FormatLayer {
  return {
    path: l.path,
    outFeatures: l.outFeatures!,
    inFeatures: l.inFeatures!,
    transposed: l.transposed,
  };
}

/** What {@linkcode quantizeCheckpoint} (or {@linkcode saveModule}) did. */
export interface QuantizeResult {
  /** The input path. */
  input: string;
  /** The output path. */
  output: string;
  /** The method recorded. */
  method: CheckpointMethod;
  /** How the weights are stored: bits, group size, symmetric. */
  scheme: WeightScheme;
  /** The output format. */
  format: string;
  /** The Linear table used, or null (generic rule). */
  family: string | null;
  /** Why that table. */
  familySource: string;
  /** Dotted paths of the quantized Linear layers. */
  quantized: string[];
  /** Linear layers left in float: by `exclude`, or because the format cannot hold them quantized. */
  excluded: string[];
  /** The layers of `excluded` the format keeps in float, with why. */
  keptFloat: KeptFloat[];
  /** What may stop the engines that load the format from serving the output. */
  warnings: FormatWarning[];
  /** Input tensors passed through unchanged (excluded weights and biases included). */
  kept: number;
  /** Output shard names. */
  shards: string[];
  /** Other files copied from the input folder. */
  copied: string[];
  /** Files of the input folder not copied, with why. */
  skipped: string[];
  /** Sum of the input tensors' bytes. */
  inputBytes: number;
  /** Sum of the output tensors' bytes. */
  outputBytes: number;
  /** Elements of all input tensors (for bits per weight). */
  parameters: number;
  /** Elements of the quantized Linear weights. */
  quantizedParameters: number;
  /** Bytes of the quantized Linear weights before. */
  quantizedBytesBefore: number;
  /** Bytes of their int8 weights and scales after. */
  quantizedBytesAfter: number;
  /** Wall time in seconds. */
  seconds: number;
}

function baseMetadata(file: SafetensorsFile): Map<string, string> {
  const m = new Map<string, string>([["format", "pt"]]);
  for (const [k, v] of Object.entries(file.metadata ?? {})) {
    if (k !== "quantization" && k !== EXPORT_METADATA_KEY) m.set(k, v);
  }
  return m;
}

/**
 * The stored layout of `method`: int8 per output row for the int8 methods,
 * 4-bit groups (default 128 inputs) for w4a16, zero points when asymmetric.
 * A group size for an int8 method is an error.
 *
 * @example
 * ```ts
 * import { weightSchemeOf } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.deepEqual(weightSchemeOf("w4a16"), { bits: 4, groupSize: 128, symmetric: true, method: "w4a16" });
 * assert.deepEqual(weightSchemeOf("w8a8", { asymmetric: true }), { bits: 8, groupSize: null, symmetric: false, method: "w8a8" });
 * assert.throws(() => weightSchemeOf("w8a16", { groupSize: 32 }), /w4a16 only/);
 * ```
 */
export function weightSchemeOf(
  method: CheckpointMethod,
  options: { asymmetric?: boolean; groupSize?: number } = {},
): WeightScheme {
  if (method === "w4a16") {
    return {
      bits: 4,
      groupSize: options.groupSize ?? DEFAULT_INT4_GROUP_SIZE,
      symmetric: !options.asymmetric,
      method,
    };
  }
  if (options.groupSize !== undefined) {
    throw new RangeError(
      `a group size applies to w4a16 only; ${method} has one int8 scale per output row`,
    );
  }
  return { bits: 8, groupSize: null, symmetric: !options.asymmetric, method };
}

/** The summary fields that describe `method` stored as `scheme`. */
function schemeSummary(
  method: CheckpointMethod,
  scheme: WeightScheme,
): Pick<
  QuantizationSummary,
  "method" | "bits" | "granularity" | "symmetric" | "groupSize" | "activations"
> {
  return {
    method,
    bits: scheme.bits,
    granularity: scheme.bits === 4 ? "group" : "per-channel",
    symmetric: scheme.symmetric,
    groupSize: scheme.groupSize,
    activations: ACTIVATIONS[method],
  };
}

/** Refuses a scheme the output format cannot store, before any work. */
function checkFormatScheme(
  format: CheckpointFormat,
  method: CheckpointMethod,
  scheme: WeightScheme,
): void {
  const ok = format.supports
    ? format.supports(scheme)
    : scheme.bits === 8 && scheme.symmetric;
  if (!ok || (scheme.bits === 4 && !format.encodeInt4Linear)) {
    throw new RangeError(
      `the ${format.name} format does not store ${method} ${
        scheme.bits === 4 ? `4-bit (group ${scheme.groupSize})` : "8-bit"
      } ${scheme.symmetric ? "symmetric" : "asymmetric"} weights`,
    );
  }
}

const ACTIVATIONS: Readonly<Record<CheckpointMethod, string>> = {
  w8a32: "f32",
  w8a16: "f16/bf16",
  w8a8: "int8 dynamic per-token",
  w4a16: "f16/bf16",
};

function summaryOf(
  ckpt: Checkpoint,
  method: CheckpointMethod,
  quantized: readonly string[],
  excluded: readonly string[],
  scheme: WeightScheme = INT8_SYMMETRIC,
): QuantizationSummary {
  const byPath = new Map(ckpt.linears().map((l) => [l.path, l]));
  const dtypes = new Set(quantized.map((p) => byPath.get(p)?.dtype));
  const only = dtypes.size === 1 ? [...dtypes][0] : undefined;
  return {
    library: "tinyq",
    version: TINYQ_VERSION,
    ...schemeSummary(method, scheme),
    modules: [...quantized],
    excluded: [...excluded],
    transposed: quantized.filter((p) => byPath.get(p)?.transposed),
    ...(only ? { weightDtype: only } : {}),
  };
}

function sourceOf(
  ckpt: Checkpoint,
  e: CheckpointEntry,
): { path: string; info: TensorInfo } {
  return { path: ckpt.shardPath(e.shard), info: e.info };
}

function copyUnit(ckpt: Checkpoint, e: CheckpointEntry): Unit {
  return {
    kind: "copy",
    spec: { name: e.name, dtype: e.info.dtype, shape: e.info.shape },
    src: sourceOf(ckpt, e),
  };
}

function outputConfig(
  ckpt: Checkpoint,
  block: Record<string, unknown> | null,
  update?: (config: Record<string, unknown>) => Record<string, unknown>,
): Record<string, unknown> | null {
  if (!ckpt.config) return null;
  const c: Record<string, unknown> = { ...ckpt.config };
  delete c.quantization_config;
  // An empty block (quanto's) means the format records nothing in config.json.
  if (block && Object.keys(block).length > 0) c.quantization_config = block;
  return update ? update(c) : c;
}

/** The text of file `name` beside a checkpoint folder's shards, or null. */
async function readBeside(
  layout: Layout,
  name: string,
): Promise<string | null> {
  if (layout.kind !== "folder") return null;
  const path = join(layout.dir, name);
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new CheckpointError(path, `cannot read: ${osReason(e)}`);
  }
}

/**
 * [out, in] of each quantized Linear: the format's own answer (compressed-
 * tensors keeps it in `weight_shape`) or the shape of its first stored
 * tensor. A layer whose shape cannot be read is left out; decoding it names
 * what is wrong.
 */
async function quantizedShapes(
  q: { summary: QuantizationSummary; format: CheckpointFormat },
  tensors: ReadonlyMap<string, TensorInfo>,
  files: ReadonlyMap<string, SafetensorsFile>,
  shardOf: ReadonlyMap<string, string>,
): Promise<Map<string, [number, number]>> {
  const read = async (name: string) => {
    const shard = shardOf.get(name);
    return shard === undefined ? null : await files.get(shard)!.read(name);
  };
  const shapes = new Map<string, [number, number]>();
  for (const p of q.summary.modules) {
    if (q.format.linearShape) {
      try {
        shapes.set(p, await q.format.linearShape(p, read, tensors));
      } catch {
        // Reported by decodeLinear when the layer is used.
      }
      continue;
    }
    const anchor = q.format.storedNames(p).find((n) => tensors.has(n));
    const shape = anchor === undefined ? null : tensors.get(anchor)!.shape;
    // Packed 4-bit weights hold two inputs per byte.
    const perElement = q.summary.bits === 4 ? 2 : 1;
    if (shape?.length === 2) shapes.set(p, [shape[0]!, shape[1]! * perElement]);
  }
  return shapes;
}

function consumedFiles(ckpt: Checkpoint): Set<string> {
  return new Set([...ckpt.shardNames, INDEX_NAME, "config.json"]);
}

interface Tally {
  units: number;
  layers: number;
}

function progressHooks(
  ckpt: Checkpoint,
  groups: readonly InputGroup[],
  tally: Tally,
  options: Pick<QuantizeCheckpointOptions, "onProgress" | "onTensor">,
  action: (u: Unit) => TensorEvent["action"],
) {
  const all = groups.flatMap((g) => g.units);
  const bytesTotal = all.reduce(
    (s, u) => s + (u.kind === "produce" ? 0 : u.src.info.byteLength),
    0,
  );
  let bytesDone = 0;
  let tensorsDone = 0;
  let layersDone = 0;
  const report = () =>
    options.onProgress?.({
      bytesDone,
      bytesTotal,
      tensorsDone,
      tensorsTotal: tally.units,
      layersDone,
      layersTotal: tally.layers,
    });
  return {
    onBytes(n: number) {
      bytesDone += n;
      report();
    },
    onUnit(u: Unit) {
      tensorsDone++;
      const a = action(u);
      if (a === "quantized" || a === "dequantized") layersDone++;
      if (options.onTensor) {
        const src = u.kind === "produce" ? null : u.src.info;
        const specs = u.kind === "copy" ? [u.spec] : u.specs;
        const name = src?.name ?? (u.kind === "produce" ? u.label : "");
        const e = src ?? ckpt.entry(name)?.info;
        options.onTensor({
          index: tensorsDone,
          total: tally.units,
          name,
          action: a,
          dtype: e?.dtype ?? specs[0]!.dtype,
          shape: e?.shape ?? specs[0]!.shape,
          bytesIn: e?.byteLength ?? 0,
          bytesOut: specs.reduce(
            (s, t) => s + numel(t.shape) * DTYPE_SIZE[t.dtype],
            0,
          ),
        });
      }
      report();
    },
  };
}

/**
 * Quantizes the checkpoint at `input` into a new checkpoint at `output`,
 * streaming: each Linear weight is read, quantized and written in blocks of
 * rows, every other tensor is copied byte for byte, so memory stays flat
 * whatever the checkpoint's size. The output keeps the input's shard plan
 * (or `maxShardSize`), gets a fresh index, `config.json` with a
 * `quantization_config` block, and the input folder's other files. It
 * appears only when complete; an existing output is refused unless `force`.
 *
 * @example
 * ```ts
 * import { Checkpoint, makeDemoCheckpoint, quantizeCheckpoint } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * await makeDemoCheckpoint(`${dir}/model`, { layers: 1, hidden: 16 });
 * const result = await quantizeCheckpoint(`${dir}/model`, `${dir}/q`, { exclude: ["lm_head"] });
 * assert.deepEqual(result.excluded, ["lm_head"]);
 * using q = await Checkpoint.open(`${dir}/q`);
 * assert.equal(q.quantization?.method, "w8a16");
 * assert.equal(q.entry("model.layers.0.mlp.up_proj.int8_weights")?.info.dtype, "i8");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function quantizeCheckpoint(
  input: string,
  output: string,
  options: QuantizeCheckpointOptions = {},
): Promise<QuantizeResult> {
  const t0 = performance.now();
  const method = options.method ?? "w8a16";
  const format = options.format ?? tinyqFormat;
  const scheme = weightSchemeOf(method, options);
  checkFormatScheme(format, method, scheme);
  const ckpt = await Checkpoint.open(input);
  try {
    const why = ckpt.alreadyQuantized();
    if (why) {
      throw new CheckpointError(
        input,
        `${why}; refusing to quantize twice (quantize the original checkpoint)`,
      );
    }
    const isExcluded = excludeMatcher(options.exclude ?? []);
    const linears = new Map(ckpt.linears().map((l) => [l.path, l]));
    const quantized: string[] = [];
    const excluded: string[] = [];
    const keptFloat: KeptFloat[] = [];
    for (const e of ckpt.entries) {
      if (!e.name.endsWith(".weight")) continue;
      const path = e.name.slice(0, -".weight".length);
      if (!linears.has(path)) continue;
      const why = isExcluded(path)
        ? null
        : format.keepFloat?.(formatLayer(linears.get(path)!)) ?? null;
      if (why) keptFloat.push({ path, reason: why });
      (isExcluded(path) || why ? excluded : quantized).push(path);
    }
    if (scheme.groupSize !== null) {
      // Before anything is written: every layer must split into groups.
      checkGroupSizes(
        input,
        quantized.map((p) => ({
          path: p,
          inFeatures: linears.get(p)!.inFeatures!,
        })),
        scheme.groupSize,
      );
    }
    const summary = summaryOf(ckpt, method, quantized, excluded, scheme);
    const warnings = format.warnings?.(
      summary,
      quantized.map((p) => formatLayer(linears.get(p)!)),
    ) ?? [];
    const qset = new Set(quantized);
    const fileMeta = format.fileMetadata(summary);
    const groups: InputGroup[] = ckpt.shardNames.map((shard) => {
      const metadata = baseMetadata(ckpt.file(shard));
      for (const [k, v] of Object.entries(fileMeta)) metadata.set(k, v);
      return { name: shard, units: [], metadata };
    });
    const groupOf = new Map(groups.map((g) => [g.name, g]));
    const tally: Tally = { units: 0, layers: quantized.length };
    const res = {
      parameters: 0,
      inputBytes: 0,
      quantizedParameters: 0,
      quantizedBytesBefore: 0,
      quantizedBytesAfter: 0,
      kept: 0,
    };
    for (const e of ckpt.entries) {
      res.parameters += numel(e.info.shape);
      res.inputBytes += e.info.byteLength;
      const path = e.name.endsWith(".weight")
        ? e.name.slice(0, -".weight".length)
        : null;
      const g = groupOf.get(e.shard)!;
      if (path !== null && qset.has(path)) {
        const l = linears.get(path)!;
        const specs = format.linearTensors(
          path,
          l.outFeatures!,
          l.inFeatures!,
          l.dtype!,
          scheme,
        );
        g.units.push({
          kind: "quantize",
          path,
          specs,
          src: sourceOf(ckpt, e),
          transposed: l.transposed,
          outFeatures: l.outFeatures!,
          inFeatures: l.inFeatures!,
          dtype: l.dtype as FloatDType,
          scheme,
        });
        res.quantizedParameters += numel(e.info.shape);
        res.quantizedBytesBefore += e.info.byteLength;
        res.quantizedBytesAfter += specs.reduce(
          (s, t) => s + numel(t.shape) * DTYPE_SIZE[t.dtype],
          0,
        );
      } else {
        g.units.push(copyUnit(ckpt, e));
        res.kept++;
      }
      tally.units++;
    }
    const excludedWeights = new Set(excluded.map((p) => `${p}.weight`));
    const hooks = progressHooks(
      ckpt,
      groups,
      tally,
      options,
      (u) =>
        u.kind === "quantize"
          ? "quantized"
          : u.kind === "copy" && excludedWeights.has(u.spec.name)
          ? "excluded"
          : "kept",
    );
    const block = format.configBlock(summary);
    const report = await writeOutput({
      dest: output,
      force: options.force ?? false,
      kind: ckpt.kind,
      inputDir: ckpt.kind === "folder" ? ckpt.dir : null,
      inputs: [ckpt.kind === "folder" ? ckpt.dir : ckpt.path],
      consumed: consumedFiles(ckpt),
      indexed: ckpt.indexed,
      groups,
      ...(options.maxShardSize !== undefined
        ? { maxShardSize: options.maxShardSize }
        : {}),
      config: outputConfig(
        ckpt,
        block,
        (c) => format.updateConfig?.(c, summary) ?? c,
      ),
      extraFiles: ckpt.kind === "folder" ? format.extraFiles(summary) : {},
      format,
      hooks,
    });
    const result: QuantizeResult = {
      input,
      output,
      method,
      scheme,
      format: format.name,
      family: ckpt.family,
      familySource: ckpt.familySource,
      quantized,
      excluded,
      keptFloat,
      warnings,
      kept: res.kept,
      shards: report.shards,
      copied: report.copied,
      skipped: report.skipped,
      inputBytes: res.inputBytes,
      outputBytes: report.tensorBytes,
      parameters: res.parameters,
      quantizedParameters: res.quantizedParameters,
      quantizedBytesBefore: res.quantizedBytesBefore,
      quantizedBytesAfter: res.quantizedBytesAfter,
      seconds: (performance.now() - t0) / 1000,
    };
    return result;
  } finally {
    ckpt.close();
  }
}

/** Options of {@linkcode dequantizeCheckpoint}. */
export interface DequantizeCheckpointOptions {
  /** Dtype of the restored weights (default: the original one, else f32). */
  dtype?: FloatDType;
  /** Replace an existing output. */
  force?: boolean;
  /** Split the output into shards of at most this many bytes. */
  maxShardSize?: number;
  /** Called as bytes are processed. */
  onProgress?: (p: CheckpointProgress) => void;
  /** Called as each tensor is finished. */
  onTensor?: (e: TensorEvent) => void;
}

/** What {@linkcode dequantizeCheckpoint} did. */
export interface DequantizeResult {
  /** The input path. */
  input: string;
  /** The output path. */
  output: string;
  /** Dtype of the restored weights. */
  dtype: FloatDType;
  /** Layers restored to float. */
  dequantized: string[];
  /** Output shard names. */
  shards: string[];
  /** Sum of the input tensors' bytes. */
  inputBytes: number;
  /** Sum of the output tensors' bytes. */
  outputBytes: number;
  /** Wall time in seconds. */
  seconds: number;
}

function toDtypeBytes(w: Float32Array, dtype: FloatDType): Uint8Array {
  const t = new Tensor(w, [w.length]).to(dtype);
  return t.bytes();
}

/**
 * Turns a TinyQ-quantized checkpoint back into a plain float one that any
 * safetensors loader reads: each `P.int8_weights`/`P.scales` pair becomes
 * `P.weight` = q · scale (GPT-2's Conv1D weights back in [in, out]), the
 * `quantization` metadata and `config.json`'s `quantization_config` go.
 *
 * @example
 * ```ts
 * import { Checkpoint, dequantizeCheckpoint, makeDemoCheckpoint, quantizeCheckpoint } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * await makeDemoCheckpoint(`${dir}/model`, { layers: 1, hidden: 16 });
 * await quantizeCheckpoint(`${dir}/model`, `${dir}/q`);
 * await dequantizeCheckpoint(`${dir}/q`, `${dir}/back`, { dtype: "f32" });
 * using back = await Checkpoint.open(`${dir}/back`);
 * assert.equal(back.quantization, null);
 * assert.equal(back.entry("model.layers.0.mlp.up_proj.weight")?.info.dtype, "f32");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function dequantizeCheckpoint(
  input: string,
  output: string,
  options: DequantizeCheckpointOptions = {},
): Promise<DequantizeResult> {
  const t0 = performance.now();
  const ckpt = await Checkpoint.open(input);
  try {
    const q = ckpt.quantization;
    const format = ckpt.format;
    if (!q || !format) {
      throw new CheckpointError(
        input,
        "is not a TinyQ-quantized checkpoint (no quantization metadata); nothing to dequantize",
      );
    }
    const recorded = q.weightDtype && isFloatDType(q.weightDtype)
      ? q.weightDtype
      : "f32";
    const dtype = options.dtype ?? recorded;
    const transposed = new Set(q.transposed);
    const stored = new Map<string, string>();
    // The tensor each layer's float weight takes the place of: the first of
    // its stored tensors the checkpoint holds (int8_weights, weight_packed,
    // weight._data).
    const anchors = new Map<string, string>();
    for (const p of q.modules) {
      for (const n of format.storedNames(p)) stored.set(n, p);
      const first = format.storedNames(p).find((n) => ckpt.entry(n));
      if (first === undefined) {
        throw new CheckpointError(
          input,
          `the quantization metadata lists "${p}", but there is no ${
            format.storedNames(p)[0]
          }`,
        );
      }
      if (!ckpt.quantizedShape(p)) {
        await ckpt.dequantizedWeight(p); // throws, naming what is wrong
        throw new CheckpointError(input, `cannot tell the shape of "${p}"`);
      }
      anchors.set(p, first);
    }
    const groups: InputGroup[] = ckpt.shardNames.map((shard) => ({
      name: shard,
      units: [],
      metadata: baseMetadata(ckpt.file(shard)),
    }));
    const groupOf = new Map(groups.map((g) => [g.name, g]));
    const tally: Tally = { units: 0, layers: q.modules.length };
    let inputBytes = 0;
    for (const e of ckpt.entries) {
      inputBytes += e.info.byteLength;
      const path = stored.get(e.name);
      const g = groupOf.get(e.shard)!;
      if (path === undefined) {
        g.units.push(copyUnit(ckpt, e));
        tally.units++;
        continue;
      }
      if (e.name !== anchors.get(path)) continue;
      const [out, inF] = ckpt.quantizedShape(path)!;
      const t = transposed.has(path);
      g.units.push({
        kind: "produce",
        label: e.name,
        specs: [{
          name: `${path}.weight`,
          dtype,
          shape: t ? [inF, out] : [out, inF],
        }],
        produce: async () => {
          const w = await ckpt.dequantizedWeight(path);
          if (!t) return [toDtypeBytes(w, dtype)];
          const back = new Float32Array(w.length);
          for (let r = 0; r < out; r++) {
            for (let c = 0; c < inF; c++) back[c * out + r] = w[r * inF + c]!;
          }
          return [toDtypeBytes(back, dtype)];
        },
      });
      tally.units++;
    }
    const hooks = progressHooks(
      ckpt,
      groups,
      tally,
      options,
      (u) => u.kind === "produce" ? "dequantized" : "kept",
    );
    const report = await writeOutput({
      dest: output,
      force: options.force ?? false,
      kind: ckpt.kind,
      inputDir: ckpt.kind === "folder" ? ckpt.dir : null,
      inputs: [ckpt.kind === "folder" ? ckpt.dir : ckpt.path],
      consumed: new Set([
        ...consumedFiles(ckpt),
        ...Object.keys(format.extraFiles(q)),
      ]),
      indexed: ckpt.indexed,
      groups,
      ...(options.maxShardSize !== undefined
        ? { maxShardSize: options.maxShardSize }
        : {}),
      config: outputConfig(ckpt, null),
      extraFiles: {},
      format,
      hooks,
    });
    return {
      input,
      output,
      dtype,
      dequantized: [...q.modules],
      shards: report.shards,
      inputBytes,
      outputBytes: report.tensorBytes,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    ckpt.close();
  }
}

/** Options of {@linkcode saveModule}. */
export interface SaveModuleOptions {
  /** The method to record; its layers must all store one scheme (W4A16 layers for `w4a16`, int8 layers otherwise). */
  method: CheckpointMethod;
  /** Linear layers left in float on purpose (recorded). */
  excluded?: readonly string[];
  /** The checkpoint the module was loaded from: its shard plan, config, other files and byte-identical pass-through. */
  source?: Checkpoint | null;
  /** Replace an existing output. */
  force?: boolean;
  /** Split the output into shards of at most this many bytes. */
  maxShardSize?: number;
  /** The output format (default TinyQ's own). */
  format?: CheckpointFormat;
}

/** A quantized layer {@linkcode saveModule} writes. */
type StoredLayer = Int8LinearLayer | W4A16LinearLayer;

/** How a quantized layer's weights are stored. */
function layerScheme(layer: StoredLayer): WeightScheme {
  return layer instanceof W4A16LinearLayer
    ? { bits: 4, groupSize: layer.groupSize, symmetric: !layer.asymmetric }
    : { bits: 8, groupSize: null, symmetric: layer.zeroPoints === null };
}

function layerBytes(
  format: CheckpointFormat,
  path: string,
  layer: StoredLayer,
  sourceDtype: DType,
  scheme: WeightScheme,
): { specs: TensorSpec[]; produce: () => Promise<Uint8Array[]> } {
  const specs = format.linearTensors(
    path,
    layer.outFeatures,
    layer.inFeatures,
    sourceDtype,
    scheme,
  );
  const at = {
    path,
    outFeatures: layer.outFeatures,
    inFeatures: layer.inFeatures,
    rowStart: 0,
    rows: layer.outFeatures,
    sourceDtype,
  };
  const encode = (): Uint8Array[] =>
    layer instanceof W4A16LinearLayer
      ? format.encodeInt4Linear!({
        ...at,
        packed: layer.int4Weights.data as Uint8Array,
        scales: layer.scales.data as Float32Array,
        zeroPoints: (layer.zeroPoints?.data as Uint8Array | undefined) ?? null,
        groupSize: layer.groupSize,
      })
      : format.encodeLinear({
        ...at,
        q: layer.int8Weights.data as Int8Array,
        scales: layer.scales.data as Float32Array,
        zeroPoints: (layer.zeroPoints?.data as Int8Array | undefined) ?? null,
        scheme,
      });
  return {
    specs,
    produce: () => Promise.resolve(encode().map((b) => b.slice())),
  };
}

/**
 * The one scheme all `layers` share (and that `method` stores), or an
 * error naming the first layer that differs.
 */
function sharedScheme(
  method: CheckpointMethod,
  layers: ReadonlyMap<string, StoredLayer>,
): WeightScheme {
  let scheme: WeightScheme | null = null;
  let first = "";
  for (const [path, layer] of layers) {
    const s = layerScheme(layer);
    if ((s.bits === 4) !== (method === "w4a16")) {
      throw new CheckpointError(
        path,
        `is a ${layer.constructor.name}, which method ${method} does not store`,
      );
    }
    if (!scheme) [scheme, first] = [s, path];
    else if (
      s.groupSize !== scheme.groupSize || s.symmetric !== scheme.symmetric
    ) {
      throw new CheckpointError(
        path,
        `is quantized ${describeScheme(s)}, but ${first} is ${
          describeScheme(scheme)
        }; a checkpoint records one scheme`,
      );
    }
  }
  return { ...(scheme ?? weightSchemeOf(method)), method };
}

function describeScheme(s: WeightScheme): string {
  return `${s.bits === 4 ? `4-bit group ${s.groupSize}` : "int8 per-channel"} ${
    s.symmetric ? "symmetric" : "asymmetric"
  }`;
}

function tensorUnit(
  name: string,
  t: Tensor | LazyTensor,
  source: Checkpoint | null,
): Unit {
  if (t instanceof CheckpointTensor && t.checkpoint === source) {
    // The stored bytes, in their stored orientation.
    return copyUnit(source, t.entry);
  }
  return {
    kind: "produce",
    label: name,
    specs: [{ name, dtype: t.dtype, shape: t.shape }],
    produce: async () => [(t instanceof Tensor ? t : await t.load()).bytes()],
  };
}

/**
 * Saves a model quantized in memory (for example by `Quantizer`) as a
 * checkpoint. With the `source` checkpoint it was loaded from, the output is
 * byte for byte what {@linkcode quantizeCheckpoint} writes for the same
 * method and exclusions: same shard plan, tensors, metadata and files.
 * Without one it is a folder with one `model.safetensors` (or that file, when
 * `output` ends in `.safetensors`).
 *
 * @example
 * ```ts
 * import { Linear, Module, Quantizer, saveModule, Checkpoint } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const model = new Module();
 * model.setChild("fc", new Linear(4, 2));
 * await new Quantizer(model).quantize("w8a32");
 * const dir = await Deno.makeTempDir();
 * await saveModule(model, `${dir}/q`, { method: "w8a32" });
 * using q = await Checkpoint.open(`${dir}/q`);
 * assert.deepEqual(q.quantization?.modules, ["fc"]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function saveModule(
  module: Module,
  output: string,
  options: SaveModuleOptions,
): Promise<QuantizeResult> {
  const t0 = performance.now();
  const format = options.format ?? tinyqFormat;
  const source = options.source ?? null;
  const srcLinears = new Map((source?.linears() ?? []).map((l) => [l.path, l]));
  const quantized: string[] = [];
  const units = new Map<string, Unit[]>();
  const emitted = new Set<string>();
  const layers = new Map<string, StoredLayer>();
  for (const [path, m] of module.namedModules()) {
    if (m instanceof Int8Base || m instanceof W4A16LinearLayer) {
      layers.set(path, m);
    }
  }
  const scheme = sharedScheme(options.method, layers);
  checkFormatScheme(format, options.method, scheme);
  let qAfter = 0;
  const shardList = source ? [...source.shardNames] : ["model.safetensors"];
  for (const s of shardList) units.set(s, []);
  let kept = 0;
  let inputBytes = 0;
  let parameters = 0;
  const add = (shard: string, u: Unit) => units.get(shard)!.push(u);
  const qunit = (
    shard: string,
    path: string,
    layer: StoredLayer,
    dtype: DType,
  ) => {
    const { specs, produce } = layerBytes(format, path, layer, dtype, scheme);
    qAfter += specs.reduce((s, t) => s + specBytes(t), 0);
    add(shard, { kind: "produce", label: `${path}.weight`, specs, produce });
    quantized.push(path);
    emitted.add(`${path}.weight`);
  };
  for (const e of source?.entries ?? []) {
    inputBytes += e.info.byteLength;
    parameters += numel(e.info.shape);
    const dot = e.name.lastIndexOf(".");
    const path = dot < 0 ? "" : e.name.slice(0, dot);
    const local = e.name.slice(dot + 1);
    const layer = layers.get(path);
    if (layer && local === "weight") {
      qunit(e.shard, path, layer, srcLinears.get(path)?.dtype ?? e.info.dtype);
      continue;
    }
    if (layer && local === "bias") {
      if (layer.bias) add(e.shard, tensorUnit(e.name, layer.bias, source));
      emitted.add(e.name);
      kept++;
      continue;
    }
    const owner = module.getModule(path);
    const t = owner?.getTensor(local);
    emitted.add(e.name);
    if (!t) continue;
    add(e.shard, tensorUnit(e.name, t, source));
    kept++;
  }
  // Whatever the module holds beyond the source goes into the last shard.
  const last = shardList[shardList.length - 1]!;
  for (const [path, layer] of layers) {
    if (!emitted.has(`${path}.weight`)) {
      qunit(last, path, layer, layer.bias?.dtype ?? "f32");
      if (layer.bias) add(last, tensorUnit(`${path}.bias`, layer.bias, source));
      emitted.add(`${path}.bias`);
    }
  }
  for (const [name, t] of module.namedTensors()) {
    const dot = name.lastIndexOf(".");
    if (layers.has(dot < 0 ? "" : name.slice(0, dot)) || emitted.has(name)) {
      continue;
    }
    add(last, tensorUnit(name, t, source));
    emitted.add(name);
    if (!source) {
      kept++;
      inputBytes += numel(t.shape) * DTYPE_SIZE[t.dtype];
      parameters += numel(t.shape);
    }
  }
  // The order quantizeCheckpoint records them in: input order of their weights.
  const wanted = new Set(options.excluded ?? []);
  const excluded = (source?.entries ?? [])
    .filter((e) =>
      e.name.endsWith(".weight") &&
      wanted.delete(e.name.slice(0, -".weight".length))
    )
    .map((e) => e.name.slice(0, -".weight".length));
  excluded.push(...wanted);
  // Every Linear still in float is recorded (compressed-tensors' `ignore`
  // must name them all), whether or not the caller listed it.
  for (const [path, m] of module.namedModules()) {
    if (m instanceof Linear && !excluded.includes(path)) excluded.push(path);
  }
  for (const p of quantized) {
    const l = layers.get(p)!;
    const why = format.keepFloat?.({
      path: p,
      outFeatures: l.outFeatures,
      inFeatures: l.inFeatures,
      transposed: srcLinears.get(p)?.transposed ?? false,
    });
    if (why) {
      throw new CheckpointError(
        p,
        `--format ${format.name} cannot hold this layer quantized (${why}); leave it in float`,
      );
    }
  }
  const byPath = new Map(srcLinears);
  const dtypes = new Set(quantized.map((p) => byPath.get(p)?.dtype));
  const only = dtypes.size === 1 ? [...dtypes][0] : undefined;
  const summary: QuantizationSummary = {
    library: "tinyq",
    version: TINYQ_VERSION,
    ...schemeSummary(options.method, scheme),
    modules: quantized,
    excluded,
    transposed: quantized.filter((p) => byPath.get(p)?.transposed),
    ...(only ? { weightDtype: only } : {}),
  };
  const fileMeta = format.fileMetadata(summary);
  const groups: InputGroup[] = shardList.map((shard) => {
    const metadata = source
      ? baseMetadata(source.file(shard))
      : new Map([["format", "pt"]]);
    for (const [k, v] of Object.entries(fileMeta)) metadata.set(k, v);
    return { name: shard, units: units.get(shard)!, metadata };
  });
  const kind = source
    ? source.kind
    : output.endsWith(".safetensors")
    ? "file"
    : "folder";
  const report = await writeOutput({
    dest: output,
    force: options.force ?? false,
    kind,
    inputDir: source?.kind === "folder" ? source.dir : null,
    inputs: source ? [source.kind === "folder" ? source.dir : source.path] : [],
    consumed: source ? consumedFiles(source) : new Set(),
    indexed: source?.indexed ?? false,
    groups,
    ...(options.maxShardSize !== undefined
      ? { maxShardSize: options.maxShardSize }
      : {}),
    config: source
      ? outputConfig(
        source,
        format.configBlock(summary),
        (c) => format.updateConfig?.(c, summary) ?? c,
      )
      : null,
    extraFiles: kind === "folder" ? format.extraFiles(summary) : {},
    format,
  });
  let qBefore = 0;
  let qParams = 0;
  for (const p of quantized) {
    const l = layers.get(p)!;
    qParams += l.outFeatures * l.inFeatures;
    qBefore += (source?.entry(`${p}.weight`)?.info.byteLength) ??
      l.outFeatures * l.inFeatures * 4;
  }
  return {
    input: source?.path ?? "(in memory)",
    output,
    method: options.method,
    scheme,
    format: format.name,
    family: source?.family ?? null,
    familySource: source?.familySource ?? "model in memory",
    quantized,
    excluded,
    keptFloat: [],
    warnings: format.warnings?.(
      summary,
      quantized.map((p) => ({
        path: p,
        outFeatures: layers.get(p)!.outFeatures,
        inFeatures: layers.get(p)!.inFeatures,
      })),
    ) ?? [],
    kept,
    shards: report.shards,
    copied: report.copied,
    skipped: report.skipped,
    inputBytes,
    outputBytes: report.tensorBytes,
    parameters,
    quantizedParameters: qParams,
    quantizedBytesBefore: qBefore,
    quantizedBytesAfter: qAfter,
    seconds: (performance.now() - t0) / 1000,
  };
}
