/**
 * Opening a model folder for the running commands (`generate`,
 * `perplexity`, `demo`): `--method`/`--group-size`/`--asymmetric` quantize
 * at load, `--backend` picks the engine; plus peak-memory and speed words.
 *
 * @module
 */

import { flag, list, type Parsed, str } from "./_args.ts";
import { UsageError } from "./_io.ts";
import { parseMethodFlags } from "./_method.ts";
import { parseBackendChoice } from "../backend/select.ts";
import type { QuantMethod } from "../quant/schemes.ts";
import { loadCausalLM } from "../models/load_causal_lm.ts";
import type { CausalLM } from "../models/causal_lm.ts";

/** The flags of {@linkcode openModel}, for a command's parseArgs options. */
export const MODEL_FLAGS = {
  method: { type: "string", short: "m" },
  "group-size": { type: "string", short: "g" },
  asymmetric: { type: "boolean" },
  exclude: { type: "string", short: "x", multiple: true },
  backend: { type: "string" },
} as const;

/** Help lines for {@linkcode MODEL_FLAGS}. */
export const MODEL_FLAGS_HELP =
  `  -m, --method <m>      quantize at load: w8a16, w8a32, w8a8 or w4a16
                        (default: run the checkpoint as stored)
  -g, --group-size <n>  inputs per 4-bit group, w4a16 only (32, 64, 128)
      --asymmetric      zero points (per row for int8, per group for int4)
  -x, --exclude <name>  a Linear to keep in float when quantizing; repeatable
                        (default: lm_head; 'none' quantizes every Linear)
      --backend <b>     auto (default), cpu or webgpu (also TINYQ_BACKEND)`;

/** A loaded model and how long loading took. */
export interface OpenedModel {
  /** The model. */
  lm: CausalLM;
  /** Milliseconds of loadCausalLM. */
  loadMs: number;
}

/** The usage-checked load options of the model flags. */
export function modelOptions(command: string, p: Parsed): {
  method?: QuantMethod;
  groupSize?: number;
  asymmetric?: boolean;
  exclude?: string[];
  backend?: "auto" | "cpu" | "webgpu";
} {
  const out: ReturnType<typeof modelOptions> = {};
  const methodText = str(p, "method");
  if (methodText !== undefined || str(p, "group-size") !== undefined) {
    const { method, groupSize } = parseMethodFlags(
      command,
      methodText,
      str(p, "group-size"),
    );
    out.method = method;
    if (groupSize !== undefined) out.groupSize = groupSize;
  }
  if (flag(p, "asymmetric")) {
    if (out.method === undefined) {
      throw new UsageError(command, "--asymmetric needs --method");
    }
    out.asymmetric = true;
  }
  const exclude = excludeFlag(p);
  if (out.method !== undefined) out.exclude = exclude;
  else if (list(p, "exclude").length > 0 && command !== "perplexity") {
    throw new UsageError(command, "--exclude needs --method");
  }
  const backend = str(p, "backend");
  if (backend !== undefined) {
    try {
      out.backend = parseBackendChoice(backend, "--backend");
    } catch (e) {
      throw new UsageError(command, (e as Error).message);
    }
  }
  return out;
}

/** `--exclude` values: lm_head when none are given, nothing for `none`. */
export function excludeFlag(p: Parsed): string[] {
  const names = list(p, "exclude");
  if (names.length === 0) return ["lm_head"];
  return names.includes("none") ? [] : names;
}

/** Loads `path` with the model flags of `p`. */
export async function openModel(
  command: string,
  path: string,
  p: Parsed,
): Promise<OpenedModel> {
  const options = modelOptions(command, p);
  const t0 = performance.now();
  const lm = await loadCausalLM(path, options);
  return { lm, loadMs: performance.now() - t0 };
}

/**
 * Runs one token through the engine and empties its cache again, so the
 * figures that follow measure the model, not the kernels' first compile and
 * the worker pool's start (llama.cpp warms up the same way).
 */
export async function warmUp(lm: CausalLM): Promise<void> {
  await lm.engine.step([lm.config.bosTokenId ?? 0], 0, "last");
  lm.engine.reset();
}

/**
 * Peak resident memory of this process in bytes: VmHWM on Linux, else the
 * current RSS (the best the platform tells).
 */
export function peakMemoryBytes(): number {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(status);
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return Deno.memoryUsage().rss;
}

/** `1234.5 tok/s`, with the precision the size calls for. */
export function tokS(v: number): string {
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} tok/s`;
}
