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
import { createWebGpuEngine } from "./webgpu_engine.ts";
import { probeWebGpu } from "../backend/webgpu.ts";

/** The backends `loadCausalLM` accepts. */
export type EngineBackend = "auto" | "cpu" | "webgpu";

/**
 * Whether {@linkcode createEngine} will make the CPU engine for `backend`
 * (then a loader can put int8 weights straight into the CPU kernels' shared
 * memory, so each is held once): `cpu`, and `auto` without a hardware
 * adapter.
 *
 * @example
 * ```ts
 * import { engineRunsOnCpu } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * assert.equal(await engineRunsOnCpu("cpu"), true);
 * assert.equal(await engineRunsOnCpu("webgpu"), false);
 * ```
 */
export async function engineRunsOnCpu(
  backend: EngineBackend,
): Promise<boolean> {
  if (backend === "cpu") return true;
  if (backend === "webgpu") return false;
  const probe = await probeWebGpu();
  return !(probe.adapter && !probe.isFallback);
}

/**
 * Makes the engine for `backend`: `cpu` the typed-array engine, `webgpu` the
 * WebGPU engine (an error where `navigator.gpu` has no adapter), `auto` the
 * WebGPU engine on a hardware adapter and the CPU engine otherwise — a
 * software adapter (llvmpipe/lavapipe) is slower than the CPU kernels, so
 * `auto` declines it, as the layer backend does; where the WebGPU engine
 * cannot be made for the model, `auto` runs the CPU engine. `cpu` also makes the
 * layers' kernel backend the CPU one (as `--backend cpu` does), so no layer
 * runs on a GPU behind the CPU engine's back.
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
    case "webgpu": {
      const probe = await probeWebGpu();
      if (!probe.adapter) {
        throw new Error(
          `Backend "webgpu" needs a WebGPU adapter, and navigator.gpu gave none: ${probe.description}`,
        );
      }
      return await createWebGpuEngine(model, {
        ...options,
        adapter: probe.adapter,
      });
    }
    case "auto": {
      const probe = await probeWebGpu();
      if (probe.adapter && !probe.isFallback) {
        try {
          return await createWebGpuEngine(model, {
            ...options,
            adapter: probe.adapter,
          });
        } catch {
          // A model the GPU cannot hold (or a layout without a WebGPU
          // kernel) still runs: `auto` means the best engine that works.
        }
      }
      return new CpuEngine(model, options);
    }
    default:
      throw new RangeError(
        `Unknown backend "${backend}": expected one of auto, cpu, webgpu`,
      );
  }
}
