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
  Int8WeightArrays,
} from "./backend.ts";
import {
  alignUp as align,
  Arena,
  bestBuild,
  kernelsModule,
  type LinearOut,
  paddedK,
  TILE_FLOATS,
  type WasmBuild,
} from "./_cpu_wasm.ts";
import {
  CONTROL_BYTES,
  CONTROL_TEXT,
  CTL,
  KERNEL_NAMES,
  WORKER_SOURCE,
} from "./_cpu_worker.ts";

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
  /** Arenas sent to the worker. */
  arenas: Set<number>;
  /** Arenas the worker has instantiated (it answered a job on them). */
  ready: Set<number>;
  pending: { resolve: () => void; reject: (e: Error) => void } | null;
  dead: boolean;
  /** The control words shared with the worker (see _cpu_worker.ts). */
  ctl: Int32Array;
  text: Uint8Array;
  /** The number of the last job sent through the control words. */
  job: number;
}

type Weight = Int8Weight | F32Weight | Int4Weight;

type KernelName = typeof KERNEL_NAMES[number];

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

// Worker threads still running when the process exits race its teardown: the
// threads end while exit() runs the libraries' destructors, and glibc's heap
// breaks ("corrupted size vs. prev_size", seen at the end of test runs). So
// before the event loop ends, every live worker is terminated and kept
// referenced until its thread has exited; the loop then ends for real.
const liveSlots = new Set<Slot>();
let exitHookInstalled = false;

