/**
 * How the runtime calls a matmul layer: which activation dtype each layer
 * class takes, and the f32 ⇄ 16-bit conversions around it. Every engine
 * uses this one policy, so CPU and WebGPU round the same values.
 *
 * @module
 */

import type { FloatDType } from "../dtype.ts";
import type { Module } from "../module.ts";
import type { Tensor } from "../tensor.ts";

/** A `Linear` or a quantized layer: what sits at every matmul of the tree. */
export interface MatmulLayer extends Module {
  /** Input features. */
  readonly inFeatures: number;
  /** Output features. */
  readonly outFeatures: number;
  /** `x @ Wᵀ + b` for x [..., in]. */
  forward(x: Tensor): Promise<Tensor>;
}

/** Whether `m` is a Linear or a quantized layer. */
export function isMatmulLayer(m: Module | undefined): m is MatmulLayer {
  return m !== undefined && typeof (m as Partial<MatmulLayer>).forward ===
      "function" &&
    typeof (m as Partial<MatmulLayer>).inFeatures === "number";
}

/**
 * The activation dtype `layer` runs in, from the activations its class
 * accepts (the scheme table's `activations`): f32 where the class takes it
 * (Linear, W8A32, W8A8, W4A16 — then nothing is rounded between layers),
 * else `act16` (W8A16: the checkpoint's bf16 or f16).
 *
 * @example
 * ```ts
 * import { activationDtype, Linear, W4A16LinearLayer, W8A16LinearLayer } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.equal(activationDtype(new Linear(2, 2), "bf16"), "f32");
 * assert.equal(activationDtype(new W8A16LinearLayer(2, 2), "bf16"), "bf16");
 * assert.equal(activationDtype(new W4A16LinearLayer(32, 2, { groupSize: 32 }), "bf16"), "f32");
 * ```
 */
export function activationDtype(
  layer: Module,
  act16: "f16" | "bf16",
): FloatDType {
  const accepted =
    (layer.constructor as { activations?: readonly FloatDType[] })
      .activations;
  if (!accepted || accepted.includes("f32")) return "f32";
  return accepted.includes(act16) ? act16 : accepted[0]!;
}

/** Runs `layer` on f32 `x`, converting to and from its activation dtype; the result is f32. */
export async function runLinear(
  layer: MatmulLayer,
  x: Tensor,
  act16: "f16" | "bf16",
): Promise<Tensor> {
  const dtype = activationDtype(layer, act16);
  const y = await layer.forward(x.to(dtype));
  return y.to("f32");
}
