/**
 * The WebGPU backend: int8 and f32 Linear kernels (kernels/*.wgsl) run through
 * `navigator.gpu`, with weights uploaded once and kept on the GPU.
 *
 * A kernel is a GEMV (M ≤ 8, decode) or a tiled GEMM (prefill) with two small
 * loader files prepended: one reads activations (f32, native f16, f16 packed in
 * u32, bf16 bits) and one reads weights (int8 via `unpack4xI8` or shifts, f32),
 * so each combination is one cached pipeline. Weights larger than a storage
 * binding are split into row chunks, one dispatch each; calls whose activations
 * or outputs exceed a binding run in blocks of rows.
 *
 * @module
 */

import type { FloatDType } from "../dtype.ts";
import type {
  Activations,
  Backend,
  BackendInfo,
  F32Weight,
  Int8Weight,
} from "./backend.ts";
import gemv from "../../kernels/gemv.wgsl" with { type: "text" };
import gemm from "../../kernels/gemm.wgsl" with { type: "text" };
import xF32 from "../../kernels/load_x_f32.wgsl" with { type: "text" };
import xF16 from "../../kernels/load_x_f16.wgsl" with { type: "text" };
import xF16Packed from "../../kernels/load_x_f16_packed.wgsl" with {
  type: "text",
};
import xBf16 from "../../kernels/load_x_bf16.wgsl" with { type: "text" };
import wI8Dot4 from "../../kernels/load_w_i8_dot4.wgsl" with { type: "text" };
import wI8Shift from "../../kernels/load_w_i8_shift.wgsl" with { type: "text" };
import wF32 from "../../kernels/load_w_f32.wgsl" with { type: "text" };

/** What probing `navigator.gpu` found. */
export interface WebGpuProbe {
  /** The adapter, or null when there is none. */
  adapter: GPUAdapter | null;
  /** True for a software adapter (llvmpipe/lavapipe, WARP, SwiftShader). */
  isFallback: boolean;
  /** The adapter's description, or why there is none. */
  description: string;
}

/**
 * Asks `navigator.gpu` for an adapter. Never throws.
 *
 * @returns The adapter (or null) and a description for messages.
 *
 * @example
 * ```ts
 * import { probeWebGpu } from "@tinyq/tinyq";
 * const probe = await probeWebGpu();
 * console.log(probe.adapter ? `adapter ${probe.description}` : probe.description);
 * ```
 */
export async function probeWebGpu(): Promise<WebGpuProbe> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) {
    return {
      adapter: null,
      isFallback: false,
      description: "navigator.gpu is missing",
    };
  }
  // On a headless Linux box Mesa's Wayland probe prints "XDG_RUNTIME_DIR is
  // invalid or not set" to stderr; a placeholder during the request keeps
  // the CLI's output clean, and the variable is unset again afterwards.
  const silence = envUnset("XDG_RUNTIME_DIR");
  if (silence) Deno.env.set("XDG_RUNTIME_DIR", "/nonexistent");
  try {
    const adapter = await gpu.requestAdapter({
      powerPreference: "high-performance",
    });
    if (!adapter) {
      return {
        adapter: null,
        isFallback: false,
        description: "requestAdapter() returned null",
      };
    }
    const info = adapter.info;
    return {
      adapter,
      isFallback: info.isFallbackAdapter,
      description: `"${info.description || info.vendor}"`,
    };
  } catch (e) {
    return {
      adapter: null,
      isFallback: false,
      description: `requestAdapter() failed: ${e}`,
    };
  } finally {
    if (silence) Deno.env.delete("XDG_RUNTIME_DIR");
  }
}

function envUnset(name: string): boolean {
  try {
    return !Deno.env.get(name);
  } catch {
    return false; // no --allow-env: leave the environment alone
  }
}

