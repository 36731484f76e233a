/**
 * TinyQ's `replace_linear_with_target_and_quantize`: swap every
 * {@linkcode Linear} of a model for a quantized layer.
 *
 * @module
 */

import { memberName } from "../member_name.ts";
import { Linear } from "../linear.ts";
import type { Module } from "../module.ts";
import { materialize, type Tensor } from "../tensor.ts";
import type {
  QuantizedLinearOptions,
  QuantizeOptions,
} from "./int8_linear_layer.ts";

/** What every quantized layer offers (int8 and 4-bit alike). */
export interface QuantizedLinear extends Module {
  /** Input features. */
  readonly inFeatures: number;
  /** Output features. */
  readonly outFeatures: number;
  /** The bias, [out] in any float dtype, or null. */
  bias: Tensor | null;
  /** Quantizes float weights [out, in] into the layer. */
  quantize(weights: Tensor, options?: QuantizeOptions): void;
  /** The float weights the quantized values stand for, f32 [out, in]. */
  dequantize(): Tensor;
  /** Runs the layer on an input [..., in]. */
  forward(input: Tensor): Promise<Tensor>;
}

/** Constructor options every quantized layer accepts (extra ones are ignored by layers without them). */
export interface QuantizedLinearClassOptions extends QuantizedLinearOptions {
  /** Inputs per group for group-wise layers (W4A16). */
  groupSize?: number;
  /** The weight's name, for error messages. */
  name?: string;
}

/** A quantized layer class: `new Target(inFeatures, outFeatures, { bias, dtype, groupSize, name })`. */
export type QuantizedLinearClass = new (
  inFeatures: number,
  outFeatures: number,
  options?: QuantizedLinearClassOptions,
) => QuantizedLinear;

/** What {@linkcode replaceLinearWithTargetAndQuantize} did, by dotted path. */
export interface ReplaceReport {
  /** Linear layers replaced by quantized ones. */
  quantized: string[];
  /** Linear layers left in float because `exclude` matched them. */
  excluded: string[];
}

/** Options of {@linkcode replaceLinearWithTargetAndQuantize}. */
export interface ReplaceOptions extends Pick<QuantizeOptions, "asymmetric"> {
  /** Inputs per group for group-wise layers (W4A16); ignored by the int8 layers. */
  groupSize?: number;
  /** Called after each layer is replaced (for progress bars). */
  onLayer?: (path: string, weight: Tensor) => void;
}

/** Turns an exclude glob into a RegExp over dotted paths (`*`: within one segment, `**`: anything). */
function globToRegExp(glob: string): RegExp {
  let src = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*" && glob[i + 1] === "*") {
      src += ".*";
      i++;
    } else if (c === "*") src += "[^.]*";
    else if (c === "?") src += "[^.]";
    else src += c.replace(/[\\^$+.()|[\]{}]/g, "\\$&");
  }
  return new RegExp(`^${src}$`);
}

/**
 * Returns a predicate telling whether a module path is excluded: an entry
 * equal to the module's own name (TinyQ's rule, e.g. `lm_head`), or a glob
 * matching its dotted path or the path of one of its ancestors. An entry
 * naming a weight tensor (`lm_head.weight`, as `tinyq inspect` prints it)
 * stands for its module.
 *
 * @example
 * ```ts
 * import { excludeMatcher } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const excluded = excludeMatcher(["lm_head", "model.layers.*.mlp.down_proj"]);
 * assert.ok(excluded("lm_head"));
 * assert.ok(excluded("model.layers.3.mlp.down_proj"));
 * assert.ok(!excluded("model.layers.3.mlp.up_proj"));
 * assert.ok(excludeMatcher(["lm_head.weight"])("lm_head"));
 * ```
 */
