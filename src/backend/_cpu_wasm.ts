/**
 * The compiled WebAssembly kernels (wasm/kernels.c) and the shared memories
 * ("arenas") they run on, with a small first-fit allocator per arena.
 *
 * @module
 */

import {
  KERNELS_RELAXED_WASM_BASE64,
  KERNELS_WASM_BASE64,
} from "./generated/cpu_kernels_wasm.ts";

/**
 * The arguments every linear kernel ends with: bias (0: none) and y, then
 * the output features [j0, j1) of y's n that this call computes.
 */
export type LinearOut = [
  bias: number,
  y: number,
  n: number,
  j0: number,
  j1: number,
];

/** The functions wasm/kernels.c exports (pointers are byte offsets). */
export interface KernelExports {
  widen_rows(
    src: number,
    kind: number,
    rows: number,
    cols: number,
    dst: number,
    stride: number,
  ): number;
  fits_scaled(x: number, count: number): number;
  read_bytes(src: number, bytes: number): number;
  linear_i8(
    ...args: [
      x: number,
      m: number,
      kp: number,
      q: number,
      zp: number,
      scales: number,
      ...LinearOut,
      buf: number,
      exact: number,
    ]
  ): void;
  linear_f32(
    ...args: [x: number, m: number, kp: number, w: number, ...LinearOut]
  ): void;
  quantize_rows(
    src: number,
    kind: number,
    rows: number,
    cols: number,
    q: number,
    scales: number,
  ): number;
  quantize_tokens(
    x: number,
    m: number,
    k: number,
    kp: number,
    xq: number,
    xs: number,
    xsum: number,
  ): void;
  linear_w8a8(
    ...args: [
      xq: number,
      xs: number,
      xsum: number,
      m: number,
      kp: number,
      q: number,
      zp: number,
      scales: number,
      ...LinearOut,
    ]
  ): void;
  interleave_int4(src: number, n: number, kb: number, dst: number): void;
  prepare_int4_x(
    src: number,
    kind: number,
    m: number,
    k: number,
    dst: number,
  ): number;
  linear_i4(
    ...args: [
      x: number,
      m: number,
      k: number,
      w: number,
      zp: number,
      scales: number,
      groupSize: number,
      ...LinearOut,
      buf: number,
      exact: number,
    ]
  ): void;
}

/** Floats of per-thread scratch `linear_i8` and `linear_i4` need for m > 1 (NB · KC). */
export const TILE_FLOATS = 8 * 512;

/** Activation and weight rows are padded to a multiple of this many values. */
export const ROW_ALIGN = 16;

/** The padded row length the kernels use for `k` input features. */
export function paddedK(k: number): number {
  return Math.max(ROW_ALIGN, Math.ceil(k / ROW_ALIGN) * ROW_ALIGN);
}

const PAGE = 65536;
const MAX_PAGES = 65536; // wasm32: 4 GiB
const ALIGN = 64; // a cache line

/** `bytes` rounded up to whole cache lines: how the kernels' buffers are laid out in an arena. */
export function alignUp(bytes: number): number {
  return Math.ceil(bytes / ALIGN) * ALIGN;
}

/** The bytes a block of `bytes` takes: whole cache lines, at least one. */
function blockSize(bytes: number): number {
  return Math.max(ALIGN, alignUp(bytes));
}

/**
 * The two builds of wasm/kernels.c: `relaxed` uses relaxed SIMD
 * (`f32x4.relaxed_madd`) where the runtime validates it, `simd128` is the
 * plain SIMD128 build, the fallback. Integer kernels are the same code in
 * both; float sums may round differently (fused or not), within tolerance.
 */
export type WasmBuild = "relaxed" | "simd128";

const compiled = new Map<WasmBuild, WebAssembly.Module | null>();

