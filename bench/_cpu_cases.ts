/**
 * Shared by bench/cpu_bench.ts and bench/compare_torch.ts: the shapes of
 * issue 5 and a timing of each CPU path on one shape, through the public
 * layers (`Linear`, `W8A32LinearLayer`, `W8A16LinearLayer`, and the low-bit
 * `W8A8LinearLayer`, `W4A16LinearLayer` of issue 8) on the CPU backend, plus
 * the plain reference kernel where it finishes in reasonable time.
 *
 * @module
 */

import {
  f32ArrayToBf16,
  Linear,
  setBackend,
  Tensor,
  W4A16LinearLayer,
  W8A16LinearLayer,
  W8A32LinearLayer,
  W8A8LinearLayer,
} from "../mod.ts";

import { referenceLinearInt8 } from "../src/backend/cpu_reference.ts";

/** A linear layer's shape: `m` rows of activations, `k` in, `n` out. */
export interface Shape {
  m: number;
  k: number;
  n: number;
}

/** Decode (one token) on a 4096 model's attention and MLP, and a 128-token prefill. */
export const SHAPES: readonly Shape[] = [
  { m: 1, k: 4096, n: 4096 },
  { m: 1, k: 4096, n: 14336 },
  { m: 128, k: 4096, n: 4096 },
];

/** `MxKxN`, as bench/torch_linear.py prints it. */
export function shapeName(s: Shape): string {
  return `${s.m}x${s.k}x${s.n}`;
}

/** Parses `1x4096x4096,128x4096x4096`. */
export function parseShapes(text: string): Shape[] {
  return text.split(",").map((part) => {
    const [m, k, n] = part.split("x").map(Number);
    if (![m, k, n].every((v) => Number.isInteger(v) && v! > 0)) {
      throw new RangeError(`Bad shape "${part}": expected MxKxN`);
    }
    return { m: m!, k: k!, n: n! };
  });
}

/** One measured path. */
export interface Measurement {
  /** What ran. */
  path: string;
  /** Median milliseconds per call. */
  ms: number;
  /**
   * Bytes of weight read per call (f32: 4·n·k, int8: n·k, int4: n·k/2 plus
   * the group scales and zero points, which are 3–4% of it at group 128).
   */
  weightBytes: number;
}

/**
 * Median wall time of `fn` in ms after `warmup` untimed calls. V8 first runs
 * WebAssembly with its baseline compiler and swaps in optimized code after a
 * budget of work per thread (about 3000 small or 10 decode calls, ~1.5× faster), so
 * the warm-up is generous.
 */
export async function medianMs(
  fn: () => Promise<unknown>,
  iters: number,
  warmup = 6,
): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1]!;
}

