/**
 * The WebGPU backend: int8, f32, W8A8 and int4 Linear kernels (kernels/*.wgsl)
 * run through `navigator.gpu`, with weights uploaded once and kept on the GPU.
 *
 * A kernel is a GEMV (M ≤ 8, decode) or a tiled GEMM (prefill) with small
 * files prepended: one reads activations (f32, native f16, f16 packed in u32,
 * bf16 bits) and one reads weights (int8 via `unpack4xI8` or shifts, int4,
 * f32), or for W8A8 an int8 dot product (`dot4I8Packed` or shifts) after a
 * kernel that quantizes the activations; each combination is one cached
 * pipeline. Weights larger than a storage binding are split into row chunks,
 * one dispatch each; calls whose activations or outputs exceed a binding run
 * in blocks of rows.
 *
 * @module
 */

import type { FloatDType } from "../dtype.ts";
import type {
  Activations,
  Backend,
  BackendInfo,
  F32Weight,
  Int4Weight,
  Int8Weight,
} from "./backend.ts";
import gemv from "../../kernels/gemv.wgsl" with { type: "text" };
import gemvReduce from "../../kernels/gemv_reduce.wgsl" with { type: "text" };
import gemm from "../../kernels/gemm.wgsl" with { type: "text" };
import xF32 from "../../kernels/load_x_f32.wgsl" with { type: "text" };
import xF16 from "../../kernels/load_x_f16.wgsl" with { type: "text" };
import xF16Packed from "../../kernels/load_x_f16_packed.wgsl" with {
  type: "text",
};
import xBf16 from "../../kernels/load_x_bf16.wgsl" with { type: "text" };
import wI8Unpack4x from "../../kernels/load_w_i8_unpack4x.wgsl" with {
  type: "text",
};
import wI8Shift from "../../kernels/load_w_i8_shift.wgsl" with { type: "text" };
import wF32 from "../../kernels/load_w_f32.wgsl" with { type: "text" };
import wI4 from "../../kernels/load_w_i4.wgsl" with { type: "text" };
import gemvInt4 from "../../kernels/gemv_int4.wgsl" with { type: "text" };
import quantizeX from "../../kernels/quantize_x_i8.wgsl" with { type: "text" };
import dotI8Dot4 from "../../kernels/dot_i8_dot4.wgsl" with { type: "text" };
import dotI8Shift from "../../kernels/dot_i8_shift.wgsl" with { type: "text" };
import w8a8Output from "../../kernels/w8a8_output.wgsl" with { type: "text" };
import gemvW8A8 from "../../kernels/gemv_w8a8.wgsl" with { type: "text" };
import gemmW8A8 from "../../kernels/gemm_w8a8.wgsl" with { type: "text" };
import { checkActivations, checkShapes, W8A8_MAX_K } from "./_checks.ts";

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

/**
 * The WebGPU backend: a {@linkcode Backend} plus what it runs on. Its W8A8
 * quantizes each activation row on the GPU and sums in int32
 * (`dot4I8Packed` where available): the values of `referenceLinearW8A8`,
 * bit for bit, for k ≤ 65536.
 */
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
const ONE = 0x3f800000; // 1.0 as f32 bits, a uniform the compiler cannot fold
const U = GPUBufferUsage;
const X_LOADERS = { f32: xF32, f16: xF16Packed, bf16: xBf16 };
// Per-chunk weight buffers are bound here, in order (int4: codes, scales, zps).
const W_BINDINGS = [1, 6, 7];