export function excludeMatcher(
  exclude: readonly string[],
): (path: string) => boolean {
  // `weight` alone is the root module's weight (a plain nn.Linear).
  const entries = exclude.map((x) =>
    x === "weight"
      ? ""
      : x.endsWith(".weight")
      ? x.slice(0, -".weight".length)
      : x
  );
  const names = new Set(entries);
  const globs = entries.map(globToRegExp);
  return (path) => {
    const parts = path.split(".");
    if (names.has(parts[parts.length - 1]!)) return true;
    for (let i = 1; i <= parts.length; i++) {
      const prefix = parts.slice(0, i).join(".");
      if (globs.some((g) => g.test(prefix))) return true;
    }
    return false;
  };
}

/**
 * The entries of `exclude` that match none of the Linear layers `paths` — a
 * typo, which would otherwise leave the layer quantized without a word.
 *
 * @example
 * ```ts
 * import { unmatchedExcludes } from "./replace.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(unmatchedExcludes(["lm_head.weight", "lm_haed"], ["fc", "lm_head"]), ["lm_haed"]);
 * ```
 */
export function unmatchedExcludes(
  exclude: readonly string[],
  paths: readonly string[],
): string[] {
  return exclude.filter((x) => !paths.some(excludeMatcher([x])));
}

/**
 * Replaces every {@linkcode Linear} of `module` (at any depth) by a `Target`
 * layer quantized from its weight, keeping the bias. Lazy (on-disk) weights
 * are read one layer at a time. Layers whose own name or dotted path matches
 * `exclude` stay as they are.
 *
 * @example
 * ```ts
 * import { Linear, Module, replaceLinearWithTargetAndQuantize, W8A32LinearLayer } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const model = new Module();
 * model.setChild("fc", new Linear(4, 2));
 * model.setChild("lm_head", new Linear(2, 8));
 * const report = await replaceLinearWithTargetAndQuantize(model, W8A32LinearLayer, ["lm_head"]);
 * assert.deepEqual(report, { quantized: ["fc"], excluded: ["lm_head"] });
 * assert.ok(model.getChild("fc") instanceof W8A32LinearLayer);
 * ```
 */
export async function replaceLinearWithTargetAndQuantize(
  module: Module,
  Target: QuantizedLinearClass,
  exclude: readonly string[] = [],
  options: ReplaceOptions = {},
): Promise<ReplaceReport> {
  const isExcluded = excludeMatcher(exclude);
  const report: ReplaceReport = { quantized: [], excluded: [] };
  // Collect first: replacing while walking would change the walk.
  const targets: [Module, string, string, Linear][] = [];
  const walk = (parent: Module, prefix: string) => {
    for (const [name, child] of parent.namedChildren()) {
      const path = prefix ? memberName(prefix, name) : name;
      if (child instanceof Linear) {
        if (isExcluded(path)) report.excluded.push(path);
        else targets.push([parent, name, path, child]);
      } else {
        walk(child, path);
      }
    }
  };
  walk(module, "");
  // Every layer is made before any is replaced: a shape the target cannot
  // hold (an input size the group size does not divide) fails here, naming
  // the weight, with the model untouched. Their placeholder buffers take
  // what the quantized model takes in the end, so the peak barely moves.
  const layers = targets.map(([, , path, linear]) =>
    new Target(linear.inFeatures, linear.outFeatures, {
      bias: false,
      ...(options.groupSize !== undefined
        ? { groupSize: options.groupSize }
        : {}),
      name: memberName(path, "weight"),
    })
  );
  for (const [i, [parent, name, path, linear]] of targets.entries()) {
    const weight = await materialize(linear.weight);
    const bias = linear.bias ? await materialize(linear.bias) : null;
    const layer = layers[i]!;
    layer.quantize(weight, {
      name: memberName(path, "weight"),
      asymmetric: options.asymmetric,
    });
    layer.bias = bias;
    linear.dispose();
    parent.setChild(name, layer);
    report.quantized.push(path);
    options.onLayer?.(path, weight);
  }
  return report;
}
