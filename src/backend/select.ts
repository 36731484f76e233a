/**
 * Backend choice: `auto` takes WebGPU only for a hardware adapter and the CPU
 * kernels otherwise (a software adapter such as llvmpipe is slower than they
 * are). `TINYQ_BACKEND=cpu|webgpu|auto` or {@linkcode setBackend} override it.
 *
 * @module
 */

import type { Backend, BackendInfo } from "./backend.ts";
import { CpuBackend } from "./cpu.ts";
import {
  createWebGpuBackend,
  probeWebGpu,
  type WebGpuBackend,
} from "./webgpu.ts";

/** What a user may ask for. */
export type BackendChoice = "auto" | "cpu" | "webgpu";

const CHOICES: readonly BackendChoice[] = ["auto", "cpu", "webgpu"];

let requested: { choice: BackendChoice; source: string } | null = null;
let active: Promise<Backend> | null = null;

function readEnv(): string | undefined {
  try {
    return Deno.env.get("TINYQ_BACKEND");
  } catch {
    return undefined; // no --allow-env: behave as auto
  }
}

/** Parses a backend name, throwing an error that lists the known ones. */
export function parseBackendChoice(
  value: string,
  source: string,
): BackendChoice {
  const v = value.trim().toLowerCase();
  if ((CHOICES as readonly string[]).includes(v)) return v as BackendChoice;
  throw new RangeError(
    `Unknown backend "${value}" in ${source}: expected one of ${
      CHOICES.join(", ")
    }`,
  );
}

/**
 * Overrides the backend choice (as `--backend` does) for every later
 * `forward`. The next call of {@linkcode getBackend} chooses anew.
 *
 * @example
 * ```ts
 * import { getBackend, setBackend } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * setBackend("cpu");
 * assert.equal((await getBackend()).name, "cpu");
 * setBackend("auto");
 * ```
 */
export function setBackend(
  choice: BackendChoice,
  source = "setBackend()",
): void {
  requested = { choice: parseBackendChoice(choice, source), source };
  // Free the previous backend's device and buffers rather than wait for GC.
  void active?.then(
    (b) => (b as Partial<{ destroy(): void }>).destroy?.(),
    () => {},
  );
  active = null;
}

/**
 * Whether the WebGPU probe can run without Mesa writing to stderr: off
 * Linux always; on Linux when XDG_RUNTIME_DIR is set or may be set for the
 * probe (env permission).
 */
function quietProbePossible(): boolean {
  if (Deno.build.os !== "linux") return true;
  try {
    return Deno.permissions.querySync({
      name: "env",
      variable: "XDG_RUNTIME_DIR",
    }).state === "granted";
  } catch {
    return false;
  }
}

async function choose(): Promise<Backend> {
  let { choice, source } = requested ?? { choice: "auto", source: "default" };
  if (!requested) {
    const env = readEnv();
    if (env !== undefined && env !== "") {
      choice = parseBackendChoice(env, "TINYQ_BACKEND");
      source = `TINYQ_BACKEND=${env}`;
    }
  }
  if (choice === "cpu") {
    return new CpuBackend(`CPU kernels requested (${source})`);
  }
  if (choice === "auto" && !quietProbePossible()) {
    return new CpuBackend(
      "WebGPU not probed: without env permission Mesa's adapter probe prints " +
        '"XDG_RUNTIME_DIR is invalid" twice (allow env, or ask for --backend webgpu)',
    );
  }
  const probe = await probeWebGpu();
  if (choice === "webgpu") {
    if (!probe.adapter) {
      throw new Error(
        `WebGPU was requested (${source}) but navigator.gpu gave no adapter: ${probe.description}`,
      );
    }
    return await createWebGpuBackend(
      probe.adapter,
      `WebGPU requested (${source}); adapter ${probe.description}`,
    );
  }
  if (!probe.adapter) {
    return new CpuBackend(
      `no WebGPU adapter (${probe.description}); using CPU kernels`,
    );
  }
  if (probe.isFallback) {
    return new CpuBackend(
      `WebGPU adapter ${probe.description} is a software fallback, slower than the CPU kernels`,
    );
  }
  return await createWebGpuBackend(
    probe.adapter,
    `hardware WebGPU adapter ${probe.description}`,
  );
}

/**
 * The backend that `forward` uses now, chosen once and then reused. A failed
 * choice (webgpu requested where none exists) is not cached, and a lost GPU
 * device is given up so that the next call chooses anew.
 */
export function activeBackend(): Promise<Backend> {
  if (!active) {
    const pending = choose();
    const forget = () => {
      if (active === pending) active = null;
    };
    pending.then(
      (b) => (b as Partial<WebGpuBackend>).device?.lost.then(forget),
      forget,
    );
    active = pending;
  }
  return active;
}

/**
 * Reports the active backend: `{ name: "cpu" | "webgpu", reason, adapter? }`.
 *
 * @example
 * ```ts
 * import { getBackend } from "@tinyq/tinyq";
 * const info = await getBackend();
 * console.log(`${info.name}: ${info.reason}`);
 * ```
 */
export async function getBackend(): Promise<BackendInfo> {
  return (await activeBackend()).info;
}
