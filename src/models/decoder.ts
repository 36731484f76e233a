/**
 * {@linkcode DecoderLayer}: one transformer block — norm, attention,
 * residual, norm, MLP, residual — in the pre-norm order (Llama, GPT-2, OPT),
 * Gemma 2's sandwich order (extra norms on the sub-block outputs), or OPT-350m's
 * post-norm order.
 *
 * @module
 */

import { Module } from "../module.ts";
import { Tensor } from "../tensor.ts";
import type { Attention, AttentionContext } from "./attention.ts";
import type { MLP } from "./mlp.ts";
import type { Norm } from "./norms.ts";

/** The parts of a block (each also a child of the block, or of one of its children, under its HF name). */
export interface DecoderLayerParts {
  /** Norm before attention (after it in post-norm blocks). */
  inputNorm: Norm;
  /** Self-attention. */
  attention: Attention;
  /** Norm before the MLP (after it in post-norm blocks). */
  mlpNorm: Norm;
  /** Feed-forward block. */
  mlp: MLP;
  /** Norm on the attention output before the residual add (Gemma 2), or null. */
  postAttentionNorm: Norm | null;
  /** Norm on the MLP output before the residual add (Gemma 2), or null. */
  postMlpNorm: Norm | null;
  /** Pre-norm (true) or post-norm (false). */
  preNorm: boolean;
  /** `x + attn(norm(x)) + mlp(norm(x))` with the one input norm (GPT-J/CodeGen). */
  parallel?: boolean;
}

/**
 * A decoder block; its children carry the checkpoint's names.
 *
 * @example
 * ```ts
 * import { DecoderLayer, loadCausalLM } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const lm = await loadCausalLM("models/tinystories-656k");
 * const block = lm.model.getModule("model.layers.1") as DecoderLayer;
 * assert.ok(block.parts.preNorm && block.parts.postMlpNorm === null);
 * lm.dispose();
 * ```
 */
export class DecoderLayer extends Module {
  /** The block's parts. */
  readonly parts: Readonly<DecoderLayerParts>;
  readonly #name: string;

  /** Wraps the parts (the caller sets them as children under their names). */
  constructor(parts: DecoderLayerParts, name = "DecoderLayer") {
    super();
    this.parts = parts;
    this.#name = name;
  }

  /** Runs the block on x [n, hidden] f32 at positions [ctx.pos, ctx.pos + n); returns a new [n, hidden]. */
  async forward(x: Tensor, ctx: AttentionContext): Promise<Tensor> {
    const p = this.parts;
    const n = x.shape[0]!;
    const res = Float32Array.from(x.data as Float32Array);
    if (p.parallel) {
      const h = new Tensor(Float32Array.from(res), x.shape);
      await p.inputNorm.apply(h.data as Float32Array, n);
      const a = (await p.attention.forward(h, ctx)).data as Float32Array;
      const m = (await p.mlp.forward(h, ctx.act16)).data as Float32Array;
      for (let i = 0; i < res.length; i++) res[i] = a[i]! + m[i]! + res[i]!;
      return new Tensor(res, x.shape);
    }
    const sub = async (
      norm: Norm,
      post: Norm | null,
      run: (h: Tensor) => Promise<Tensor>,
    ) => {
      if (p.preNorm) {
        const h = Float32Array.from(res);
        await norm.apply(h, n);
        const y = (await run(new Tensor(h, x.shape))).data as Float32Array;
        if (post) await post.apply(y, n);
        for (let i = 0; i < res.length; i++) res[i] = res[i]! + y[i]!;
      } else {
        const y = (await run(new Tensor(Float32Array.from(res), x.shape)))
          .data as Float32Array;
        for (let i = 0; i < res.length; i++) res[i] = res[i]! + y[i]!;
        await norm.apply(res, n);
      }
    };
    await sub(
      p.inputNorm,
      p.postAttentionNorm,
      (h) => p.attention.forward(h, ctx),
    );
    await sub(p.mlpNorm, p.postMlpNorm, (h) => p.mlp.forward(h, ctx.act16));
    return new Tensor(res, x.shape);
  }

  /** The class name given at construction. */
  override typeName(): string {
    return this.#name;
  }
}