function random(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

function useCpu(threads: number | null): void {
  if (threads === null) Deno.env.delete("TINYQ_THREADS");
  else Deno.env.set("TINYQ_THREADS", String(threads));
  setBackend("cpu", "bench");
}

/** Options of {@linkcode measureShape}. */
export interface MeasureOptions {
  /** Also time W8A32 on one thread (default true). */
  oneThread?: boolean;
  /** Also time the reference kernel (default: only for m = 1). */
  reference?: boolean;
  /** Also time W8A8 and W4A16 (default true). */
  lowBit?: boolean;
  /** Timed iterations (default: by shape size). */
  iters?: number;
}

/**
 * Medians of several paths measured in alternation: each is warmed up, then
 * every round times one call of each path in turn, so that a change in the
 * machine's load (other processes, frequency) weighs on all paths alike and
 * their ratios stay fair.
 */
export async function interleavedMedians(
  fns: readonly (() => Promise<unknown>)[],
  iters: number,
  warmup: number,
): Promise<number[]> {
  for (const fn of fns) for (let i = 0; i < warmup; i++) await fn();
  const times = fns.map(() => [] as number[]);
  for (let it = 0; it < iters; it++) {
    for (let p = 0; p < fns.length; p++) {
      const t0 = performance.now();
      await fns[p]!();
      times[p]!.push(performance.now() - t0);
    }
  }
  return times.map((t) => t.sort((a, b) => a - b)[t.length >> 1]!);
}

/**
 * Times every CPU path on one shape, each a median of several calls: the f32
 * `Linear` of this library first (the baseline of the ratios), then the int8
 * layers and the low-bit ones, measured in alternation (see
 * {@linkcode interleavedMedians}); then the one-thread and reference rows.
 */
export async function measureShape(
  shape: Shape,
  options: MeasureOptions = {},
): Promise<Measurement[]> {
  const { m, k, n } = shape;
  const work = m * k * n;
  const iters = options.iters ?? (work > 1e9 ? 9 : work > 1e8 ? 21 : 41);
  const warmup = work > 1e9 ? 6 : 20;
  const w = random(n * k, 1);
  const weight = new Tensor(w, [n, k]);
  const bias = new Tensor(random(n, 2), [n]);
  const x32 = new Tensor(random(m * k, 3), [m, k]);
  const x16 = x32.to("f16");
  const xbf = new Tensor(
    f32ArrayToBf16(x32.data as Float32Array),
    [m, k],
    "bf16",
  );

  const linear = Linear.fromTensors(weight, bias);
  const w8a32 = new W8A32LinearLayer(k, n);
  w8a32.quantize(weight);
  w8a32.bias = bias;
  const w8a16 = new W8A16LinearLayer(k, n);
  w8a16.quantize(weight);
  w8a16.bias = bias;
  const layers: { dispose(): void }[] = [linear, w8a32, w8a16];

  const paths: { path: string; bytes: number; fn: () => Promise<unknown> }[] = [
    {
      path: "Linear f32 (baseline)",
      bytes: 4 * n * k,
      fn: () => linear.forward(x32),
    },
    { path: "W8A32 f32 act", bytes: n * k, fn: () => w8a32.forward(x32) },
    { path: "W8A16 f16 act", bytes: n * k, fn: () => w8a16.forward(x16) },
    { path: "W8A16 bf16 act", bytes: n * k, fn: () => w8a16.forward(xbf) },
  ];
  if (options.lowBit ?? true) {
    const group = 128;
    const w8a8 = new W8A8LinearLayer(k, n);
    w8a8.quantize(weight);
    w8a8.bias = bias;
    const w8a8Asym = new W8A8LinearLayer(k, n);
    w8a8Asym.quantize(weight, { asymmetric: true });
    w8a8Asym.bias = bias;
    const w4 = new W4A16LinearLayer(k, n, { groupSize: group });
    w4.quantize(weight);
    w4.bias = bias;
    const w4Asym = new W4A16LinearLayer(k, n, { groupSize: group });
    w4Asym.quantize(weight, { asymmetric: true });
    w4Asym.bias = bias;
    layers.push(w8a8, w8a8Asym, w4, w4Asym);
    const int4Bytes = n * k / 2 + 4 * n * k / group;
    paths.push(
      {
        path: "W8A8 f32 act (int8 per token)",
        bytes: n * k,
        fn: () => w8a8.forward(x32),
      },
      {
        path: "W8A8 f32 act, asymmetric W",
        bytes: n * k + n,
        fn: () => w8a8Asym.forward(x32),
      },
      {
        path: "W4A16 g128 f16 act",
        bytes: int4Bytes,
        fn: () => w4.forward(x16),
      },
      {
        path: "W4A16 g128 f16 act, asymmetric",
        bytes: int4Bytes + n * k / group,
        fn: () => w4Asym.forward(x16),
      },
      {
        path: "W4A16 g128 bf16 act",
        bytes: int4Bytes,
        fn: () => w4.forward(xbf),
      },
    );
  }

  useCpu(null);
  const medians = await interleavedMedians(
    paths.map((p) => p.fn),
    iters,
    warmup,
  );
  const out: Measurement[] = paths.map((p, i) => ({
    path: p.path,
    ms: medians[i]!,
    weightBytes: p.bytes,
  }));
  const time = async (
    path: string,
    bytes: number,
    fn: () => Promise<unknown>,
    it = iters,
  ) => {
    out.push({ path, ms: await medianMs(fn, it, warmup), weightBytes: bytes });
  };
  if (options.oneThread ?? true) {
    useCpu(1);
    await time("W8A32 f32 act, 1 thread", n * k, () => w8a32.forward(x32));
    await time("Linear f32, 1 thread", 4 * n * k, () => linear.forward(x32));
    useCpu(null);
  }
  if (options.reference ?? m === 1) {
    const kw = {
      q: w8a32.int8Weights.data as Int8Array,
      scales: w8a32.scales.data as Float32Array,
      zeroPoints: null,
      n,
      k,
    };
    const b = bias.data as Float32Array;
    await time(
      "reference int8 kernel, 1 thread",
      n * k,
      () =>
        Promise.resolve(
          referenceLinearInt8(x32.data as Float32Array, m, kw, b),
        ),
      3,
    );
  }
  for (const layer of layers) layer.dispose();
  return out;
}

/** Formats rows of cells as an aligned text table (first row: header). */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) =>
    Math.max(...rows.map((r) => r[c]!.length))
  );
  return rows.map((r) =>
    r.map((cell, c) =>
      c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)
    ).join("  ")
  )
    .join("\n");
}
