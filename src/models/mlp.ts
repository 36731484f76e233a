/**
 * {@linkcode MLP}: the feed-forward block, gated (`down(act(gate(x)) · up(x))`,
 * Llama & co, with Phi-3's fused `gate_up_proj`) or plain
 * (`fc2(act(fc1(x)))`, GPT-2, OPT), with SiLU, exact GELU, GELU-tanh or ReLU.
 *
 * @module
 */

import { Module } from "../module.ts";
import { Tensor } from "../tensor.ts";
import type { Activation } from "./config.ts";
import { isMatmulLayer, type MatmulLayer, runLinear } from "./linear_call.ts";

/** Child names of the MLP's layers. */
export type MLPProjections =
  | { gate: string; up: string; down: string }
  | { gateUp: string; down: string }
  | { fc1: string; fc2: string };

/**
 * The error function, to about 1e-15 (exact GELU needs it; JavaScript has
 * no `Math.erf`): the Maclaurin series below 4, ±1 beyond (erfc(4) < 2e-8).
 *
 * @example
 * ```ts
 * import { erf } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.ok(Math.abs(erf(1) - 0.8427007929497149) < 1e-14);
 * ```
 */
export function erf(x: number): number {
  const a = Math.abs(x);
  if (a >= 4) return Math.sign(x);
  let term = a, sum = a;
  for (let n = 1; Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
    term *= -(a * a) / n;
    sum += term / (2 * n + 1);
  }
  return Math.sign(x) * Math.min(1, (2 / Math.sqrt(Math.PI)) * sum);
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/**
 * Applies an activation to every element of `x` in place.
 *
 * @example
 * ```ts
 * import { applyActivation } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const x = new Float32Array([-1, 2]);
 * applyActivation("relu", x);
 * assert.deepEqual([...x], [0, 2]);
 * ```
 */
export function applyActivation(act: Activation, x: Float32Array): void {
  switch (act) {
    case "silu":
      for (let i = 0; i < x.length; i++) x[i] = x[i]! / (1 + Math.exp(-x[i]!));
      return;
    case "gelu":
      for (let i = 0; i < x.length; i++) {
        x[i] = 0.5 * x[i]! * (1 + erf(x[i]! / Math.SQRT2));
      }
      return;
    case "gelu_tanh":
      for (let i = 0; i < x.length; i++) {
        const v = x[i]!;
        x[i] = 0.5 * v *
          (1 + Math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)));
      }
      return;
    case "relu":
      for (let i = 0; i < x.length; i++) if (x[i]! < 0) x[i] = 0;
      return;
  }
}

/**
 * The feed-forward block. Its layers are looked up at every call in `host`
 * (the MLP itself, or the decoder layer where a family keeps `fc1`/`fc2`
 * there, as OPT does), so the `Quantizer` can swap them.
 *
 * @example A gated MLP on two Linear layers
 * ```ts
 * import { Linear, MLP, Tensor } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const mlp = new MLP("relu", { gate: "gate_proj", up: "up_proj", down: "down_proj" });
 * for (const [name, w] of [["gate_proj", [1, -1]], ["up_proj", [2, 2]], ["down_proj", [1, 1]]] as const) {
 *   mlp.setChild(name, Linear.fromTensors(new Tensor(new Float32Array(w), name === "down_proj" ? [1, 2] : [2, 1])));
 * }
 * const y = await mlp.forward(new Tensor(new Float32Array([3]), [1, 1]), "bf16");
 * assert.deepEqual([...y.data], [18]); // relu(3)·6 + relu(−3)·6
 * ```
 */
export class MLP extends Module {
  /** The nonlinearity. */
  readonly activation: Activation;
  /** Child names of the layers. */
  readonly projections: MLPProjections;
  /** Where the layers are children: the decoder layer (OPT), or null for the MLP itself. */
  host: Module | null;
  readonly #name: string;

  /** Makes an MLP with no layers yet (set them with `setChild` on the host). */
  constructor(
    activation: Activation,
    projections: MLPProjections,
    options: { name?: string; host?: Module } = {},
  ) {
    super();
    this.activation = activation;
    this.projections = projections;
    this.host = options.host ?? null;
    this.#name = options.name ?? "MLP";
  }

  /** The layer called `name` (in the host). */
  layer(name: string): MatmulLayer {
    const m = (this.host ?? this).getChild(name);
    if (!isMatmulLayer(m)) throw new Error(`MLP has no layer "${name}"`);
    return m;
  }

  /** Runs the block on x [n, hidden] f32; returns [n, hidden] f32. */
  async forward(x: Tensor, act16: "f16" | "bf16"): Promise<Tensor> {
    const p = this.projections;
    const n = x.shape[0]!;
    if ("fc1" in p) {
      const h = await runLinear(this.layer(p.fc1), x, act16);
      applyActivation(this.activation, h.data as Float32Array);
      return await runLinear(this.layer(p.fc2), h, act16);
    }
    let gate: Float32Array, up: Float32Array, width: number;
    let uOff = 0, stride: number;
    if ("gateUp" in p) {
      const gu = (await runLinear(this.layer(p.gateUp), x, act16))
        .data as Float32Array;
      width = gu.length / n / 2;
      gate = up = gu;
      stride = 2 * width;
      uOff = width;
    } else {
      gate = (await runLinear(this.layer(p.gate), x, act16))
        .data as Float32Array;
      up = (await runLinear(this.layer(p.up), x, act16)).data as Float32Array;
      width = stride = gate.length / n;
    }
    const h = new Float32Array(n * width);
    for (let r = 0; r < n; r++) {
      h.set(
        gate.subarray(r * stride, r * stride + width),
        r * width,
      );
    }
    applyActivation(this.activation, h);
    for (let r = 0; r < n; r++) {
      for (let j = 0; j < width; j++) {
        h[r * width + j] = h[r * width + j]! * up[r * stride + uOff + j]!;
      }
    }
    return await runLinear(
      this.layer(p.down),
      new Tensor(h, [n, width]),
      act16,
    );
  }

  /** The class name given at construction. */
  override typeName(): string {
    return this.#name;
  }

  /** `act_fn=…`. */
  override extraRepr(): string {
    return this.host ? "" : `act_fn=${this.activation}`;
  }
}
