/**
 * Which engine runs a model: backend name → engine. The one place a new
 * engine is wired in.
 *
 * @module
 */

import { setBackend } from "../backend/select.ts";
import { CpuEngine, type EngineOptions } from "./cpu_engine.ts";
import type { DecoderModel } from "./decoder_model.ts";
import type { Engine } from "./engine.ts";

/** The backends `loadCausalLM` accepts. */
export type EngineBackend = "auto" | "cpu" | "webgpu";

/**
 * Whether {@linkcode createEngine} will make the CPU engine for `backend`
 * (then a loader can put int8 weights straight into the CPU kernels' shared
 * memory, so each is held once).
 *
 * @example
 * ```ts
 * import { engineRunsOnCpu } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.equal(await engineRunsOnCpu("cpu"), true);
 * ```
 */
// deno-lint-ignore require-await -- the WebGPU engine's choice probes the adapter
export async function engineRunsOnCpu(
  backend: EngineBackend,
): Promise<boolean> {
  return backend !== "webgpu";
}

/**
 * Makes the engine for `backend`. `auto` is the CPU engine until the
 * WebGPU engine lands; `webgpu` is an error until then. `cpu` also makes
 * the layers' kernel backend the CPU one (as `--backend cpu` does), so no
 * layer runs on a GPU behind the CPU engine's back.
 *
 * @example
 * ```ts
 * import { createEngine, loadCausalLM } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const lm = await loadCausalLM("models/tinystories-656k");
 * const engine = await createEngine("cpu", lm.model, { contextLength: 64 });
 * assert.equal(engine.name, "cpu");
 * engine.dispose();
 * lm.dispose();
 * ```
 */
// deno-lint-ignore require-await -- throws become rejections, as callers expect
export async function createEngine(
  backend: EngineBackend,
  model: DecoderModel,
  options: EngineOptions = {},
): Promise<Engine> {
  switch (backend) {
    case "cpu":
      // Without probing for a GPU first (a probe may print driver noise).
      setBackend("cpu", 'loadCausalLM({ backend: "cpu" })');
      return new CpuEngine(model, options);
    case "auto":
      return new CpuEngine(model, options);
    case "webgpu":
      throw new Error(
        'Backend "webgpu" has no model engine yet (the WebGPU runtime is not in this build); use backend "cpu" or "auto"',
      );
    default:
      throw new RangeError(
        `Unknown backend "${backend}": expected one of auto, cpu, webgpu`,
      );
  }
}
