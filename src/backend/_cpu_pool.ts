/**
 * Runs the WebAssembly kernels on every core: weights are copied once into a
 * shared memory (an {@linkcode Arena}) and kept there while their object
 * lives (int4 codes reordered into the decode kernel's row blocks); a call
 * copies its activations in and prepares them on the calling thread (widened
 * to f32, quantized per token for W8A8, or reordered for W4A16), splits the
 * output features between the calling thread and a persistent pool of
 * workers, and copies the result out.
 *
 * Workers start on first need and stay; they are `unref()`ed while idle, so
 * they never keep a process alive. Calls run one at a time (each already uses
 * every thread).
 *
 * @module
 */

import { Worker } from "node:worker_threads";
import type { FloatDType } from "../dtype.ts";
import type {
  Activations,
  F32Weight,
  Int4Weight,
  Int8Weight,
} from "./backend.ts";
import {
  alignUp as align,
  Arena,
  kernelsModule,
  type LinearOut,
  paddedK,
  TILE_FLOATS,
} from "./_cpu_wasm.ts";
import { WORKER_SOURCE } from "./_cpu_worker.ts";

/** Below this many multiply-adds a call stays on one thread: a worker round trip costs ~0.1 ms. */
export const PARALLEL_MIN_MACS = 1 << 20;

/**
 * Output features per work unit: the kernels' weight tile, and the row block
 * of the int4 weight layout, which a thread's range must not split.
 */
const SPLIT_ALIGN = 8;

/** A weight's copy in an arena (byte offsets; zp 0: no zero points). */
interface Resident {
  arena: Arena;
  off: number;
  bytes: number;
  /** Values per row of the copy (padded). */
  kp: number;
  scales: number;
  zp: number;
  /** Not kept: larger than the whole cache budget, freed after its call. */
  transient?: boolean;
}

const GiB = 2 ** 30;

/**
 * Bytes of weight copies kept between calls: a quarter of the machine's
 * memory (when `--allow-sys` lets us ask), else 4 GiB. Beyond it the least
 * recently used copies are dropped (and made again when used), so the copies
 * cannot double a large model's footprint.
 */
function residentBudget(): number {
  try {
    const perm = Deno.permissions.querySync({
      name: "sys",
      kind: "systemMemoryInfo",
    });
    if (perm.state === "granted") {
      return Math.max(GiB, Deno.systemMemoryInfo().total / 4);
    }
  } catch {
    // not Deno, or no permission API: use the default
  }
  return 4 * GiB;
}

interface Slot {
  worker: Worker;
  arenas: Set<number>;
  pending: { resolve: () => void; reject: (e: Error) => void } | null;
  dead: boolean;
}

type Weight = Int8Weight | F32Weight | Int4Weight;

type KernelName = "linear_i8" | "linear_f32" | "linear_w8a8" | "linear_i4";

/** Counters for tests and benchmarks. */
export interface PoolStats {
  /** Workers started (alive or not). */
  workersStarted: number;
  /** Calls that were split over more than one thread. */
  parallelCalls: number;
  /** Shared memories in use. */
  arenas: number;
  /** Weights resident in them. */
  residentWeights: number;
}

