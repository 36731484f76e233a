/**
 * Model checkpoints on disk: a Hugging Face model folder (`model.safetensors`,
 * or shards plus `model.safetensors.index.json`) or a single `.safetensors`
 * file. {@linkcode Checkpoint} opens one and reads its tensors; it answers
 * which tensors are `Linear` weights (`_checkpoint_layers.ts`), what
 * quantizing would do to each (`_checkpoint_plan.ts`) and builds a
 * {@linkcode Module} tree of lazy tensors (`_checkpoint_module.ts`). Writing
 * a checkpoint is `quantizeCheckpoint`, `dequantizeCheckpoint` and
 * `saveModule` (each in its own module).
 *
 * Which tensors are Linear: a table of families read from `config.json`
 * (`model_type`, else `architectures`): llama, mistral, qwen2, gemma/gemma2,
 * phi3, gpt2 (Conv1D weights stored [in, out], transposed on the way in),
 * opt, codegen, bert.
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

import { memberName } from "../member_name.ts";
import { join } from "node:path";
import type { Module } from "../module.ts";
import type { Tensor } from "../tensor.ts";
import type { QuantizedLinear } from "../quant/replace.ts";
import { dequantizeInt4 } from "../quant/int4.ts";
import type { Int4Weight } from "../backend/backend.ts";
import type { TensorFile } from "./tensor_file.ts";
import type {
  CheckpointFormat,
  DecodedLinear,
  QuantizationSummary,
} from "./formats/format.ts";
import { FORMATS } from "./formats/registry.ts";
import { CheckpointError } from "./checkpoint_error.ts";
import { chooseFamily, type FamilyChoice } from "./_families.ts";
import { type Layout, locate } from "./_folder.ts";
import { openShards } from "./_shards.ts";
import {
  type DetectedQuantization,
  detectQuantization,
} from "./_detect_format.ts";
import type { CheckpointEntry } from "./checkpoint_entry.ts";
import { classifyLayers, type LayerInfo } from "./_checkpoint_layers.ts";
import { planTensors, type TensorPlan } from "./_checkpoint_plan.ts";
import {
  buildModule,
  type Int8Arrays,
  loadQuantizedLayer,
} from "./_checkpoint_module.ts";

export { CheckpointError } from "./checkpoint_error.ts";
// What the reader's parts define, where callers have always found it.
export { formatLayer, type LayerInfo } from "./_checkpoint_layers.ts";
export type { TensorPlan } from "./_checkpoint_plan.ts";
export type { Int8Arrays } from "./_checkpoint_module.ts";
// The types this API speaks in, so the module documents on its own.
export type { DType, FloatDType, TypedArray } from "../dtype.ts";
export type { LazyTensor, Tensor, TensorSource } from "../tensor.ts";
export type { Module } from "../module.ts";
export type { SafetensorsFile, TensorInfo } from "./safetensors.ts";
export type * from "./formats/format.ts";
export type { CheckpointEntry, ShardFiles } from "./checkpoint_entry.ts";

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

  #files: Map<string, TensorFile>;
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
    files: Map<string, TensorFile>,
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
    const files = new Map<string, TensorFile>();
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
  file(shard: string): TensorFile {
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
    return this.#layers ??= classifyLayers({
      entries: this.#entries,
      split: (n) => this.#split(n),
      entry: (n) => this.#byName.get(n),
      shardPath: (s) => this.shardPath(s),
      choice: this.#choice,
      quantization: this.quantization,
      formatName: this.format?.name,
      shapes: this.#shapes,
    });
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
    return planTensors(
      this.#entries,
      (n) => this.#split(n),
      this.layers(),
      this.quantization,
      exclude,
    );
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
    return await buildModule(this, (n) => this.#split(n), options);
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
    return await loadQuantizedLayer(this, path, int8Arrays);
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