type Weight = Int8Weight | F32Weight | Int4Weight;
type RowArray = Int8Array | Uint8Array | Float32Array;
interface Resident {
  chunks: { buffers: GPUBuffer[]; row0: number; rows: number }[];
  rowp: GPUBuffer; // (scale, zero point) per output row
  zeros: GPUBuffer; // the bias when there is none
  bytes: number;
}
/** One kernel of a call, dispatched per weight chunk or once per row block. */
interface Pass {
  parts: string[];
  grid: "gemv" | "gemm" | "rows";
}
interface Pipeline {
  pipeline: GPUComputePipeline;
  bindings: number[]; // what the code declares: exactly what "auto" expects
  name: string;
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

/** The matrix product pass: a GEMV for a few activation rows, else a GEMM. */
function matmul(mb: number, gemvParts: string[], gemmParts: string[]): Pass {
  return mb <= GEMV_MAX_M
    ? { parts: [gemvReduce, ...gemvParts], grid: "gemv" }
    : { parts: gemmParts, grid: "gemm" };
}

/** Copies `rows` rows of `k` values into rows of `kPad`, zero-padded. */
function padRows<T extends Activations | RowArray>(
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

/**
 * What of a weight goes to the GPU, checked: arrays of `len` values per row,
 * padded to `padLen` (chunked by rows together, bound at W_BINDINGS), and the
 * (scale, zero point) of each output row.
 */
function gpuLayout(w: Weight): {
  what: string;
  arrays: [RowArray, number, number][];
  rowp: (j: number) => [number, number];
} {
  const { n, k } = w;
  if ("packed" in w) {
    const { groupSize: g, packed, scales, zeroPoints: zp } = w;
    const what = `${n}×${k} int4 weight (group size ${g})`;
    if (!(g === 32 || g === 64 || g === 128) || k % g !== 0) {
      throw new RangeError(
        `The ${what}: k must be a multiple of the group size, 32, 64 or 128`,
      );
    }
    const groups = k / g;
    if (
      packed.length !== (n * k) / 2 || scales.length !== n * groups ||
      (zp && zp.length !== n * groups)
    ) {
      throw new RangeError(
        `The ${what} has ${packed.length} bytes, ${scales.length} scales, ${
          zp?.length ?? 0
        } zero points`,
      );
    }
    const zps = zp ?? new Uint8Array(n * groups).fill(8);
    return {
      what,
      arrays: [[packed, k / 2, k / 2], [scales, groups, groups], [
        zps,
        groups,
        groups,
      ]],
      rowp: () => [1, 0],
    };
  }
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
  return {
    what,
    arrays: [[src, k, roundUp(k, BLOCK)]],
    rowp: (j) => int8 ? [w.scales[j]!, zp ? zp[j]! : 0] : [1, 0],
  };
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
  #pipelines = new Map<string, Promise<Pipeline>>();
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
    const parts = [
      this.#xLoader(x, xDtype, "linearInt8"),
      this.dot4 ? wI8Unpack4x : wI8Shift,
    ];
    return await this.#linear("linearInt8", x, m, w, bias, (mb) => [
      matmul(mb, [...parts, gemv], [...parts, gemm]),
    ]);
  }

  async linearF32(
    x: Float32Array,
    m: number,
    w: F32Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array> {
    return await this.#linear("linearF32", x, m, w, bias, (mb) => [
      matmul(mb, [xF32, wF32, gemv], [xF32, wF32, gemm]),
    ]);
  }

  async linearW8A8(
    x: Float32Array,
    m: number,
    w: Int8Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array> {
    checkActivations(x, "f32", "linearW8A8");
    if (w.k > W8A8_MAX_K) {
      throw new RangeError(
        `W8A8 on WebGPU sums int8 products in int32, exact for k ≤ ${W8A8_MAX_K}; this weight has k = ${w.k}`,
      );
    }
    const parts = [this.dot4 ? dotI8Dot4 : dotI8Shift, w8a8Output];
    // Scratch between the passes: the codes of x (binding 8) and (s_x, Σq_x) (9).
    const scratch = (mb: number, kPad: number): [number, number][] => [
      [8, mb * kPad],
      [9, 8 * mb],
    ];
    return await this.#linear("linearW8A8", x, m, w, bias, (mb) => [
      { parts: [quantizeX], grid: "rows" },
      matmul(mb, [...parts, gemvW8A8], [...parts, gemmW8A8]),
    ], scratch);
  }

  async linearInt4(
    x: Activations,
    xDtype: FloatDType,
    m: number,
    w: Int4Weight,
    bias: Float32Array | null,
  ): Promise<Float32Array> {
    const xl = this.#xLoader(x, xDtype, "linearInt4");
    // #linear uploads (and so checks) the weight before it builds the passes.
    const group = `const W_GROUP = ${w.groupSize}u;`;
    return await this.#linear("linearInt4", x, m, w, bias, (mb) => [
      matmul(mb, [xl, group, gemvInt4], [xl, group, wI4, gemm]),
    ]);
  }

  /** The loader for activations of `dtype`, after checking their array type. */
  #xLoader(x: Activations, dtype: FloatDType, op: string): string {
    checkActivations(x, dtype, op);
    return dtype === "f16" && this.shaderF16 ? xF16 : X_LOADERS[dtype];
  }

  release(w: Weight): void {
    const r = this.#resident.get(w);
    this.#resident.delete(w);
    const free = (res: Resident) => {
      for (const c of res.chunks) for (const b of c.buffers) b.destroy();
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
    op: string,
    x: Activations,
    m: number,
    w: Weight,
    bias: Float32Array | null,
    passes: (mb: number) => Pass[],
    scratch = (_mb: number, _kPad: number): [number, number][] => [],
  ): Promise<Float32Array> {
    if (this.#lost) throw new Error(this.#lost);
    const { n, k } = w;
    checkShapes(op, x.length, m, k, n, bias);
    const res = await this.#upload(w);
    const kPad = roundUp(k, BLOCK);
    // Activation rows per dispatch: x and y must each fit one binding.
    const block = Math.min(
      m,
      Math.floor(this.#maxBinding / (4 * n)),
      Math.floor(this.#maxBinding / (kPad * x.BYTES_PER_ELEMENT)),
      MAX_GROUPS, // quantize_x_i8 runs one workgroup per row
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
      const ps = passes(mb);
      const pipelines = await Promise.all(
        ps.map((p) => this.#pipeline(p.parts)),
      );
      const out = await this.#dispatch(
        ps,
        pipelines,
        xs,
        mb,
        res,
        w,
        bias,
        scratch(mb, kPad),
      );
      y.set(out.y, i0 * n);
      ns += out.ns;
    }
    this.kernelMs = this.#timer ? ns / 1e6 : NaN;
    return y;
  }

  #pipeline(parts: string[]): Promise<Pipeline> {
    const key = parts.join("\0");
    let p = this.#pipelines.get(key);
    if (!p) {
      const code = assemble(parts);
      const name = parts.map((s) => /^\/\/ (\w+)\.wgsl/.exec(s)?.[1])
        .filter(Boolean).join(" + ");
      const bindings = [
        ...code.replace(/\/\/.*$/gm, "").matchAll(/@binding\((\d+)\)/g),
      ].map((b) => Number(b[1]));
      p = this.device.createComputePipelineAsync({
        layout: "auto",
        compute: { module: this.device.createShaderModule({ code }) },
      }).then((pipeline) => ({ pipeline, bindings, name }), (e) => {
        this.#pipelines.delete(key);
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
    const { n } = w;
    const { what, arrays, rowp: rowParams } = gpuLayout(w);
    const rowBytes = (a: (typeof arrays)[number]) =>
      a[2] * a[0].BYTES_PER_ELEMENT;
    const allRowBytes = arrays.reduce((sum, a) => sum + rowBytes(a), 0);
    // Weight rows per binding (and dispatch), whole gemm tiles where possible.
    let per = Math.min(
      Math.floor(this.#maxBinding / Math.max(...arrays.map(rowBytes))),
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
        const buffers = arrays.map(([src, len, padLen]) => {
          const size = roundUp(rows * padLen * src.BYTES_PER_ELEMENT, 4);
          const buffer = create(size, `${what} rows ${row0}+${rows}`);
          const view = new (src.constructor as Int8ArrayConstructor)(
            buffer.getMappedRange(),
            0,
            rows * padLen,
          );
          const part = src.subarray(row0 * len, (row0 + rows) * len);
          padRows(part, rows, len, padLen, view);
          buffer.unmap();
          return buffer;
        });
        chunks.push({ buffers, row0, rows });
      }
      const rowp = create(8 * n, `${what} scales`);
      const rp = new Float32Array(rowp.getMappedRange());
      for (let j = 0; j < n; j++) rp.set(rowParams(j), 2 * j);
      rowp.unmap();
      const zeros = create(4 * n, `${what} zero bias`, false);
      res = { chunks, rowp, zeros, bytes: n * (allRowBytes + 12) };
    } catch (e) {
      failure = e;
    }
    const oom = await d.popErrorScope().catch((e: Error) => e);
    if (oom || !res) {
      for (const b of made) b.destroy();
      throw this.#error(
        `Cannot upload the ${what} (${mib(n * allRowBytes)}) to the GPU`,
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
    passes: Pass[],
    pipelines: Pipeline[],
    xs: Activations,
    mb: number,
    res: Resident,
    w: Weight,
    bias: Float32Array | null,
    scratch: [number, number][],
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
      const shared = new Map([[0, xBuf], [2, res.rowp], [3, bBuf], [4, yBuf]]);
      for (const [b, size] of scratch) shared.set(b, take(size, U.STORAGE));
      d.queue.writeBuffer(xBuf, 0, xs as ArrayBufferView<ArrayBuffer>);
      if (bias) d.queue.writeBuffer(bBuf, 0, bias as Float32Array<ArrayBuffer>);
      const params = new Uint32Array((align / 4) * res.chunks.length);
      const kb = roundUp(k, BLOCK) / BLOCK;
      res.chunks.forEach((c, s) => {
        params.set([n, kb, c.row0, c.rows, mb, ONE], (s * align) / 4);
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
      passes.forEach(({ grid }, i) => {
        const { pipeline, bindings } = pipelines[i]!;
        const layout = pipeline.getBindGroupLayout(0);
        pass.setPipeline(pipeline);
        (grid === "rows" ? res.chunks.slice(0, 1) : res.chunks).forEach(
          (c, s) => {
            const entries = bindings.map((binding) => ({
              binding,
              resource: binding === 5
                ? { buffer: pBuf, offset: s * align, size: 32 }
                : {
                  buffer: W_BINDINGS.includes(binding)
                    ? c.buffers[W_BINDINGS.indexOf(binding)]!
                    : shared.get(binding)!,
                },
            }));
            pass.setBindGroup(0, d.createBindGroup({ layout, entries }));
            const [gx, gy] = grid === "rows"
              ? [mb, 1]
              : grid === "gemv"
              ? [Math.ceil(c.rows / GEMV_ROWS), mb]
              : [Math.ceil(c.rows / TILE), Math.ceil(mb / TILE)];
            pass.dispatchWorkgroups(gx, gy);
          },
        );
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
      const kernel = pipelines.at(-1)!.name.split(" + ").at(-1);
      const what = `WebGPU ${kernel} of ${mb}×${k} by ${n}×${k}`;
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