class WasmPool {
  readonly #module: WebAssembly.Module;
  readonly #arenas: Arena[] = [];
  readonly #slots: Slot[] = [];
  readonly #resident = new WeakMap<object, Resident>();
  // Least recently used first; the weights are held weakly.
  readonly #lru = new Map<Resident, WeakRef<object>>();
  #budget = residentBudget();
  #residentBytes = 0;
  // A weight object that is collected without release() gives its copy back.
  readonly #finalizer = new FinalizationRegistry<Resident>((r) => {
    this.#exclusive(() => this.#drop(r));
  });
  #queue: Promise<unknown> = Promise.resolve();
  readonly stats: PoolStats = {
    workersStarted: 0,
    parallelCalls: 0,
    arenas: 0,
    residentWeights: 0,
  };

  constructor(module: WebAssembly.Module) {
    this.#module = module;
  }

  /** Runs `fn` after every call before it has finished. */
  #exclusive<T>(fn: () => T | Promise<T>): Promise<T> {
    const p = this.#queue.then(fn);
    this.#queue = p.catch(() => {});
    return p;
  }

  /** Reserves bytes in the first arena with room, opening one if needed. */
  #alloc(bytes: number, prefer?: Arena): { arena: Arena; off: number } | null {
    const order = prefer ? [prefer] : this.#arenas;
    for (const arena of order) {
      const off = arena.alloc(bytes);
      if (off >= 0) return { arena, off };
    }
    if (prefer) return null;
    let arena: Arena;
    try {
      arena = new Arena(this.#arenas.length, this.#module);
    } catch {
      return null; // no address space left for another memory
    }
    const off = arena.alloc(bytes);
    if (off < 0) return null;
    this.#arenas.push(arena);
    this.stats.arenas = this.#arenas.length;
    return { arena, off };
  }

  /** Bytes of weight copies kept between calls (settable for tests). */
  get budget(): number {
    return this.#budget;
  }
  set budget(bytes: number) {
    this.#budget = bytes;
  }

  /** Room for a new copy: drops the least recently used ones over budget. */
  #place(
    bytes: number,
  ): { arena: Arena; off: number; transient: boolean } | null {
    const transient = bytes > this.#budget;
    if (!transient) {
      for (const [r, ref] of this.#lru) {
        if (this.#residentBytes + bytes <= this.#budget) break;
        const w = ref.deref();
        if (w) {
          this.#resident.delete(w);
          this.#finalizer.unregister(w);
        }
        this.#drop(r);
      }
    }
    const got = this.#alloc(bytes);
    return got && { ...got, transient };
  }

  /** Forgets a kept copy; true if it was kept (then free its memory). */
  #forget(r: Resident): boolean {
    if (!this.#lru.delete(r)) return false;
    this.#residentBytes -= r.bytes;
    this.stats.residentWeights--;
    return true;
  }

  #drop(r: Resident): void {
    if (this.#forget(r)) r.arena.free(r.off, r.bytes);
  }

  /** The weight's copy: kept from an earlier call, or made now. */
  #copyOf(w: Weight): Resident | null {
    const kept = this.#resident.get(w);
    if (kept) {
      this.#lru.delete(kept);
      this.#lru.set(kept, new WeakRef(w));
      return kept;
    }
    const { n, k } = w;
    if ("packed" in w) {
      // The codes [n, k/2] in the blocked layout of the decode kernel
      // (interleave_int4 in wasm/kernels.c; k is a multiple of 32, so rows
      // need no padding), reordered from a staging copy in the same arena.
      const g = n * (k / w.groupSize);
      const codes = n * k / 2;
      return this.#copy(
        w,
        codes,
        k,
        w.scales.subarray(0, g),
        w.zeroPoints?.subarray(0, g) ?? null,
        (arena, off) => {
          const stage = this.#alloc(codes, arena);
          if (!stage) return false;
          new Uint8Array(arena.buffer, stage.off, codes).set(
            w.packed.subarray(0, codes),
          );
          arena.exports.interleave_int4(stage.off, n, k / 2, off);
          arena.free(stage.off, codes);
          return true;
        },
      );
    }
    const kp = paddedK(k);
    const [values, size, scales, zps] = "q" in w
      ? [w.q, 1, w.scales.subarray(0, n), w.zeroPoints?.subarray(0, n) ?? null]
      : [w.data, 4, new Float32Array(0), null];
    return this.#copy(w, size * n * kp, kp, scales, zps, (arena, off) => {
      copyRows(
        new Uint8Array(arena.buffer, off, size * n * kp),
        bytesOf(values.subarray(0, n * k)),
        n,
        size * k,
        size * kp,
      );
      return true;
    });
  }

  /**
   * Places a new copy: `codes` bytes of weight values written by `write`
   * (false: it found no room), then the scales, then the zero points if any.
   */
  #copy(
    w: Weight,
    codes: number,
    kp: number,
    scales: Float32Array,
    zps: Int8Array | Uint8Array | null,
    write: (arena: Arena, off: number) => boolean,
  ): Resident | null {
    const scalesAt = align(codes);
    const zpAt = scalesAt + align(scales.byteLength);
    const bytes = zpAt + (zps?.length ?? 0);
    const got = this.#place(bytes);
    if (!got) return null;
    const { arena, off, transient } = got;
    if (!write(arena, off)) {
      arena.free(off, bytes);
      return null;
    }
    const u8 = new Uint8Array(arena.buffer, off, bytes);
    u8.set(bytesOf(scales), scalesAt);
    if (zps) u8.set(bytesOf(zps), zpAt);
    const r: Resident = {
      arena,
      off,
      bytes,
      kp,
      scales: off + scalesAt,
      zp: zps ? off + zpAt : 0,
      transient,
    };
    if (transient) return r;
    this.#resident.set(w, r);
    this.#lru.set(r, new WeakRef(w));
    this.#finalizer.register(w, r, w);
    this.#residentBytes += r.bytes;
    this.stats.residentWeights++;
    return r;
  }

  /** Frees a weight's copy (after the calls already queued). */
  release(w: object): void {
    const r = this.#resident.get(w);
    if (!r) return;
    this.#resident.delete(w);
    this.#finalizer.unregister(w);
    // Counted as gone now; its memory is freed once the queued calls are done.
    if (this.#forget(r)) this.#exclusive(() => r.arena.free(r.off, r.bytes));
  }

  /**
   * `linearInt8` on the kernels, or null when the weight cannot be placed in
   * a shared memory (the caller then uses the reference kernel).
   */
  linearInt8(
    x: Activations,
    xDtype: FloatDType,
    m: number,
    w: Int8Weight,
    bias: Float32Array | null,
    threads: number,
  ): Promise<Float32Array | null> {
    return this.#call(w, x, m, bias, threads, "linear_i8", (r) => ({
      ...floatRows(x, xDtype, m, w.k, r.kp),
      args: (
        io,
        out,
        tile,
      ) => [io.x, m, r.kp, r.off, r.zp, r.scales, ...out, tile],
    }));
  }

  /** `linearF32` on the kernels, or null as above. */
  linearF32(
    x: Float32Array,
    m: number,
    w: F32Weight,
    bias: Float32Array | null,
    threads: number,
  ): Promise<Float32Array | null> {
    return this.#call(w, x, m, bias, threads, "linear_f32", (r) => ({
      ...floatRows(x, "f32", m, w.k, r.kp),
      args: (io, out) => [io.x, m, r.kp, r.off, ...out],
    }));
  }

  /**
   * `linearW8A8` on the kernels (the activations quantized per token here,
   * then exact int32 dot products), or null as above. Needs k ≤ 65536.
   */
  linearW8A8(
    x: Float32Array,
    m: number,
    w: Int8Weight,
    bias: Float32Array | null,
    threads: number,
  ): Promise<Float32Array | null> {
    return this.#call(w, x, m, bias, threads, "linear_w8a8", (r) => {
      // io.x holds the codes (i16 [m, kp]), then s_x [m], then Σq_x [m].
      const xs = align(2 * m * r.kp);
      const xsum = xs + align(4 * m);
      return {
        bytes: xsum + align(4 * m),
        stage: true,
        fill(arena, io) {
          arena.exports.quantize_tokens(
            io.stage,
            m,
            w.k,
            r.kp,
            io.x,
            io.x + xs,
            io.x + xsum,
          );
          return 0;
        },
        args: (io, out) => [
          io.x,
          io.x + xs,
          io.x + xsum,
          m,
          r.kp,
          r.off,
          r.zp,
          r.scales,
          ...out,
        ],
      };
    });
  }

  /** `linearInt4` on the kernels, or null as above. */
  linearInt4(
    x: Activations,
    xDtype: FloatDType,
    m: number,
    w: Int4Weight,
    bias: Float32Array | null,
    threads: number,
  ): Promise<Float32Array | null> {
    const { k, groupSize } = w;
    return this.#call(w, x, m, bias, threads, "linear_i4", (r) => ({
      bytes: 4 * m * k,
      stage: true,
      fill: (arena, io) =>
        arena.exports.prepare_int4_x(io.stage, KINDS[xDtype], m, k, io.x),
      args: (io, out, tile, fast) => [
        io.x,
        m,
        k,
        r.off,
        r.zp,
        r.scales,
        groupSize,
        ...out,
        tile,
        fast ? 0 : 1,
      ],
    }));
  }

  /**
   * Runs `fn` on the weight's copy, or returns null when the weight or the
   * call's buffers find no room in a shared memory.
   */
  #call(
    w: Weight,
    x: Activations,
    m: number,
    bias: Float32Array | null,
    threads: number,
    fn: KernelName,
    kernel: (r: Resident) => KernelCall,
  ): Promise<Float32Array | null> {
    return this.#exclusive(async () => {
      const r = this.#copyOf(w);
      if (!r) return null;
      const { n, k } = w;
      const { arena } = r;
      const call = kernel(r);
      const units = Math.ceil(n / SPLIT_ALIGN);
      const t = m * n * k < PARALLEL_MIN_MACS
        ? 1
        : 1 + this.#ensureWorkers(Math.min(threads, units) - 1);
      const xBytes = align(call.bytes);
      const staged = call.stage ? x.BYTES_PER_ELEMENT * m * k : 0;
      const stageBytes = align(staged);
      const yBytes = align(4 * m * n);
      const biasBytes = bias ? align(4 * n) : 0;
      const bytes = xBytes + stageBytes + yBytes + biasBytes +
        t * 4 * TILE_FLOATS;
      const got = this.#alloc(bytes, arena);
      if (!got) {
        if (r.transient) arena.free(r.off, r.bytes);
        return null;
      }
      const base = got.off;
      try {
        const io: CallIo = {
          x: base,
          stage: base + xBytes,
          y: base + xBytes + stageBytes,
          bias: bias ? base + xBytes + stageBytes + yBytes : 0,
          tiles: base + xBytes + stageBytes + yBytes + biasBytes,
        };
        if (staged) {
          new Uint8Array(arena.buffer, io.stage, staged).set(
            bytesOf(x.subarray(0, m * k)),
          );
        }
        const filled = call.fill(arena, io);
        if (bias) {
          new Float32Array(arena.buffer, io.bias, n).set(bias.subarray(0, n));
        }
        await this.#run(
          arena,
          fn,
          t,
          n,
          (j0, j1, th) =>
            call.args(
              io,
              [io.bias, io.y, n, j0, j1],
              io.tiles + th * 4 * TILE_FLOATS,
              filled,
            ),
        );
        return new Float32Array(arena.buffer, io.y, m * n).slice();
      } finally {
        arena.free(base, bytes);
        if (r.transient) arena.free(r.off, r.bytes);
      }
    });
  }

  /** Splits [0, n) into `t` ranges; range 0 runs here, the rest on workers. */
  async #run(
    arena: Arena,
    fn: KernelName,
    t: number,
    n: number,
    args: (j0: number, j1: number, thread: number) => number[],
  ): Promise<void> {
    const units = Math.ceil(n / SPLIT_ALIGN);
    const bounds = Array.from(
      { length: t + 1 },
      (_, i) => Math.min(n, Math.round((units * i) / t) * SPLIT_ALIGN),
    );
    const waits: Promise<void>[] = [];
    if (t > 1) {
      this.stats.parallelCalls++;
      for (let i = 1; i < t; i++) {
        waits.push(
          this.#post(
            this.#slots[i - 1]!,
            arena,
            fn,
            args(bounds[i]!, bounds[i + 1]!, i),
          ),
        );
      }
    }
    let failure: unknown = null;
    try {
      (arena.exports[fn] as (...a: number[]) => void)(
        ...args(bounds[0]!, bounds[1]!, 0),
      );
    } catch (e) {
      failure = e;
    }
    const results = await Promise.allSettled(waits);
    if (failure) throw failure;
    for (const res of results) if (res.status === "rejected") throw res.reason;
  }

  /**
   * Starts workers until `count` run; returns how many do (fewer where this
   * runtime cannot start one: the call then uses fewer threads).
   */
  #ensureWorkers(count: number): number {
    if (count <= 0) return 0;
    try {
      for (let i = 0; i < this.#slots.length; i++) {
        if (this.#slots[i]!.dead) this.#slots[i] = this.#startWorker();
      }
      while (this.#slots.length < count) this.#slots.push(this.#startWorker());
    } catch {
      this.#slots.splice(
        0,
        this.#slots.length,
        ...this.#slots.filter((s) => !s.dead),
      );
    }
    return Math.min(count, this.#slots.length);
  }

  #startWorker(): Slot {
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    const slot: Slot = {
      worker,
      arenas: new Set(),
      pending: null,
      dead: false,
    };
    const fail = (e: Error) => {
      slot.dead = true;
      slot.pending?.reject(e);
      slot.pending = null;
    };
    worker.on("message", (msg: string | null) => {
      const p = slot.pending;
      slot.pending = null;
      worker.unref();
      if (msg === null) p?.resolve();
      else p?.reject(new Error(`CPU kernel worker failed: ${msg}`));
    });
    worker.on("error", (e: Error) => fail(e));
    worker.on("exit", () => fail(new Error("CPU kernel worker exited")));
    worker.postMessage(this.#module);
    worker.unref();
    this.stats.workersStarted++;
    return slot;
  }

  #post(
    slot: Slot,
    arena: Arena,
    fn: KernelName,
    args: number[],
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      if (slot.dead) {
        reject(new Error("CPU kernel worker is not running"));
        return;
      }
      slot.pending = { resolve, reject };
      const first = !slot.arenas.has(arena.id);
      slot.arenas.add(arena.id);
      slot.worker.ref();
      slot.worker.postMessage({
        arena: arena.id,
        memory: first ? arena.memory : undefined,
        fn,
        args,
      });
    });
  }
}