/** Options of {@linkcode createWebGpuBackend}; the defaults use what the device offers. */
export interface WebGpuBackendOptions {
  /** Read f16 activations as packed u32 pairs even where "shader-f16" exists. */
  disableShaderF16?: boolean;
  /** Unpack int8 weights with shifts even where `unpack4xI8` exists. */
  disableDot4?: boolean;
  /** Caps a storage binding below the device limit (forces weight splitting). */
  maxBindingBytes?: number;
  /** Time the kernels with timestamp queries, where offered (see `kernelMs`). */
  timing?: boolean;
}

/** The WebGPU backend: a {@linkcode Backend} plus what it runs on. */
export interface WebGpuBackend extends Backend {
  /** The device the kernels run on. */
  readonly device: GPUDevice;
  /** True when f16 activations are read natively (`enable f16`). */
  readonly shaderF16: boolean;
  /** True when int8 weights are unpacked by `unpack4xI8`, false for shifts. */
  readonly dot4: boolean;
  /** Bytes of GPU memory held for weights now. */
  readonly residentBytes: number;
  /**
   * GPU time of the last call's kernels in milliseconds, without the upload of
   * activations and the readback; NaN unless created with `timing: true` on a
   * device with "timestamp-query".
   */
  readonly kernelMs: number;
  /** Frees every GPU resource; later calls reject. */
  destroy(): void;
}

const GEMV_MAX_M = 8; // activation rows handled by gemv.wgsl; above, gemm.wgsl
const GEMV_ROWS = 8; // weight rows per gemv workgroup
const TILE = 64; // gemm tile edge
const BLOCK = 16; // K is padded to 16 so that every load is 128 bits
const MAX_GROUPS = 65535;
const POOL_BYTES = 256 * 2 ** 20; // idle buffers kept for reuse, at most
const U = GPUBufferUsage;
const X_LOADERS = { f32: xF32, f16: xF16Packed, bf16: xBf16 };

type Weight = Int8Weight | F32Weight;
interface Resident {
  chunks: { buffer: GPUBuffer; row0: number; rows: number }[];
  rowp: GPUBuffer; // (scale, zero point) per output row
  zeros: GPUBuffer; // the bias when there is none
  bytes: number;
}
interface Config {
  shaderF16: boolean;
  dot4: boolean;
  timing: boolean;
  maxBinding: number;
}

const roundUp = (v: number, to: number): number => Math.ceil(v / to) * to;
const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** Puts the loaders' `enable`/`requires` directives first, as WGSL wants. */
function assemble(parts: string[]): string {
  const lines = parts.join("\n").split("\n");
  const directive = (l: string) => /^(enable|requires) /.test(l);
  return [...lines.filter(directive), ...lines.filter((l) => !directive(l))]
    .join("\n");
}

/** Copies `rows` rows of `k` values into rows of `kPad`, zero-padded. */
function padRows<T extends Activations | Int8Array>(
  src: T,
  rows: number,
  k: number,
  kPad: number,
  dst?: T,
): T {
  const out = dst ?? new (src.constructor as new (n: number) => T)(rows * kPad);
  for (let r = 0; r < (k === kPad ? 1 : rows); r++) {
    const len = k === kPad ? rows * k : k;
    out.set(src.subarray(r * k, r * k + len) as never, r * kPad);
  }
  return out;
}

class GpuBackend implements WebGpuBackend {
  readonly info: BackendInfo;
  readonly device: GPUDevice;
  readonly shaderF16: boolean;
  readonly dot4: boolean;
  kernelMs = NaN;
  #maxBinding: number;
  #lost: string | null = null;
  #resident = new WeakMap<
    Weight,
    { ready: Promise<Resident>; res?: Resident }
  >();
  #residentBytes = 0;
  #pipelines = new Map<string, Promise<GPUComputePipeline>>();
  #pool = new Map<string, GPUBuffer[]>();
  #pooled = 0;
  #timer: { set: GPUQuerySet; resolve: GPUBuffer } | null = null;

