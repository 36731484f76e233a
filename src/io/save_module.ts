/**
 * {@linkcode saveModule}: a model quantized in memory written as a
 * checkpoint, byte for byte what `quantizeCheckpoint` writes from the same
 * source.
 *
 * @module
 */

import { memberName } from "../member_name.ts";
import { type DType, DTYPE_SIZE } from "../dtype.ts";
import { Linear } from "../linear.ts";
import type { Module } from "../module.ts";
import { type LazyTensor, numel, Tensor } from "../tensor.ts";
import { QuantizedLinearLayer } from "../quant/quantized_linear_layer.ts";
import {
  describeScheme,
  METHODS,
  type QuantMethod,
  schemeOfLayer,
  type WeightScheme,
  weightSchemeOf,
} from "../quant/schemes.ts";
import type { CheckpointFormat, TensorSpec } from "./formats/format.ts";
import { tinyqFormat } from "./formats/tinyq.ts";
import type { Checkpoint } from "./checkpoint.ts";
import { CheckpointTensor } from "./checkpoint_tensor.ts";
import type { QuantizeResult } from "./quantize_checkpoint.ts";
import { CheckpointError } from "./checkpoint_error.ts";
import type { Unit } from "./_shard_writer.ts";
import { specBytes } from "./formats/format.ts";
import { encodeStoredRows } from "./_quantized_rows.ts";
import { type InputGroup, writeOutput } from "./_output_dir.ts";
import {
  checkFormatScheme,
  quantizationSummary,
} from "./quantization_summary.ts";
import {
  copyUnit,
  jobInput,
  outputConfig,
  shardMetadata,
  weightOwner,
} from "./_carry_over.ts";

/** Options of {@linkcode saveModule}. */
export interface SaveModuleOptions {
  /** The method to record; its layers must all store one scheme (W4A16 layers for `w4a16`, int8 layers otherwise). */
  method: QuantMethod;
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
type StoredLayer = QuantizedLinearLayer;

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
  return {
    specs,
    produce: () =>
      Promise.resolve(
        encodeStoredRows(format, at, scheme, layer.storedRows()).map((b) =>
          b.slice()
        ),
      ),
  };
}

/**
 * The one scheme all `layers` share (and that `method` stores), or an
 * error naming the first layer that differs.
 */
function sharedScheme(
  method: QuantMethod,
  layers: ReadonlyMap<string, StoredLayer>,
): WeightScheme {
  let scheme: WeightScheme | null = null;
  let first = "";
  for (const [path, layer] of layers) {
    const s = schemeOfLayer(layer);
    if (s.bits !== METHODS[method].layout.bits) {
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
    if (m instanceof QuantizedLinearLayer) {
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
    add(shard, {
      kind: "produce",
      label: memberName(path, "weight"),
      specs,
      produce,
    });
    quantized.push(path);
    emitted.add(memberName(path, "weight"));
  };
  for (const e of source?.entries ?? []) {
    inputBytes += e.info.byteLength;
    parameters += numel(e.info.shape);
    const [path, local] = splitName(e.name);
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
    if (!emitted.has(memberName(path, "weight"))) {
      qunit(last, path, layer, layer.bias?.dtype ?? "f32");
      if (layer.bias) {
        add(last, tensorUnit(memberName(path, "bias"), layer.bias, source));
      }
      emitted.add(memberName(path, "bias"));
    }
  }
  for (const [name, t] of module.namedTensors()) {
    if (layers.has(splitName(name)[0]) || emitted.has(name)) {
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
  const excluded: string[] = [];
  for (const e of source?.entries ?? []) {
    const path = weightOwner(e.name);
    if (path !== null && wanted.delete(path)) excluded.push(path);
  }
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
  const summary = quantizationSummary(
    options.method,
    scheme,
    srcLinears,
    quantized,
    excluded,
  );
  const fileMeta = format.fileMetadata(summary);
  const groups: InputGroup[] = shardList.map((shard) => ({
    name: shard,
    units: units.get(shard)!,
    metadata: shardMetadata(source?.file(shard) ?? null, fileMeta),
  }));
  const input = source ? jobInput(source) : {
    kind: output.endsWith(".safetensors") ? "file" as const : "folder" as const,
    inputDir: null,
    inputs: [],
    consumed: new Set<string>(),
    indexed: false,
  };
  const report = await writeOutput({
    dest: output,
    force: options.force ?? false,
    ...input,
    groups,
    maxShardSize: options.maxShardSize,
    config: source
      ? outputConfig(
        source,
        format.configBlock(summary),
        (c) => format.updateConfig?.(c, summary) ?? c,
      )
      : null,
    extraFiles: input.kind === "folder" ? format.extraFiles(summary) : {},
    format,
  });
  let qBefore = 0;
  let qParams = 0;
  for (const p of quantized) {
    const l = layers.get(p)!;
    qParams += l.outFeatures * l.inFeatures;
    qBefore += (source?.entry(memberName(p, "weight"))?.info.byteLength) ??
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

/** A tensor name's module path (`""` without a dot) and its local name. */
function splitName(name: string): [path: string, local: string] {
  const dot = name.lastIndexOf(".");
  return [dot < 0 ? "" : name.slice(0, dot), name.slice(dot + 1)];
}