/** Where a call's buffers lie in the arena (byte offsets; bias 0: none). */
interface CallIo {
  /** The activations as the kernel reads them. */
  x: number;
  /** A raw copy of the caller's activations, for a conversion into `x`. */
  stage: number;
  y: number;
  bias: number;
  /** Per-thread scratch, 4 · TILE_FLOATS bytes each. */
  tiles: number;
}

/** How a kernel call gets its activations, and the arguments it takes. */
interface KernelCall {
  /** Bytes at `io.x`. */
  bytes: number;
  /** Whether the caller's activations are copied, as they are, to `io.stage`. */
  stage: boolean;
  /** Fills `io.x` on the calling thread; returns what `args` gets as `filled`. */
  fill(arena: Arena, io: CallIo): number;
  /** The kernel's arguments, given the ones all kernels end with, and scratch. */
  args(io: CallIo, out: LinearOut, tile: number, filled: number): number[];
}

/** Kernel codes of the activation dtypes. */
const KINDS: Record<FloatDType, number> = { f32: 0, f16: 1, bf16: 2 };

/**
 * Float activations as f32 rows of stride `kp` (pad zeroed): copied, or
 * staged and widened in the kernels.
 */
function floatRows(
  x: Activations,
  xDtype: FloatDType,
  m: number,
  k: number,
  kp: number,
): Omit<KernelCall, "args"> {
  const wide = xDtype !== "f32";
  return {
    bytes: 4 * m * kp,
    stage: wide,
    fill(arena, io) {
      if (wide) {
        arena.exports.widen_rows(io.stage, KINDS[xDtype], m, k, io.x, kp);
      } else {
        copyRows(
          new Uint8Array(arena.buffer, io.x, 4 * m * kp),
          bytesOf(x.subarray(0, m * k)),
          m,
          4 * k,
          4 * kp,
        );
      }
      return 0;
    },
  };
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Copies `rows` rows of `len` bytes to rows of `stride` bytes, zeroing the pad. */
function copyRows(
  dst: Uint8Array,
  src: Uint8Array,
  rows: number,
  len: number,
  stride: number,
): void {
  if (len === stride) {
    dst.set(src.subarray(0, rows * len));
    return;
  }
  for (let i = 0; i < rows; i++) {
    dst.set(src.subarray(i * len, (i + 1) * len), i * stride);
    dst.fill(0, i * stride + len, (i + 1) * stride);
  }
}

let pool: WasmPool | null | undefined;

/** The process-wide pool, or null where the kernels cannot run. */
export function wasmPool(): WasmPool | null {
  if (pool === undefined) {
    const module = kernelsModule();
    pool = module ? new WasmPool(module) : null;
  }
  return pool;
}

export type { WasmPool };
