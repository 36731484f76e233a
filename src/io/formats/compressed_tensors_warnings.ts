/**
 * What may stop vLLM from serving a compressed-tensors export: layer shapes
 * its Marlin kernel refuses, a quantized `lm_head`, and projections it fuses
 * that are quantized in part. Sources read: vLLM `compressed_tensors.py`,
 * `compressed_tensors_wNa16.py`, `utils.py`.
 *
 * @module
 */

import { moduleLabel } from "../../member_name.ts";
import type { FormatLayer, FormatWarning } from "./format.ts";
import { isLmHead } from "./export.ts";

/**
 * The quantized layers whose shape vLLM's Marlin kernel (which runs int8
 * weight-only `pack-quantized` layers) refuses: it needs out % 64 == 0 and
 * in % 128 == 0 (`verify_marlin_supports_shape`). With tensor parallelism
 * each shard must pass the same test, so a layer listed here fails at every
 * parallel size and one not listed may still fail when split.
 *
 * @example
 * ```ts
 * import { marlinShapeWarnings } from "./compressed_tensors_warnings.ts";
 * import assert from "node:assert/strict";
 * const w = marlinShapeWarnings([
 *   { path: "ok", outFeatures: 128, inFeatures: 256 },
 *   { path: "odd", outFeatures: 100, inFeatures: 256 },
 * ]);
 * assert.deepEqual(w.map((x) => x.path), ["odd"]);
 * ```
 */
export function marlinShapeWarnings(
  layers: Iterable<FormatLayer>,
): FormatWarning[] {
  const out: FormatWarning[] = [];
  for (const l of layers) {
    const bad = [
      ...(l.outFeatures % 64 !== 0
        ? [`out ${l.outFeatures} is not a multiple of 64`]
        : []),
      ...(l.inFeatures % 128 !== 0
        ? [`in ${l.inFeatures} is not a multiple of 128`]
        : []),
    ];
    if (bad.length > 0) {
      out.push({
        path: l.path,
        message: `${moduleLabel(l.path)} [${l.outFeatures}, ${l.inFeatures}]: ${
          bad.join(" and ")
        }; vLLM's Marlin int8 kernel may refuse this layer`,
      });
    }
  }
  return out;
}

/** Projections vLLM fuses into one layer (qkv_proj, gate_up_proj). */
export const FUSED_GROUPS: readonly (readonly string[])[] = [
  ["q_proj", "k_proj", "v_proj"],
  ["gate_proj", "up_proj"],
];

/**
 * Choices of which Linear layers to quantize that vLLM cannot load:
 * a quantized `lm_head` (vLLM builds it as an unquantized embedding and has no
 * parameter for `lm_head.weight_packed`), and projections vLLM fuses
 * (q/k/v_proj, gate/up_proj) quantized in part ("requires all to use the same
 * scheme").
 *
 * @example
 * ```ts
 * import { vllmModuleWarnings } from "./compressed_tensors_warnings.ts";
 * import assert from "node:assert/strict";
 * const w = vllmModuleWarnings(
 *   ["lm_head", "l.0.attn.q_proj", "l.0.attn.k_proj"],
 *   ["l.0.attn.v_proj"],
 * );
 * assert.deepEqual(w.map((x) => x.path), ["lm_head", "l.0.attn"]);
 * ```
 */
export function vllmModuleWarnings(
  modules: readonly string[],
  excluded: readonly string[],
): FormatWarning[] {
  const out: FormatWarning[] = [];
  for (const m of modules) {
    if (isLmHead(m)) {
      out.push({
        path: m,
        message:
          `${m} is quantized, but vLLM loads lm_head unquantized and will reject ${m}.weight_packed; exclude it`,
      });
    }
  }
  const quantized = new Set(modules);
  const float = new Set(excluded);
  const seen = new Set<string>();
  for (const group of FUSED_GROUPS) {
    for (const p of [...modules, ...excluded]) {
      const dot = p.lastIndexOf(".");
      const leaf = p.slice(dot + 1);
      if (!group.includes(leaf)) continue;
      const parent = p.slice(0, Math.max(dot, 0));
      const key = `${parent}\0${group.join()}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const entry = { q: [] as string[], f: [] as string[] };
      for (const member of group) {
        const full = parent ? `${parent}.${member}` : member;
        if (quantized.has(full)) entry.q.push(member);
        else if (float.has(full)) entry.f.push(member);
      }
      if (entry.q.length > 0 && entry.f.length > 0) {
        out.push({
          path: parent,
          message: `${parent}: ${entry.q.join(", ")} quantized but ${
            entry.f.join(", ")
          } in float; vLLM fuses ${
            group.join("/")
          } and requires one scheme for all`,
        });
      }
    }
  }
  return out;
}
