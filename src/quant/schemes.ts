/**
 * The scheme table: every quantization method TinyQ knows, with the layer
 * class it quantizes into, the stored layout (and so the row quantizer that
 * layer's `quantize()` and the streaming checkpoint writer share), the
 * activation dtypes its forward takes and the words a checkpoint records for
 * them. A scheme is a method plus zero points or not plus, for 4-bit layouts,
 * the group size ({@linkcode WeightScheme}). `Quantizer`, the checkpoint
 * writer and loader, `saveModule`, `tinyq eval` and the CLI flags all read
 * {@linkcode METHODS}; adding a method is adding one entry.
 *
 * @module
 */

import type { FloatDType } from "../dtype.ts";
import type { QuantizedLinearClass } from "./replace.ts";
import { W8A32LinearLayer } from "./w8a32_linear_layer.ts";
import { W8A16LinearLayer } from "./w8a16_linear_layer.ts";
import { W8A8LinearLayer } from "./w8a8_linear_layer.ts";
import { W4A16LinearLayer } from "./w4a16_linear_layer.ts";
import { INT4_GROUPS, INT8_PER_ROW, type WeightLayout } from "./layouts.ts";
import { DEFAULT_INT4_GROUP_SIZE } from "./int4.ts";

/** The quantization methods, the keys of {@linkcode METHODS}. */
export type QuantMethod = "w8a32" | "w8a16" | "w8a8" | "w4a16";

/** One method of the table. */
export interface MethodEntry {
  /** The layer class `Quantizer` swaps Linear layers for and a checkpoint loads into. */
  readonly layer: QuantizedLinearClass & {
    readonly activations: readonly FloatDType[];
  };
  /** How its weights are stored, with the row quantizer that fills them. */
  readonly layout: WeightLayout;
  /** What forward does with activations, as a checkpoint records it. */
  readonly activations: string;
  /** The same, as `tinyq eval` tables print it. */
  readonly activationsShort: string;
}

/**
 * The quantization methods, in TinyQ's order. W8A32, W8A16 and W8A8 store the
 * same int8 tensors (they differ in what forward does with the activations);
 * W4A16 stores group-wise 4-bit weights.
 *
 * @example
 * ```ts
 * import { METHODS, W4A16LinearLayer } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.equal(METHODS.w4a16.layer, W4A16LinearLayer);
 * assert.equal(METHODS.w4a16.layout.bits, 4);
 * assert.deepEqual(METHODS.w8a16.layer.activations, ["f16", "bf16"]);
 * ```
 */
export const METHODS: Readonly<Record<QuantMethod, MethodEntry>> = Object
  .freeze({
    w8a32: {
      layer: W8A32LinearLayer,
      layout: INT8_PER_ROW,
      activations: "f32",
      activationsShort: "f32",
    },
    w8a16: {
      layer: W8A16LinearLayer,
      layout: INT8_PER_ROW,
      activations: "f16/bf16",
      activationsShort: "bf16/f16",
    },
    w8a8: {
      layer: W8A8LinearLayer,
      layout: INT8_PER_ROW,
      activations: "int8 dynamic per-token",
      activationsShort: "int8 per token",
    },
    w4a16: {
      layer: W4A16LinearLayer,
      layout: INT4_GROUPS,
      activations: "f16/bf16",
      activationsShort: "bf16/f16",
    },
  });

/** The method used when none is named (`tinyq quantize` without `--method`). */
export const DEFAULT_METHOD: QuantMethod = "w8a16";

/** All methods in TinyQ's order. */
export const METHOD_NAMES: readonly QuantMethod[] = Object.freeze(
  Object.keys(METHODS) as QuantMethod[],
);

/** Whether `name` (already lower case) is a method. */
export function isQuantMethod(name: string): name is QuantMethod {
  return Object.hasOwn(METHODS, name);
}

/**
 * Returns the method named `name`, or throws an error listing the known ones.
 *
 * @example
 * ```ts
 * import { parseQuantMethod } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.equal(parseQuantMethod("W8A16"), "w8a16");
 * assert.throws(() => parseQuantMethod("w2a2"), /known methods: w8a32, w8a16, w8a8, w4a16/);
 * ```
 */
export function parseQuantMethod(name: string): QuantMethod {
  const m = name.trim().toLowerCase();
  if (isQuantMethod(m)) return m;
  throw new RangeError(
    `Unknown quantization method "${name}"; known methods: ${
      METHOD_NAMES.join(", ")
    }`,
  );
}

/** How the weights of a quantized Linear are stored. */
export interface WeightScheme {
  /** Bits per weight value: 8 (per-channel) or 4 (group-wise). */
  readonly bits: 4 | 8;
  /** Inputs per group (4-bit), or null for one scale per output row. */
  readonly groupSize: number | null;
  /** No zero points. */
  readonly symmetric: boolean;
  /**
   * The method the weights are for (`w8a16`, `w8a8`, …), for formats that
   * store the same int8 weights differently per method (compressed-tensors
   * keeps W8A8 `int-quantized`, W8A16 `pack-quantized`). Absent: W8A16.
   */
  readonly method?: string;
}

/** Int8, one scale per output row, no zero points: the default scheme. */
export const INT8_SYMMETRIC: WeightScheme = Object.freeze({
  bits: 8,
  groupSize: null,
  symmetric: true,
});

/**
 * The stored scheme of `method`: int8 per output row for the int8 methods,
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
  method: QuantMethod,
  options: { asymmetric?: boolean; groupSize?: number } = {},
): WeightScheme {
  const bits = METHODS[method].layout.bits;
  if (bits === 4) {
    return {
      bits,
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
  return { bits, groupSize: null, symmetric: !options.asymmetric, method };
}

/** The stored layout of a scheme. */
export function layoutOf(scheme: WeightScheme): WeightLayout {
  return scheme.bits === 4 ? INT4_GROUPS : INT8_PER_ROW;
}

/** What a quantized layer stores, for {@linkcode schemeOfLayer}. */
export interface StoredLayer {
  /** Inputs per group (4-bit layers only). */
  readonly groupSize?: number;
  /** Whether it has zero points. */
  readonly asymmetric: boolean;
  /** Its stored layout. */
  readonly layout: WeightLayout;
}

/** The scheme a quantized layer's tensors are stored in. */
export function schemeOfLayer(layer: StoredLayer): WeightScheme {
  return {
    bits: layer.layout.bits,
    groupSize: layer.layout.bits === 4 ? layer.groupSize! : null,
    symmetric: !layer.asymmetric,
  };
}

/**
 * A scheme in words, for messages and summaries.
 *
 * @example
 * ```ts
 * import { describeScheme } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.equal(describeScheme({ bits: 8, groupSize: null, symmetric: true }), "int8 per-channel symmetric");
 * assert.equal(describeScheme({ bits: 4, groupSize: 64, symmetric: false }), "4-bit group 64 asymmetric");
 * ```
 */
export function describeScheme(s: WeightScheme): string {
  return `${s.bits === 4 ? `4-bit group ${s.groupSize}` : "int8 per-channel"} ${
    s.symmetric ? "symmetric" : "asymmetric"
  }`;
}