function decode(base64: string): Uint8Array<ArrayBuffer> {
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

/**
 * The compiled kernels of one build (default: the best this runtime runs),
 * or null where it cannot compile them (no WebAssembly, no SIMD, or no
 * relaxed SIMD for the relaxed build).
 */
export function kernelsModule(
  build: WasmBuild = bestBuild(),
): WebAssembly.Module | null {
  let module = compiled.get(build);
  if (module === undefined) {
    try {
      const bytes = decode(
        build === "relaxed" ? KERNELS_RELAXED_WASM_BASE64 : KERNELS_WASM_BASE64,
      );
      module = WebAssembly.validate(bytes)
        ? new WebAssembly.Module(bytes)
        : null;
    } catch {
      module = null;
    }
    compiled.set(build, module);
  }
  return module;
}

/** `relaxed` where the runtime compiles the relaxed build, else `simd128`. */
export function bestBuild(): WasmBuild {
  return kernelsModule("relaxed") ? "relaxed" : "simd128";
}

/**
 * One shared `WebAssembly.Memory` (up to 4 GiB) with the kernels
 * instantiated on it, and a first-fit allocator over it. Offsets are
 * 64-byte aligned.
 */
export class Arena {
  /** Its index in the pool (what workers key their instances by). */
  readonly id: number;
  /** The shared memory. */
  readonly memory: WebAssembly.Memory;
  /** The kernels, bound to this memory, for the calling thread. */
  readonly exports: KernelExports;
  #top: number;
  #free: { off: number; size: number }[] = [];

  constructor(id: number, module: WebAssembly.Module, initialBytes = PAGE) {
    this.id = id;
    this.memory = new WebAssembly.Memory({
      initial: Math.ceil(initialBytes / PAGE),
      maximum: MAX_PAGES,
      shared: true,
    });
    const instance = new WebAssembly.Instance(module, {
      env: { memory: this.memory },
    });
    this.exports = instance.exports as unknown as KernelExports;
    const heapBase = (instance.exports.__heap_base as WebAssembly.Global)
      .value as number;
    this.#top = Math.max(ALIGN, Math.ceil(heapBase / ALIGN) * ALIGN);
  }

  /** The current buffer (a new object after each growth). */
  get buffer(): SharedArrayBuffer {
    return this.memory.buffer as SharedArrayBuffer;
  }

  /** Reserves `bytes`; returns the offset, or -1 when 4 GiB would not do. */
  alloc(bytes: number): number {
    const size = blockSize(bytes);
    for (let i = 0; i < this.#free.length; i++) {
      const hole = this.#free[i]!;
      if (hole.size >= size) {
        const off = hole.off;
        if (hole.size === size) this.#free.splice(i, 1);
        else {
          hole.off += size;
          hole.size -= size;
        }
        return off;
      }
    }
    const end = this.#top + size;
    if (end > MAX_PAGES * PAGE) return -1;
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      // Grow by at least a quarter so that a growing sequence of weights
      // does not grow (and re-map) the memory once per weight.
      const want = Math.max(end, Math.min(MAX_PAGES * PAGE, have * 1.25));
      try {
        this.memory.grow(Math.ceil((want - have) / PAGE));
      } catch {
        try {
          this.memory.grow(Math.ceil((end - have) / PAGE));
        } catch {
          return -1;
        }
      }
    }
    const off = this.#top;
    this.#top = end;
    return off;
  }

  /** Returns a block from {@linkcode Arena.alloc} (`bytes` as asked then). */
  free(off: number, bytes: number): void {
    const size = blockSize(bytes);
    const list = this.#free;
    let i = 0;
    while (i < list.length && list[i]!.off < off) i++;
    list.splice(i, 0, { off, size });
    // Coalesce with the neighbours, then give a trailing hole back to the top.
    if (i + 1 < list.length && off + size === list[i + 1]!.off) {
      list[i]!.size += list[i + 1]!.size;
      list.splice(i + 1, 1);
    }
    if (i > 0 && list[i - 1]!.off + list[i - 1]!.size === off) {
      list[i - 1]!.size += list[i]!.size;
      list.splice(i, 1);
      i--;
    }
    const last = list[list.length - 1];
    if (last && last.off + last.size === this.#top) {
      this.#top = last.off;
      list.pop();
    }
  }
}