  constructor(device: GPUDevice, info: BackendInfo, config: Config) {
    this.device = device;
    this.info = info;
    this.shaderF16 = config.shaderF16;
    this.dot4 = config.dot4;
    this.#maxBinding = config.maxBinding;
    if (config.timing) {
      this.#timer = {
        set: device.createQuerySet({ type: "timestamp", count: 2 }),
        resolve: device.createBuffer({
          size: 16,
          usage: U.QUERY_RESOLVE | U.COPY_SRC,
        }),
      };
    }
    device.lost.then((i) => {
      this.#lost ??= `The WebGPU device was lost (${i.reason}): ${
        i.message || "no details"
      }`;
    });
  }

  get residentBytes(): number {
    return this.#residentBytes;
  }

  async linearInt8(
    x: Activations,
    xDtype: FloatDType,
    m: number,
    w: Int8Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array> {
    const want = { f32: Float32Array, f16: Float16Array, bf16: Uint16Array };
    if (!(x instanceof want[xDtype])) {
      throw new TypeError(
        `${xDtype} activations must be a ${
          want[xDtype].name
        }, got ${x.constructor.name}`,
      );
    }
    const xl = xDtype === "f16" && this.shaderF16 ? xF16 : X_LOADERS[xDtype];
    return await this.#linear(
      x,
      xl,
      m,
      w,
      this.dot4 ? wI8Dot4 : wI8Shift,
      bias,
    );
  }

  linearF32(
    x: Float32Array,
    m: number,
    w: F32Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array> {
    return this.#linear(x, xF32, m, w, wF32, bias);
  }

  release(w: Weight): void {
    const r = this.#resident.get(w);
    this.#resident.delete(w);
    const free = (res: Resident) => {
      for (const c of res.chunks) c.buffer.destroy();
      res.rowp.destroy();
      res.zeros.destroy();
      this.#residentBytes -= res.bytes;
    };
    if (r?.res) free(r.res);
    else r?.ready.then(free, () => {});
  }

  destroy(): void {
    this.#lost ??= "The WebGPU backend was destroyed";
    this.device.destroy();
  }

  async #linear(
    x: Activations,
    xl: string,
    m: number,
    w: Weight,
    wl: string,
    bias: Float32Array | null,
  ): Promise<Float32Array> {
    if (this.#lost) throw new Error(this.#lost);
    const { n, k } = w;
    if (!Number.isInteger(m) || m < 0 || x.length !== m * k) {
      throw new RangeError(
        `Activations have ${x.length} values, expected m·k = ${m}·${k}`,
      );
    }
    if (bias && bias.length !== n) {
      throw new RangeError(`Bias has ${bias.length} values, expected ${n}`);
    }
    const res = await this.#upload(w);
    const kPad = roundUp(k, BLOCK);
    // Activation rows per dispatch: x and y must each fit one binding.
    const block = Math.min(
      m,
      Math.floor(this.#maxBinding / (4 * n)),
      Math.floor(this.#maxBinding / (kPad * x.BYTES_PER_ELEMENT)),
      MAX_GROUPS * TILE,
    );
    if (block < 1 && m > 0) {
      throw new RangeError(
        `A row of ${k} activations or ${n} outputs exceeds the GPU's ${
          mib(this.#maxBinding)
        } bindings`,
      );
    }
    const y = new Float32Array(m * n);
    let ns = 0;
    for (let i0 = 0; i0 < m; i0 += block) {
      const mb = Math.min(block, m - i0);
      const xs = padRows(x.subarray(i0 * k, (i0 + mb) * k), mb, k, kPad);
      const kernel = mb <= GEMV_MAX_M ? gemv : gemm;
      const pipeline = await this.#pipeline([xl, wl, kernel]);
      const out = await this.#dispatch(pipeline, kernel, xs, mb, res, w, bias);
      y.set(out.y, i0 * n);
      ns += out.ns;
    }
    this.kernelMs = this.#timer ? ns / 1e6 : NaN;
    return y;
  }

  #pipeline(parts: string[]): Promise<GPUComputePipeline> {
    const key = parts.join("\0");
    let p = this.#pipelines.get(key);
    if (!p) {
      const code = assemble(parts);
      p = this.device.createComputePipelineAsync({
        layout: "auto",
        compute: { module: this.device.createShaderModule({ code }) },
      }).catch((e) => {
        this.#pipelines.delete(key);
        const name = parts.map((s) => s.slice(3, s.indexOf(":"))).join(" + ");
        throw this.#error(`Cannot compile WebGPU kernel ${name}`, e.message);
      });
      this.#pipelines.set(key, p);
    }
    return p;
  }

  #upload(w: Weight): Promise<Resident> {
    let r = this.#resident.get(w);
    if (!r) {
      const entry: { ready: Promise<Resident>; res?: Resident } = {
        ready: this.#makeResident(w),
      };
      entry.ready.then((res) => entry.res = res, () => {
        if (this.#resident.get(w) === entry) this.#resident.delete(w);
      });
      this.#resident.set(w, r = entry);
    }
    return r.ready;
  }

  async #makeResident(w: Weight): Promise<Resident> {
    const { n, k } = w;
    const int8 = "q" in w;
    const src = int8 ? w.q : w.data;
    const what = `${n}×${k} ${int8 ? "int8" : "f32"} weight`;
    const zp = int8 ? w.zeroPoints : null;
    if (
      src.length !== n * k ||
      (int8 && (w.scales.length !== n || (zp && zp.length !== n)))
    ) {
      throw new RangeError(
        `The ${what} has ${src.length} values${
          int8
            ? `, ${w.scales.length} scales, ${zp?.length ?? 0} zero points`
            : ""
        }`,
      );
    }
    const kPad = roundUp(k, BLOCK);
    const rowBytes = kPad * src.BYTES_PER_ELEMENT;
    // Weight rows per binding (and dispatch), whole gemm tiles where possible.
    let per = Math.min(
      Math.floor(this.#maxBinding / rowBytes),
      MAX_GROUPS * GEMV_ROWS,
    );
    if (per >= TILE) per -= per % TILE;
    if (per < 1 || 8 * n > this.#maxBinding) {
      throw new RangeError(
        `The ${what} does not fit the GPU's ${mib(this.#maxBinding)} bindings`,
      );
    }
    const d = this.device;
    const made: GPUBuffer[] = [];
    const create = (size: number, label: string, mapped = true) => {
      const usage = U.STORAGE;
      made.push(
        d.createBuffer({ size, label, usage, mappedAtCreation: mapped }),
      );
      return made.at(-1)!;
    };
    let res: Resident | undefined, failure: unknown;
    d.pushErrorScope("out-of-memory");
    try {
      const chunks = [];
      for (let row0 = 0; row0 < n; row0 += per) {
        const rows = Math.min(per, n - row0);
        const buffer = create(rows * rowBytes, `${what} rows ${row0}+${rows}`);
        const view = new (src.constructor as Int8ArrayConstructor)(
          buffer.getMappedRange(),
        );
        padRows(src.subarray(row0 * k, (row0 + rows) * k), rows, k, kPad, view);
        buffer.unmap();
        chunks.push({ buffer, row0, rows });
      }
      const rowp = create(8 * n, `${what} scales`);
      const rp = new Float32Array(rowp.getMappedRange());
      for (let j = 0; j < n; j++) {
        rp[2 * j] = int8 ? w.scales[j]! : 1;
        rp[2 * j + 1] = zp ? zp[j]! : 0;
      }
      rowp.unmap();
      const zeros = create(4 * n, `${what} zero bias`, false);
      res = { chunks, rowp, zeros, bytes: n * (rowBytes + 12) };
    } catch (e) {
      failure = e;
    }
    const oom = await d.popErrorScope().catch((e: Error) => e);
    if (oom || !res) {
      for (const b of made) b.destroy();
      throw this.#error(
        `Cannot upload the ${what} (${mib(n * rowBytes)}) to the GPU`,
        oom?.message ?? failure,
      );
    }
    this.#residentBytes += res.bytes;
    return res;
  }

  /** A device loss explains every failure after it; else say what failed. */
  #error(what: string, cause: unknown): Error {
    return new Error(this.#lost ?? `${what}: ${cause}`);
  }

  #take(size: number, usage: number): GPUBuffer {
    let bytes = Math.max(256, 2 ** Math.ceil(Math.log2(size)));
    if (bytes > this.device.limits.maxBufferSize) bytes = roundUp(size, 16);
    const b = this.#pool.get(`${usage}:${bytes}`)?.pop();
    if (b) this.#pooled -= b.size;
    return b ?? this.device.createBuffer({ size: bytes, usage });
  }

  #give(b: GPUBuffer): void {
    const key = `${b.usage}:${b.size}`;
    const list = this.#pool.get(key) ?? [];
    if (this.#lost || list.length >= 4 || this.#pooled + b.size > POOL_BYTES) {
      b.destroy();
      return;
    }
    this.#pooled += b.size;
    list.push(b);
    this.#pool.set(key, list);
  }

  async #dispatch(
    pipeline: GPUComputePipeline,
    kernel: string,
    xs: Activations,
    mb: number,
    res: Resident,
    w: Weight,
    bias: Float32Array | null,
  ): Promise<{ y: Float32Array; ns: number }> {
    const d = this.device;
    const { n, k } = w;
    const yBytes = mb * n * 4;
    const tOff = roundUp(yBytes, 8); // timestamps follow y in the readback
    const readBytes = tOff + (this.#timer ? 16 : 0);
    const align = d.limits.minUniformBufferOffsetAlignment;
    const taken: GPUBuffer[] = [];
    const take = (size: number, usage: number) => {
      taken.push(this.#take(size, usage));
      return taken.at(-1)!;
    };
    let readBuf: GPUBuffer | undefined, thrown: unknown;
    // No await until both scopes are popped: calls may interleave.
    d.pushErrorScope("validation");
    d.pushErrorScope("out-of-memory");
    try {
      const xBuf = take(xs.byteLength, U.STORAGE | U.COPY_DST);
      const yBuf = take(yBytes, U.STORAGE | U.COPY_SRC);
      const bBuf = bias ? take(4 * n, U.STORAGE | U.COPY_DST) : res.zeros;
      const pBuf = take(align * res.chunks.length, U.UNIFORM | U.COPY_DST);
      readBuf = take(readBytes, U.MAP_READ | U.COPY_DST);
      d.queue.writeBuffer(xBuf, 0, xs as ArrayBufferView<ArrayBuffer>);
      if (bias) d.queue.writeBuffer(bBuf, 0, bias as Float32Array<ArrayBuffer>);
      const params = new Uint32Array((align / 4) * res.chunks.length);
      const kb = roundUp(k, BLOCK) / BLOCK;
      res.chunks.forEach((c, s) => {
        params.set([n, kb, c.row0, c.rows, mb], (s * align) / 4);
      });
      d.queue.writeBuffer(pBuf, 0, params);
      const enc = d.createCommandEncoder();
      const t = this.#timer;
      const pass = enc.beginComputePass(
        t
          ? {
            timestampWrites: {
              querySet: t.set,
              beginningOfPassWriteIndex: 0,
              endOfPassWriteIndex: 1,
            },
          }
          : {},
      );
      pass.setPipeline(pipeline);
      res.chunks.forEach((c, s) => {
        const bound = [xBuf, c.buffer, res.rowp, bBuf, yBuf, pBuf];
        const entries = bound.map((buffer, binding) => ({
          binding,
          resource: binding === 5
            ? { buffer, offset: s * align, size: 32 }
            : { buffer },
        }));
        const layout = pipeline.getBindGroupLayout(0);
        pass.setBindGroup(0, d.createBindGroup({ layout, entries }));
        if (kernel === gemv) {
          pass.dispatchWorkgroups(Math.ceil(c.rows / GEMV_ROWS), mb);
        } else {
          pass.dispatchWorkgroups(
            Math.ceil(c.rows / TILE),
            Math.ceil(mb / TILE),
          );
        }
      });
      pass.end();
      enc.copyBufferToBuffer(yBuf, 0, readBuf, 0, yBytes);
      if (t) {
        enc.resolveQuerySet(t.set, 0, 2, t.resolve, 0);
        enc.copyBufferToBuffer(t.resolve, 0, readBuf, tOff, 16);
      }
      d.queue.submit([enc.finish()]);
    } catch (e) {
      thrown = e;
    }
    const pop = () => d.popErrorScope().catch((e: Error) => e);
    const errors = Promise.all([pop(), pop()]);
    const [mapped, [oom, invalid]] = await Promise.all([
      thrown ?? readBuf!.mapAsync(GPUMapMode.READ, 0, readBytes).then(
        () => null,
        (e) => e,
      ),
      errors,
    ]);
    const failure = oom?.message ?? invalid?.message ?? mapped;
    if (failure) {
      for (const b of taken) b.destroy();
      const what = `WebGPU ${kernel.slice(3, 7)} of ${mb}×${k} by ${n}×${k}`;
      throw this.#error(`${what} failed`, failure);
    }
    const bytes = readBuf!.getMappedRange(0, readBytes);
    const y = new Float32Array(bytes.slice(0, yBytes));
    const ts = this.#timer ? new BigUint64Array(bytes, tOff, 2) : null;
    const ns = ts ? Number(ts[1]! - ts[0]!) : 0;
    readBuf!.unmap();
    for (const b of taken) this.#give(b);
    return { y, ns };
  }
}

/**
 * Creates the WebGPU backend over an adapter: requests a device with the
 * adapter's largest storage-binding and buffer limits and, where offered,
 * "shader-f16". Kernels compile on first use; a weight uploads on its first
 * call and stays on the GPU until {@linkcode Backend.release}.
 *
 * @param adapter The adapter, e.g. from {@linkcode probeWebGpu}.
 * @param reason Why this backend was chosen (reported in `info.reason`).
 * @param options Forces fallback paths (tests, debugging) or turns on timing.
 * @returns The backend.
 *
 * @example Multiply by a 1 × 2 int8 weight on the GPU
 * ```ts
 * import { createWebGpuBackend } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 * const adapter = await navigator.gpu.requestAdapter();
 * if (adapter) {
 *   const gpu = await createWebGpuBackend(adapter, "example");
 *   const w = {
 *     q: new Int8Array([1, 2]),
 *     scales: new Float32Array([0.5]),
 *     zeroPoints: null,
 *     n: 1,
 *     k: 2,
 *   };
 *   const y = await gpu.linearInt8(new Float32Array([3, 4]), "f32", 1, w, null);
 *   assert.deepEqual([...y], [5.5]);
 *   gpu.destroy();
 * }
 * ```
 */
export async function createWebGpuBackend(
  adapter: GPUAdapter,
  reason: string,
  options: WebGpuBackendOptions = {},
): Promise<WebGpuBackend> {
  const has = (f: GPUFeatureName) => adapter.features.has(f);
  const shaderF16 = has("shader-f16") && !options.disableShaderF16;
  const timing = has("timestamp-query") && !!options.timing;
  const wgsl = (navigator.gpu as { wgslLanguageFeatures?: Set<string> })
    .wgslLanguageFeatures;
  const dot4 = !!wgsl?.has("packed_4x8_integer_dot_product") &&
    !options.disableDot4;
  const { maxStorageBufferBindingSize, maxBufferSize } = adapter.limits;
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({
      label: "tinyq",
      requiredFeatures: [
        ...(shaderF16 ? ["shader-f16" as const] : []),
        ...(timing ? ["timestamp-query" as const] : []),
      ],
      requiredLimits: { maxStorageBufferBindingSize, maxBufferSize },
    });
  } catch (e) {
    throw new Error(
      `Cannot open a WebGPU device on "${adapter.info.description}": ${e}`,
    );
  }
  const maxBinding = Math.min(
    device.limits.maxStorageBufferBindingSize,
    device.limits.maxBufferSize,
    options.maxBindingBytes ?? Infinity,
  );
  return new GpuBackend(
    device,
    { name: "webgpu", reason, adapter: adapter.info },
    { shaderF16, dot4, timing, maxBinding: maxBinding - (maxBinding % 16) },
  );
}
