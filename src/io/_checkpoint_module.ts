/**
 * A checkpoint as a {@linkcode Module} tree: a {@linkcode Linear} with lazy,
 * file-backed tensors for each Linear layer, the recorded method's layer for
 * each quantized one, plain modules holding lazy tensors for the rest.
 * {@linkcode Checkpoint.toModule} and {@linkcode Checkpoint.quantizedLayer}
 * are the way in.
 *
 * @module
 */

import { memberName } from "../member_name.ts";
import { Linear } from "../linear.ts";
import { Module } from "../module.ts";
import { Tensor } from "../tensor.ts";
import type { QuantizedLinear } from "../quant/replace.ts";
import { W8A16LinearLayer } from "../quant/w8a16_linear_layer.ts";
import type { Int8LinearLayer } from "../quant/int8_linear_layer.ts";
import { isQuantMethod, METHODS } from "../quant/schemes.ts";
import { INT8_PER_ROW } from "../quant/layouts.ts";
import { W4A16LinearLayer } from "../quant/w4a16_linear_layer.ts";
import type { Int4Weight, Int8WeightArrays } from "../backend/backend.ts";
import type { DecodedLinear, QuantizationSummary } from "./formats/format.ts";
import { CheckpointError } from "./checkpoint_error.ts";
import type { CheckpointEntry, ShardFiles } from "./checkpoint_entry.ts";
import { CheckpointTensor } from "./checkpoint_tensor.ts";
import type { LayerInfo } from "./_checkpoint_layers.ts";

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
  Int8WeightArrays | null
>;

/** What a quantized layer is read from (an open `Checkpoint` is one). */
export interface QuantizedLayerSource {
  /** The quantization the checkpoint records, or null. */
  readonly quantization: QuantizationSummary | null;
  /** The entry of tensor `name`, or undefined. */
  entry(name: string): CheckpointEntry | undefined;
  /** Reads tensor `name` as stored. */
  read(name: string): Promise<Tensor>;
  /** Reads an int8 quantized Linear through the checkpoint's format. */
  decodeLinear(path: string): Promise<DecodedLinear>;
  /** Reads a 4-bit quantized Linear through the checkpoint's format. */
  decodeInt4Linear(path: string): Promise<Int4Weight>;
}

/** What the tree is built from (an open `Checkpoint` is one). */
export interface ModuleSource extends ShardFiles {
  /** The checkpoint's path (for errors). */
  readonly path: string;
  /** Every tensor, in data order. */
  readonly entries: readonly CheckpointEntry[];
  /** The entry of tensor `name`, or undefined. */
  entry(name: string): CheckpointEntry | undefined;
  /** Every module that holds tensors, classified. */
  layers(): readonly LayerInfo[];
  /** The quantized Linear at `path` as a layer. */
  quantizedLayer(
    path: string,
    int8Arrays?: Int8Arrays,
  ): Promise<QuantizedLinear>;
}

/**
 * Builds the Module tree of `src`; `split` gives the module a tensor belongs
 * to and its name there; `options.int8Arrays`, when given, supplies the
 * arrays int8 layers are built on.
 */
export async function buildModule(
  src: ModuleSource,
  split: (name: string) => [path: string, local: string],
  options: { int8Arrays?: Int8Arrays } = {},
): Promise<Module> {
  const root = new Module();
  const byPath = new Map(src.layers().map((l) => [l.path, l]));
  const nodeAt = (path: string, name: string): Module => {
    let m = root;
    if (path === "") return m;
    for (const part of path.split(".")) {
      if (part === "") {
        throw new CheckpointError(
          src.path,
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
  for (const e of src.entries) {
    const [path, local] = split(e.name);
    const layer = byPath.get(path)!;
    if ((layer.linear || layer.quantized) && path !== "") {
      if (done.has(path)) continue;
      done.add(path);
      const cut = path.lastIndexOf(".");
      const parent = nodeAt(cut < 0 ? "" : path.slice(0, cut), e.name);
      const childName = path.slice(cut + 1);
      if (childName === "") {
        throw new CheckpointError(
          src.path,
          "has an empty part in its dotted name; cannot build a module tree",
          e.name,
        );
      }
      const biasEntry = src.entry(memberName(path, "bias"));
      if (layer.linear) {
        const weight = new CheckpointTensor(
          src,
          src.entry(memberName(path, "weight"))!,
          layer.transposed,
        );
        const bias = biasEntry ? new CheckpointTensor(src, biasEntry) : null;
        parent.setChild(childName, Linear.fromTensors(weight, bias));
      } else {
        parent.setChild(
          childName,
          await src.quantizedLayer(path, options.int8Arrays),
        );
      }
      continue;
    }
    nodeAt(path, e.name).setTensor(local, new CheckpointTensor(src, e));
  }
  return root;
}

/**
 * The quantized Linear at `path` as a layer of the recorded method, with its
 * bias (see {@linkcode Checkpoint.quantizedLayer}).
 */
export async function loadQuantizedLayer(
  src: QuantizedLayerSource,
  path: string,
  int8Arrays?: Int8Arrays,
): Promise<QuantizedLinear> {
  const method = src.quantization?.method;
  const biasEntry = src.entry(memberName(path, "bias"));
  const bias = biasEntry ? await src.read(biasEntry.name) : null;
  if (src.quantization?.bits === 4) {
    const w = await src.decodeInt4Linear(path);
    const groups = [w.n, w.k / w.groupSize];
    return W4A16LinearLayer.fromTensors({
      int4Weights: new Tensor(w.packed, [w.n, w.k / 2]),
      scales: new Tensor(w.scales, groups),
      zeroPoints: w.zeroPoints ? new Tensor(w.zeroPoints, groups) : null,
      bias,
    });
  }
  const d = await src.decodeLinear(path);
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
  ql.int8Weights = new Tensor(into?.q ?? d.q, [
    d.outFeatures,
    d.inFeatures,
  ]);
  ql.scales = new Tensor(into?.scales ?? d.scales, [d.outFeatures]);
  ql.zeroPoints = d.zeroPoints
    ? new Tensor(into?.zeroPoints ?? d.zeroPoints, [d.outFeatures], "i8")
    : null;
  ql.bias = bias;
  return ql;
}