function stopWorkersBeforeExit(): void {
  for (const slot of liveSlots) {
    // A worker still busy with a posted job is referenced, so the loop waits
    // for its answer and this runs again; an idle one is stopped now.
    slot.worker.ref();
    if (slot.pending === null) {
      liveSlots.delete(slot);
      void slot.worker.terminate();
    }
  }
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

  /** Which build of the kernels this pool runs. */
  readonly build: WasmBuild;

  constructor(module: WebAssembly.Module, build: WasmBuild) {
    this.#module = module;
    this.build = build;
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
    if ("q" in w) {
      const pinned = this.#pinned.get(w.q);
      if (pinned && pinned.kp === w.k) return pinned;
    }
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

  /**
   * Makes the weight's copy now (after the calls already queued), so that
   * its first call does not pay for it; false when it finds no room (the
   * call will then use the reference kernel, or try again).
   */
  prepare(w: Weight): Promise<boolean> {
    return this.#exclusive(() => {
      const r = this.#copyOf(w);
      if (r?.transient) r.arena.free(r.off, r.bytes);
      return r !== null && !r.transient;
    });
  }

  /**
   * Starts the workers a call on `threads` threads uses, instantiates the
   * kernels on each, and runs every kernel there and here on small inputs
   * until V8 has optimised them (its first, baseline code runs them at about
   * a third of the speed): the first real call then runs at the steady
   * state. Queued like a call; idempotent per thread count.
   */
  warm(threads: number): Promise<void> {
    return this.#exclusive(async () => {
      const t = 1 + this.#ensureWorkers(threads - 1);
      if (t <= this.#warmed) return;
      const arena = this.#arenas[0] ?? this.#alloc(64, undefined)?.arena;
      if (!arena) return;
      const plan = warmPlan();
      const got = arena.alloc(plan.bytes * t);
      if (got < 0) return;
      try {
        new Uint8Array(arena.buffer, got, plan.bytes * t).fill(0);
        const waits: Promise<void>[] = [];
        for (let i = 0; i < t; i++) {
          const base = got + i * plan.bytes;
          const calls = plan.calls(base);
          if (i > 0) {
            waits.push(this.#postAll(this.#slots[i - 1]!, arena, calls));
          }
        }
        // Settled now, not after tierUp: a worker stopped meanwhile (at exit)
        // must not leave a rejection without a handler.
        const settled = Promise.allSettled(waits);
        await tierUp(arena, plan.calls(got));
        await settled;
        this.#warmed = t;
      } finally {
        arena.free(got, plan.bytes * t);
      }
    });
  }

  #warmed = 0;

  /**
   * Read bandwidth of this machine as the kernels see it, in bytes per
   * second: `threads` threads (this one and workers) each stream their share
   * of a `bytes` buffer in shared memory with 16-byte loads (read_bytes in
   * wasm/kernels.c); the median of `reps` passes after one untimed pass. The
   * benchmarks print achieved weight bandwidth next to it. Null when the
   * buffer finds no room.
   */
  readBandwidth(
    threads: number,
    bytes = 512 * 2 ** 20,
    reps = 7,
  ): Promise<number | null> {
    return this.#exclusive(async () => {
      const got = this.#alloc(bytes + 64);
      if (!got) return null;
      const { arena, off } = got;
      try {
        new Uint8Array(arena.buffer, off, bytes).fill(1);
        const t = 1 + this.#ensureWorkers(threads - 1);
        const share = Math.floor(bytes / t / 64) * 64;
        const times: number[] = [];
        for (let r = 0; r <= reps; r++) {
          const t0 = performance.now();
          const waits: Promise<void>[] = [];
          for (let i = 1; i < t; i++) {
            waits.push(
              this.#post(this.#slots[i - 1]!, arena, "read_bytes", [
                off + i * share,
                share,
              ]),
            );
          }
          arena.exports.read_bytes(off, share);
          await Promise.all(waits);
          if (r > 0) times.push(performance.now() - t0);
        }
        times.sort((a, b) => a - b);
        return (share * t) / (times[times.length >> 1]! / 1000);
      } finally {
        arena.free(off, bytes + 64);
      }
    });
  }

  async #postAll(
    slot: Slot,
    arena: Arena,
    calls: [KernelName, number[]][],
  ): Promise<void> {
    for (const [fn, args] of calls) {
      if (this.#signal(slot, arena, fn, args)) await this.#join(slot);
      else await this.#post(slot, arena, fn, args);
    }
  }

  // Copies handed over by adopt(), keyed by the view of their codes; freed
  // when that view is collected.
  readonly #pinned = new WeakMap<Int8Array, Resident>();
  readonly #pinFinalizer = new FinalizationRegistry<Resident>((r) => {
    this.#exclusive(() => r.arena.free(r.off, r.bytes));
  });

  /**
   * Hands an int8 weight's copy over to its owner, so that the weight lives
   * once: returns views of the copy in shared memory holding exactly
   * `w.q`, `w.scales` and `w.zeroPoints` (rows unpadded: k a multiple of
   * 16), which the owner puts in place of its arrays. The copy is then
   * pinned — no longer counted in the cache budget, never dropped by it or
   * by release() — and freed when the codes' view is garbage-collected; a
   * weight whose `q` is that view runs on it without a copy. Null where it
   * cannot (padded rows, no room, larger than the budget).
   */
  adopt(
    w: Int8Weight,
  ): Promise<Int8WeightArrays | null> {
    return this.#exclusive(() => {
      if (paddedK(w.k) !== w.k) return null;
      if (this.#pinned.has(w.q)) {
        return { q: w.q, scales: w.scales, zeroPoints: w.zeroPoints };
      }
      const r = this.#copyOf(w);
      if (!r) return null;
      if (r.transient) {
        r.arena.free(r.off, r.bytes);
        return null;
      }
      this.#resident.delete(w);
      this.#finalizer.unregister(w);
      this.#forget(r);
      const { buffer } = r.arena, { n, k } = w;
      const q = new Int8Array(buffer, r.off, n * k);
      const views = {
        q,
        scales: new Float32Array(buffer, r.scales, n),
        zeroPoints: r.zp ? new Int8Array(buffer, r.zp, n) : null,
      };
      this.#pinned.set(q, r);
      this.#pinFinalizer.register(q, r);
      return views;
    });
  }

  /**
   * Room for an int8 weight [n, k] (k a multiple of 16) made directly in
   * shared memory, for a loader that reads or quantizes into it so that no
   * second copy is ever made: views for the codes, the scales and (when
   * `asymmetric`) the zero points, zero-filled, pinned like an adopted copy
   * (freed when the codes' view is garbage-collected). A weight whose arrays
   * are these views runs without a copy. Null where it cannot.
   */
  allocInt8(
    n: number,
    k: number,
    asymmetric: boolean,
  ): Promise<Int8WeightArrays | null> {
    return this.#exclusive(() => {
      if (paddedK(k) !== k || n <= 0) return null;
      const scalesAt = align(n * k);
      const zpAt = scalesAt + align(4 * n);
      const bytes = zpAt + (asymmetric ? n : 0);
      const got = this.#alloc(bytes);
      if (!got) return null;
      const { arena, off } = got;
      new Uint8Array(arena.buffer, off, bytes).fill(0);
      const r: Resident = {
        arena,
        off,
        bytes,
        kp: k,
        scales: off + scalesAt,
        zp: asymmetric ? off + zpAt : 0,
      };
      const q = new Int8Array(arena.buffer, off, n * k);
      this.#pinned.set(q, r);
      this.#pinFinalizer.register(q, r);
      return {
        q,
        scales: new Float32Array(arena.buffer, r.scales, n),
        zeroPoints: asymmetric ? new Int8Array(arena.buffer, r.zp, n) : null,
      };
    });
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
        fast,
      ) => [io.x, m, r.kp, r.off, r.zp, r.scales, ...out, tile, fast ? 0 : 1],
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
    const signalled: Slot[] = [];
    if (t > 1) {
      this.stats.parallelCalls++;
      for (let i = 1; i < t; i++) {
        const slot = this.#slots[i - 1]!;
        const a = args(bounds[i]!, bounds[i + 1]!, i);
        if (this.#signal(slot, arena, fn, a)) signalled.push(slot);
        else waits.push(this.#post(slot, arena, fn, a));
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
    for (const slot of signalled) waits.push(this.#join(slot));
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

  /**
   * Sends a job through the slot's control words, if the worker has the
   * arena and nothing else in flight; false: use a message instead.
   */
  #signal(slot: Slot, arena: Arena, fn: KernelName, args: number[]): boolean {
    if (slot.dead || slot.pending || !slot.ready.has(arena.id)) return false;
    if (args.length > CONTROL_TEXT / 4 - CTL.args) return false;
    const { ctl } = slot;
    ctl[CTL.arena] = arena.id;
    ctl[CTL.fn] = KERNEL_NAMES.indexOf(fn);
    ctl[CTL.argc] = args.length;
    ctl.set(args, CTL.args);
    slot.job = (slot.job + 1) | 0;
    Atomics.store(ctl, CTL.job, slot.job);
    Atomics.notify(ctl, CTL.job);
    return true;
  }

  /**
   * Waits for a job sent by #signal: blocking for up to a few milliseconds
   * (a decode-sized job is done by then, and blocking wakes fastest), then
   * yielding to the event loop between checks, so that a worker's exit is
   * noticed and long jobs do not block the caller's other work.
   */
  async #join(slot: Slot): Promise<void> {
    const { ctl } = slot, job = slot.job;
    const until = performance.now() + 5;
    while (Atomics.load(ctl, CTL.done) !== job) {
      if (performance.now() < until) {
        Atomics.wait(ctl, CTL.done, (job - 1) | 0, 1);
        continue;
      }
      await new Promise((r) => setTimeout(r, 0));
      if (slot.dead && Atomics.load(ctl, CTL.done) !== job) {
        throw new Error("CPU kernel worker exited");
      }
    }
    if (ctl[CTL.status] !== 0) {
      const end = slot.text.indexOf(0);
      const msg = new TextDecoder().decode(
        slot.text.slice(0, end < 0 ? undefined : end),
      );
      throw new Error(`CPU kernel worker failed: ${msg}`);
    }
  }

  #startWorker(): Slot {
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    if (!exitHookInstalled) {
      globalThis.addEventListener("beforeunload", stopWorkersBeforeExit);
      exitHookInstalled = true;
    }
    const control = new SharedArrayBuffer(CONTROL_BYTES);
    const slot: Slot = {
      worker,
      arenas: new Set(),
      ready: new Set(),
      pending: null,
      dead: false,
      ctl: new Int32Array(control, 0, CONTROL_TEXT / 4),
      text: new Uint8Array(control, CONTROL_TEXT),
      job: 0,
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
    liveSlots.add(slot);
    worker.on("exit", () => {
      liveSlots.delete(slot);
      fail(new Error("CPU kernel worker exited"));
    });
    worker.postMessage({ module: this.#module, control });
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
      slot.pending = {
        resolve: () => {
          slot.ready.add(arena.id);
          resolve();
        },
        reject,
      };
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

/**
 * The warm-up's calls on one thread's block of zeroed scratch: every kernel
 * on every path it has (one row, a few rows, many rows; exact and scaled),
 * WARM_ROUNDS times on a small shape, which is enough calls and loop
 * iterations for V8 to optimise each function (measured: the first
 * 4096 × 4096 call after it runs at the steady state).
 */
function warmPlan(): {
  bytes: number;
  calls(base: number): [KernelName, number[]][];
} {
  const k = 256, n = 16, m = 20;
  const x = 0, y = x + 4 * m * k, q = y + 4 * m * n, scales = q + n * k;
  const xq = scales + 4 * n * (k / 32), xs = xq + 2 * m * k, xsum = xs + 4 * m;
  const tile = xsum + 4 * m, bytes = tile + 4 * TILE_FLOATS;
  return {
    bytes,
    calls(b) {
      const out: [KernelName, number[]][] = [];
      for (let round = 0; round < WARM_ROUNDS; round++) {
        for (const rows of [1, 4, m]) {
          out.push(["widen_rows", [b + q, 1, rows, k, b + x, k]]);
          for (const exact of [0, 1]) {
            out.push([
              "linear_i8",
              [
                b + x,
                rows,
                k,
                b + q,
                0,
                b + scales,
                0,
                b + y,
                n,
                0,
                n,
                b + tile,
                exact,
              ],
            ]);
            out.push([
              "linear_i4",
              [
                b + x,
                rows,
                k,
                b + q,
                0,
                b + scales,
                32,
                0,
                b + y,
                n,
                0,
                n,
                b + tile,
                exact,
              ],
            ]);
          }
          out.push(["linear_f32", [b + x, rows, k, b + x, 0, b + y, n, 0, n]]);
          out.push(["quantize_tokens", [
            b + x,
            rows,
            k,
            k,
            b + xq,
            b + xs,
            b + xsum,
          ]]);
          out.push([
            "linear_w8a8",
            [
              b + xq,
              b + xs,
              b + xsum,
              rows,
              k,
              b + q,
              0,
              b + scales,
              0,
              b + y,
              n,
              0,
              n,
            ],
          ]);
          out.push(["prepare_int4_x", [b + q, 1, rows, k, b + x]]);
        }
      }
      return out;
    },
  };
}

const WARM_ROUNDS = 12;

/** The longest the warm-up waits for V8's optimised code, in ms. */
const WARM_MAX_MS = 400;

/**
 * Runs the warm-up calls here, then keeps running one round of them (every
 * kernel, yielding to the event loop between rounds) until each kernel's
 * round time has fallen below 3/4 of its time in the first timed round
 * (measured: the linear kernels drop to ~1/3, the conversions to ~2/3) — V8
 * has swapped in the optimised code, which its background compiler can take
 * tens of milliseconds to produce on a busy machine — or WARM_MAX_MS pass.
 * Workers share the compiled module, so they get the optimised code too.
 */
async function tierUp(
  arena: Arena,
  calls: [KernelName, number[]][],
): Promise<void> {
  const run = (fn: KernelName, args: number[]) =>
    (arena.exports[fn] as (...a: number[]) => void)(...args);
  for (const [fn, args] of calls) run(fn, args);
  const round = calls.slice(0, calls.length / WARM_ROUNDS);
  const first = new Map<KernelName, number>();
  const deadline = performance.now() + WARM_MAX_MS;
  while (performance.now() < deadline) {
    const times = new Map<KernelName, number>();
    for (const [fn, args] of round) {
      const t0 = performance.now();
      run(fn, args);
      times.set(fn, (times.get(fn) ?? 0) + performance.now() - t0);
    }
    if (first.size === 0) {
      for (const [fn, t] of times) first.set(fn, t);
    } else if ([...times].every(([fn, t]) => t < 0.75 * first.get(fn)!)) {
      return;
    }
    await new Promise((r) => setTimeout(r, 0));
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
 * staged and widened in the kernels; `fill` returns whether the decode
 * kernels may carry codes scaled by 2^24 (fits_scaled in wasm/kernels.c).
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
        return arena.exports.widen_rows(
          io.stage,
          KINDS[xDtype],
          m,
          k,
          io.x,
          kp,
        );
      }
      copyRows(
        new Uint8Array(arena.buffer, io.x, 4 * m * kp),
        bytesOf(x.subarray(0, m * k)),
        m,
        4 * k,
        4 * kp,
      );
      return arena.exports.fits_scaled(io.x, m * kp);
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

const pools = new Map<WasmBuild, WasmPool | null>();

/**
 * The process-wide pool of one build of the kernels (default: the best this
 * runtime runs), or null where they cannot run.
 */
export function wasmPool(build: WasmBuild = bestBuild()): WasmPool | null {
  let pool = pools.get(build);
  if (pool === undefined) {
    const module = kernelsModule(build);
    pool = module ? new WasmPool(module, build) : null;
    pools.set(build, pool);
  }
  return pool;
}

export type { WasmPool };
