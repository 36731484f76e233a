import assert from "node:assert/strict";
import fc from "fast-check";
import { CpuBackend } from "../src/backend/cpu.ts";
import { referenceLinearW8A8 } from "../src/backend/cpu_lowbit.ts";
import {
  Checkpoint,
  makeDemoCheckpoint,
  quantizeCheckpoint,
  setBackend,
  Tensor,
  W8A16LinearLayer,
} from "../mod.ts";
import {
  referenceLinearF32,
  referenceLinearInt8,
} from "../src/backend/cpu_reference.ts";
import { parseKernel, parseThreads } from "../src/backend/_cpu_config.ts";
import { PARALLEL_MIN_MACS, wasmPool } from "../src/backend/_cpu_pool.ts";
import { Arena, kernelsModule } from "../src/backend/_cpu_wasm.ts";
import type { Int8Weight } from "../src/backend/backend.ts";
import {
  f32ArrayToBf16,
  floatArrayToF32,
  type FloatDType,
} from "../src/dtype.ts";
import {
  NonFiniteWeightError,
  quantizeRowsInt8,
  quantizeRowsInt8Reference,
} from "../src/quant/quantize_rows.ts";
import { assertCloseToExact } from "./_exact_linear.ts";
import { activations, randomF32, randomInt8Weight, rng } from "./_random.ts";

const ONE = new CpuBackend("test", { threads: 1, kernel: "wasm" });
const TWO = new CpuBackend("test", { threads: 2, kernel: "wasm" });
const REF = new CpuBackend("test", { kernel: "reference" });
/** Both builds of the kernels, each on one and two threads. */
const BUILDS = [
  ["relaxed", ONE, TWO],
  [
    "simd128",
    new CpuBackend("test", { threads: 1, kernel: "simd128" }),
    new CpuBackend("test", { threads: 2, kernel: "simd128" }),
  ],
] as const;

Deno.test("CpuBackend runs the wasm kernels when asked and the reference when forced", () => {
  assert.equal(ONE.kernel, "wasm");
  assert.equal(TWO.threads, 2);
  assert.equal(REF.kernel, "reference");
  assert.equal(REF.build, null);
  // Deno 2.9 validates relaxed SIMD, so "wasm" picks that build.
  assert.equal(TWO.build, "relaxed");
  assert.match(TWO.info.reason, /wasm relaxed SIMD, 2 threads/);
  assert.equal(BUILDS[1][1].build, "simd128");
  assert.match(BUILDS[1][2].info.reason, /wasm SIMD, 2 threads/);
});

for (const [build, ONE, _TWO] of BUILDS) {
  Deno.test(`${build}: linearInt8() matches x @ dequant(W)ᵀ + b on odd shapes, every dtype, bias and zero points`, async () => {
    const r = rng(1);
    for (const m of [1, 3, 7, 16, 17, 64, 257]) {
      for (const [n, k] of [[1, 15], [17, 33], [8, 16], [20, 100]]) {
        for (const zp of [false, true]) {
          const w = randomInt8Weight(n!, k!, r, zp);
          const deq = (j: number, t: number) =>
            (w.q[j * k! + t]! - (w.zeroPoints?.[j] ?? 0)) * w.scales[j]!;
          for (const dtype of ["f32", "f16", "bf16"] as const) {
            const bias = r() < 0.5 ? randomF32(n!, r) : null;
            const x = activations(randomF32(m * k!, r, 3), dtype);
            const y = await ONE.linearInt8(x, dtype, m, w, bias);
            const label =
              `m=${m} n=${n} k=${k} zp=${zp} ${dtype} bias=${!!bias}`;
            assertCloseToExact(
              y,
              floatArrayToF32(x, dtype),
              m,
              n!,
              k!,
              deq,
              bias,
              label,
            );
          }
          ONE.release(w);
        }
      }
    }
  });
}

for (const [build, ONE, _TWO] of BUILDS) {
  Deno.test(`${build}: linearF32() matches x @ Wᵀ + b on odd shapes`, async () => {
    const r = rng(2);
    for (const m of [1, 3, 7, 17, 64, 257]) {
      for (const [n, k] of [[1, 15], [17, 33], [9, 16], [20, 100], [5, 1]]) {
        const w = { data: randomF32(n! * k!, r), n: n!, k: k! };
        const bias = m % 2 ? randomF32(n!, r) : null;
        const x = randomF32(m * k!, r, 2);
        const y = await ONE.linearF32(x, m, w, bias);
        assertCloseToExact(
          y,
          x,
          m,
          n!,
          k!,
          (j, t) => w.data[j * k! + t]!,
          bias,
          `m=${m} n=${n} k=${k}`,
        );
        ONE.release(w);
      }
    }
  });
}

for (const [build, ONE, TWO] of BUILDS) {
  Deno.test(`${build}: two threads split the outputs and give the one-thread results bit for bit`, async () => {
    const pool = wasmPool(build)!;
    const r = rng(3);
    // Shapes above the parallel threshold, with splits that end mid-tile.
    const shapes = [
      [1, 17, 65537],
      [3, 257, 1399],
      [13, 101, 900],
      [64, 33, 500],
      [257, 40, 111],
    ];
    for (const [m, n, k] of shapes) {
      assert.ok(m! * n! * k! >= PARALLEL_MIN_MACS);
      for (const zp of [false, true]) {
        const w = randomInt8Weight(n!, k!, r, zp);
        const bias = randomF32(n!, r);
        for (const dtype of ["f32", "bf16"] as const) {
          const x = activations(randomF32(m! * k!, r), dtype);
          const before = pool.stats.parallelCalls;
          const two = await TWO.linearInt8(x, dtype, m!, w, bias);
          assert.equal(
            pool.stats.parallelCalls,
            before + 1,
            "the call used the workers",
          );
          const one = await ONE.linearInt8(x, dtype, m!, w, bias);
          assert.deepEqual(two, one, `m=${m} n=${n} k=${k} zp=${zp} ${dtype}`);
        }
        TWO.release(w);
      }
      const wf = { data: randomF32(n! * k!, r), n: n!, k: k! };
      const x = randomF32(m! * k!, r);
      const two = await TWO.linearF32(x, m!, wf, null);
      assert.deepEqual(two, await ONE.linearF32(x, m!, wf, null));
      assertCloseToExact(
        two,
        x,
        m!,
        n!,
        k!,
        (j, t) => wf.data[j * k! + t]!,
        null,
        `f32 m=${m} n=${n}`,
      );
      TWO.release(wf);
    }
  });
}

for (const [build, _ONE, TWO] of BUILDS) {
  Deno.test(`${build}: linearInt8() on two threads is within tolerance at decode size`, async () => {
    const r = rng(4);
    const w = randomInt8Weight(300, 4000, r, false);
    const x = randomF32(4000, r);
    const y = await TWO.linearInt8(x, "f32", 1, w, null);
    const deq = (j: number, t: number) => w.q[j * 4000 + t]! * w.scales[j]!;
    assertCloseToExact(y, x, 1, 300, 4000, deq, null, "1x4000x300");
    TWO.release(w);
  });
}

Deno.test("concurrent calls on several weights each get their own result", async () => {
  const r = rng(5);
  const ws = Array.from(
    { length: 6 },
    (_, i) => randomInt8Weight(40 + i, 700, r, i % 2 === 1),
  );
  const xs = ws.map(() => randomF32(5 * 700, r));
  const ys = await Promise.all(
    ws.map((w, i) => TWO.linearInt8(xs[i]!, "f32", 5, w, null)),
  );
  ys.forEach((y, i) => {
    const w = ws[i]!;
    const deq = (j: number, t: number) =>
      (w.q[j * 700 + t]! - (w.zeroPoints?.[j] ?? 0)) * w.scales[j]!;
    assertCloseToExact(y, xs[i]!, 5, w.n, 700, deq, null, `weight ${i}`);
  });
  for (const w of ws) TWO.release(w);
});

Deno.test("release() frees a weight's copy and a later call copies it again", async () => {
  const pool = wasmPool()!;
  const r = rng(6);
  const w = randomInt8Weight(16, 64, r, false);
  const x = randomF32(64, r);
  const before = pool.stats.residentWeights;
  const y1 = await ONE.linearInt8(x, "f32", 1, w, null);
  assert.equal(pool.stats.residentWeights, before + 1);
  ONE.release(w);
  assert.equal(pool.stats.residentWeights, before);
  const y2 = await ONE.linearInt8(x, "f32", 1, w, null);
  assert.deepEqual(y2, y1);
  ONE.release(w);
});

Deno.test("stale values in reused kernel memory never reach a result", async () => {
  const r = rng(10);
  const poison = randomInt8Weight(8, 32, r, false);
  const w = randomInt8Weight(8, 15, r, true);
  for (const dtype of ["f32", "bf16", "f16"] as const) {
    const x32 = randomF32(64 * 15, r);
    const x = activations(x32, dtype);
    // Both weights resident first, so the two calls' scratch starts at the
    // same offset: the second call's row pads then sit on the first's NaNs.
    await ONE.linearInt8(new Float32Array(64 * 32), "f32", 64, poison, null);
    await ONE.linearInt8(x, dtype, 64, w, null);
    await ONE.linearInt8(
      new Float32Array(64 * 32).fill(NaN),
      "f32",
      64,
      poison,
      null,
    );
    const y = await ONE.linearInt8(x, dtype, 64, w, null);
    const deq = (j: number, t: number) =>
      (w.q[j * 15 + t]! - w.zeroPoints![j]!) * w.scales[j]!;
    assertCloseToExact(
      y,
      floatArrayToF32(x, dtype),
      64,
      8,
      15,
      deq,
      null,
      dtype,
    );
  }
  ONE.release(w);
  ONE.release(poison);
});

for (const [build, ONE, _TWO] of BUILDS) {
  Deno.test(`${build}: every f16 and bf16 activation bit pattern widens exactly (subnormals, ±Inf, NaN)`, async () => {
    // y = x · 1 · 1: the kernel's output is its f32 view of each input value.
    const w: Int8Weight = {
      q: new Int8Array([1]),
      scales: new Float32Array([1]),
      zeroPoints: null,
      n: 1,
      k: 1,
    };
    const bits = Uint16Array.from({ length: 65536 }, (_, i) => i);
    for (const dtype of ["f16", "bf16"] as const) {
      const x = dtype === "f16" ? new Float16Array(bits.buffer) : bits;
      const y = await ONE.linearInt8(x, dtype, 65536, w, null);
      const want = referenceLinearInt8(
        floatArrayToF32(x, dtype),
        65536,
        w,
        null,
      );
      for (let i = 0; i < 65536; i++) {
        if (
          !Object.is(y[i], want[i]) &&
          !(Number.isNaN(y[i]) && Number.isNaN(want[i]))
        ) {
          assert.fail(
            `${dtype} bits 0x${i.toString(16)}: got ${y[i]}, want ${want[i]}`,
          );
        }
      }
    }
    ONE.release(w);
  });
}

for (const [build, ONE, _TWO] of BUILDS) {
  Deno.test(`${build}: non-finite activations propagate as in the reference`, async () => {
    const w: Int8Weight = {
      q: new Int8Array([1, 2, 0, 4, -3, 5, 7, 0, 0, 0, 0, 1]),
      scales: new Float32Array([0.5, 1, 2]),
      zeroPoints: null,
      n: 3,
      k: 4,
    };
    const x = new Float32Array([Infinity, 1, 2, 3, 1, NaN, 0, 0]);
    const y = await ONE.linearInt8(x, "f32", 2, w, null);
    assert.deepEqual(y, referenceLinearInt8(x, 2, w, null));
  });
}

Deno.test("the reference kernel choice returns the reference's exact results", async () => {
  const r = rng(7);
  const w = randomInt8Weight(9, 21, r, true);
  const x = randomF32(2 * 21, r);
  const bias = randomF32(9, r);
  assert.deepEqual(
    await REF.linearInt8(x, "f32", 2, w, bias),
    referenceLinearInt8(x, 2, w, bias),
  );
  const wf = { data: randomF32(9 * 21, r), n: 9, k: 21 };
  assert.deepEqual(
    await REF.linearF32(x, 2, wf, bias),
    referenceLinearF32(x, 2, wf, bias),
  );
});

Deno.test("empty shapes give empty or bias-only outputs", async () => {
  const w0: Int8Weight = {
    q: new Int8Array(0),
    scales: new Float32Array(3).fill(1),
    zeroPoints: null,
    n: 3,
    k: 0,
  };
  assert.deepEqual([
    ...await ONE.linearInt8(
      new Float32Array(0),
      "f32",
      2,
      w0,
      new Float32Array([1, 2, 3]),
    ),
  ], [1, 2, 3, 1, 2, 3]);
  assert.deepEqual(
    await ONE.linearInt8(new Float32Array(0), "f32", 0, w0, null),
    new Float32Array(0),
  );
});

Deno.test("linearInt8() rejects an input whose length does not match m × k", async () => {
  const w = randomInt8Weight(2, 3, rng(8), false);
  await assert.rejects(
    ONE.linearInt8(new Float32Array(5), "f32", 2, w, null),
    /input has 5 values, expected 2 × 3 = 6/,
  );
  await assert.rejects(
    ONE.linearInt8(new Float32Array(3), "f32", 1, w, new Float32Array(3)),
    /bias has 3 values, expected 2/,
  );
});

Deno.test("TINYQ_THREADS and TINYQ_CPU_KERNEL values are checked", () => {
  assert.equal(parseThreads("3", "TINYQ_THREADS"), 3);
  assert.throws(
    () => parseThreads("0", "TINYQ_THREADS"),
    /TINYQ_THREADS must be an integer from 1 to 256, got "0"/,
  );
  assert.throws(() => parseThreads("two", "TINYQ_THREADS"), /got "two"/);
  assert.equal(parseKernel(" Reference ", "TINYQ_CPU_KERNEL"), "reference");
  assert.throws(
    () => parseKernel("js", "TINYQ_CPU_KERNEL"),
    /TINYQ_CPU_KERNEL must be "wasm", "simd128" or "reference", got "js"/,
  );
  assert.throws(
    () => new CpuBackend("t", { threads: 1.5 }),
    /threads must be an integer/,
  );
});

// ---------------------------------------------------------------- quantize

function assertSameQuantization(
  data: Float32Array | Float16Array | Uint16Array,
  dtype: FloatDType,
  rows: number,
  cols: number,
): void {
  let want: unknown;
  try {
    want = quantizeRowsInt8Reference(data, dtype, rows, cols, "t");
  } catch (e) {
    want = e;
  }
  let got: unknown;
  try {
    got = quantizeRowsInt8(data, dtype, rows, cols, "t");
  } catch (e) {
    got = e;
  }
  if (want instanceof Error) {
    assert.ok(
      got instanceof NonFiniteWeightError,
      `expected ${want.message}, got ${got}`,
    );
    assert.equal(got.message, want.message);
    return;
  }
  const w = want as { q: Int8Array; scales: Float32Array };
  const g = got as { q: Int8Array; scales: Float32Array };
  assert.deepEqual(g.q, w.q);
  // Bitwise: deepEqual treats +0 and -0 alike, Uint32 views do not.
  assert.deepEqual(
    new Uint32Array(g.scales.buffer),
    new Uint32Array(w.scales.buffer),
  );
}

Deno.test("quantizeRowsInt8() rounds exact halves to even, like the reference", () => {
  // absmax 127 makes the scale exactly 1, so w / scale is w itself.
  const row = [
    127,
    0.5,
    1.5,
    2.5,
    -0.5,
    -1.5,
    -2.5,
    126.5,
    -127,
    3.5,
    4.5,
    5.5,
    6.5,
    7.5,
    8.5,
    9.5,
    10.5,
  ];
  const data = new Float32Array(row);
  const { q } = quantizeRowsInt8(data, "f32", 1, row.length);
  assert.deepEqual([...q], [
    127,
    0,
    2,
    2,
    0,
    -2,
    -2,
    126,
    -127,
    4,
    4,
    6,
    6,
    8,
    8,
    10,
    10,
  ]);
  for (const dtype of ["f32", "f16", "bf16"] as const) {
    const d = activations(data, dtype);
    assertSameQuantization(d, dtype, 1, row.length);
  }
});

Deno.test("quantizeRowsInt8() handles zero rows, outliers, subnormals and -0 bit-identically", () => {
  const cases: number[][] = [
    new Array(37).fill(0),
    [-0, 0, -0, 0, -0],
    [3e38, 1e-3, -1, 2, 5e37, ...new Array(20).fill(0.25)],
    [1e-45, -2e-45, 3e-45, 0, 7e-45, 1.4e-43, ...new Array(12).fill(-1e-44)],
    [1.2e-38, -1.1e-38, 5e-39, 1e-40, 17, 0.001, -17],
    [2.7e-43, 1e-45, -2.7e-43, 1.5e-43],
  ];
  for (const row of cases) {
    for (const dtype of ["f32", "f16", "bf16"] as const) {
      assertSameQuantization(
        activations(new Float32Array(row), dtype),
        dtype,
        1,
        row.length,
      );
    }
  }
  // A zero row among others gets scale 1 and zeros.
  const m = new Float32Array([1, 2, 3, 0, 0, 0, -4, 5, 6]);
  const { q, scales } = quantizeRowsInt8(m, "f32", 3, 3);
  assert.deepEqual([...q.subarray(3, 6)], [0, 0, 0]);
  assert.equal(scales[1], 1);
});

Deno.test("quantizeRowsInt8() equals the reference on random f32 matrices (property)", () => {
  const value = fc.oneof(
    fc.float({ noNaN: true, noDefaultInfinity: true }),
    fc.float({ min: -1, max: 1, noNaN: true }),
    fc.constantFrom(0, -0, 0.5, -0.5, 127, 1e-45, 3.4e38),
  );
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 5 }),
      fc.integer({ min: 1, max: 70 }),
      fc.array(value, { minLength: 350, maxLength: 350 }),
      (rows, cols, values) => {
        const data = Float32Array.from(values.slice(0, rows * cols));
        assertSameQuantization(
          data,
          "f32",
          rows,
          Math.min(cols, Math.floor(data.length / rows)) || 1,
        );
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("quantizeRowsInt8() equals the reference on every f16 and bf16 bit pattern class (property)", () => {
  fc.assert(
    fc.property(
      fc.constantFrom("f16" as const, "bf16" as const),
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 90 }),
      fc.array(fc.integer({ min: 0, max: 0xffff }), {
        minLength: 360,
        maxLength: 360,
      }),
      (dtype, rows, cols, bits) => {
        const special = dtype === "f16" ? 0x7c00 : 0x7f80;
        // Mostly finite patterns (subnormals included); NaN/Inf in a few runs.
        const finite = bits.map((
          b,
        ) => ((b & 0x7fff) >= special ? b & 0x83ff : b));
        const data = Uint16Array.from(finite.slice(0, rows * cols));
        if (bits[0]! % 7 === 0) data[bits[1]! % data.length] = special | 1;
        const arr = dtype === "f16" ? new Float16Array(data.buffer) : data;
        assertSameQuantization(arr, dtype, rows, cols);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("quantizeRowsInt8() names the first non-finite weight like the reference", () => {
  const cols = 300;
  const data = new Float32Array(4 * cols).fill(0.5);
  data[2 * cols + 123] = Infinity;
  data[3 * cols + 1] = NaN;
  assert.throws(
    () => quantizeRowsInt8(data, "f32", 4, cols, "model.fc1.weight"),
    (e: unknown) =>
      e instanceof NonFiniteWeightError &&
      e.message ===
        'Tensor "model.fc1.weight" has Infinity at [2, 123]; cannot quantize a non-finite weight',
  );
  for (const dtype of ["f16", "bf16"] as const) {
    assertSameQuantization(activations(data, dtype), dtype, 4, cols);
  }
});

Deno.test("quantizeRowsInt8() streams a matrix larger than one chunk", () => {
  // 600 rows of 1000 bf16 values = 1.2 MB: more than the 1 MiB staging chunk.
  const r = rng(9);
  const f = randomF32(600 * 1000, r, 4);
  f[599 * 1000 + 999] = 100;
  assertSameQuantization(f32ArrayToBf16(f), "bf16", 600, 1000);
  assertSameQuantization(f, "f32", 600, 1000);
});

Deno.test("weight copies stay within the cache budget: least recently used dropped, oversized ones transient", async () => {
  const pool = wasmPool()!;
  const saved = pool.budget;
  const r = rng(11);
  const k = 1000;
  const ws = Array.from({ length: 4 }, () => randomInt8Weight(40, k, r, false)); // ~40 KB each
  const big = randomInt8Weight(300, k, r, true); // ~300 KB
  const x = randomF32(2 * k, r);
  const check = async (w: Int8Weight) => {
    const y = await ONE.linearInt8(x, "f32", 2, w, null);
    const deq = (j: number, t: number) =>
      (w.q[j * k + t]! - (w.zeroPoints?.[j] ?? 0)) * w.scales[j]!;
    assertCloseToExact(y, x, 2, w.n, k, deq, null, `n=${w.n}`);
  };
  try {
    pool.budget = 100_000;
    const before = pool.stats.residentWeights;
    for (const w of ws) await check(w);
    assert.ok(
      pool.stats.residentWeights - before <= 2,
      "at most two 40 KB copies fit in 100 KB",
    );
    for (const w of ws) await check(w); // evicted ones are copied again
    await check(big);
    assert.ok(
      pool.stats.residentWeights - before <= 2,
      "the oversized weight was not kept",
    );
  } finally {
    pool.budget = saved;
    for (const w of [...ws, big]) ONE.release(w);
  }
});

Deno.test("Arena reuses freed blocks, merges neighbours and grows on demand", () => {
  const arena = new Arena(-1, kernelsModule()!);
  const a = arena.alloc(100);
  const b = arena.alloc(64);
  const c = arena.alloc(1000);
  assert.equal(a % 64, 0);
  assert.equal(b, a + 128);
  assert.equal(c, b + 64);
  arena.free(a, 100);
  assert.equal(arena.alloc(64), a, "first fit takes the freed hole");
  arena.free(a, 64);
  arena.free(b, 64);
  assert.equal(arena.alloc(192), a, "the two holes merged into one");
  const big = arena.alloc(3 << 20);
  assert.ok(
    big > c && arena.buffer.byteLength >= big + (3 << 20),
    "the memory grew",
  );
  assert.equal(arena.alloc(2 ** 32), -1, "more than 4 GiB is refused");
});

Deno.test("prepare() makes a weight's copy before its first call, and the call uses it", async () => {
  const pool = wasmPool()!;
  const r = rng(21);
  const w = randomInt8Weight(40, 96, r, true);
  const before = pool.stats.residentWeights;
  assert.equal(await TWO.prepare(w), true);
  assert.equal(pool.stats.residentWeights, before + 1);
  const x = randomF32(3 * 96, r);
  const y = await TWO.linearInt8(x, "f32", 3, w, null);
  assert.equal(pool.stats.residentWeights, before + 1, "no second copy");
  assert.deepEqual(y, await ONE.linearInt8(x, "f32", 3, w, null));
  TWO.release(w);
  assert.equal(pool.stats.residentWeights, before);
  assert.equal(await REF.prepare(w), false, "the reference keeps no copy");
});

Deno.test("warm() starts the workers once per thread count and leaves results unchanged", async () => {
  for (const [build, one, two] of BUILDS) {
    const pool = wasmPool(build)!;
    await two.warm();
    const started = pool.stats.workersStarted;
    assert.ok(started >= 1, `${build}: a worker runs`);
    await two.warm();
    await one.warm();
    assert.equal(pool.stats.workersStarted, started, `${build}: idempotent`);
  }
  const r = rng(22);
  const w = randomInt8Weight(300, 4000, r, false);
  const x = randomF32(4000, r);
  assert.deepEqual(
    await TWO.linearW8A8(x, 1, w, null),
    referenceLinearW8A8(x, 1, w, null),
  );
  TWO.release(w);
});

Deno.test("the read-bandwidth probe reads its buffer on every thread", async () => {
  const bw = await wasmPool()!.readBandwidth(2, 1 << 20, 2);
  assert.ok(bw !== null && bw > 0 && Number.isFinite(bw));
});

Deno.test("the relaxed build differs from the SIMD128 build only where relaxed SIMD is used", () => {
  const relaxed = kernelsModule("relaxed")!, plain = kernelsModule("simd128")!;
  const names = (m: WebAssembly.Module) =>
    WebAssembly.Module.exports(m).map((e) => e.name).sort();
  // The relaxed build exports its marker; both export every kernel.
  assert.deepEqual(
    names(relaxed).filter((n) => n !== "relaxed_madd"),
    names(plain),
  );
  assert.ok(names(relaxed).includes("relaxed_madd"));
});

Deno.test("a quantized layer's int8 weight lives once: after its first CPU forward the layer holds the kernels' copy", async () => {
  setBackend("cpu");
  const pool = wasmPool()!;
  const w = new Tensor(randomF32(48 * 64, rng(23)), [48, 64]);
  const layer = new W8A16LinearLayer(64, 48, { bias: false });
  layer.quantize(w);
  const original = layer.int8Weights.data as Int8Array;
  const codes = Int8Array.from(original);
  const x = new Tensor(randomF32(3 * 64, rng(24)), [3, 64]).to("f16");
  const y1 = await layer.forward(x);
  const adopted = layer.int8Weights.data as Int8Array;
  assert.notEqual(adopted, original, "the layer's codes were replaced");
  assert.ok(adopted.buffer instanceof SharedArrayBuffer, "by the shared copy");
  assert.deepEqual(adopted, codes, "with the same values");
  assert.ok(layer.scales.data.buffer instanceof SharedArrayBuffer);
  const before = pool.stats.residentWeights;
  const y2 = await layer.forward(x);
  assert.equal(pool.stats.residentWeights, before, "no second copy");
  assert.deepEqual(y2.data, y1.data);
  layer.dispose();
});

Deno.test("a weight made in the kernels' memory by allocInt8Weight() runs without a copy", async () => {
  const pool = wasmPool()!;
  const r = rng(25);
  const src = randomInt8Weight(40, 64, r, true);
  const a = (await TWO.allocInt8Weight(40, 64, true))!;
  assert.ok(a.q.buffer instanceof SharedArrayBuffer);
  assert.ok(a.q.every((v) => v === 0), "zero-filled");
  a.q.set(src.q);
  a.scales.set(src.scales);
  a.zeroPoints!.set(src.zeroPoints!);
  const w = { ...a, n: 40, k: 64 };
  const before = pool.stats.residentWeights;
  const x = randomF32(5 * 64, r);
  const y = await TWO.linearInt8(x, "f32", 5, w, null);
  assert.equal(pool.stats.residentWeights, before, "no copy was made");
  assert.deepEqual(y, await ONE.linearInt8(x, "f32", 5, src, null));
  ONE.release(src);
  assert.equal(await TWO.allocInt8Weight(4, 17, false), null, "padded rows");
  assert.equal(await REF.allocInt8Weight(4, 16, false), null, "reference");
});

Deno.test("a quantized checkpoint's int8 layers can be read straight into the kernels' memory", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await makeDemoCheckpoint(`${dir}/m`, {
      layers: 1,
      hidden: 64,
      intermediate: 128,
    });
    await quantizeCheckpoint(`${dir}/m`, `${dir}/q`, { method: "w8a16" });
    using ckpt = await Checkpoint.open(`${dir}/q`);
    const plain = await ckpt.toModule();
    const shared = await ckpt.toModule({
      int8Arrays: (n, k, asym) => TWO.allocInt8Weight(n, k, asym),
    });
    const path = "model.layers.0.mlp.down_proj";
    const a = plain.getModule(path) as W8A16LinearLayer;
    const b = shared.getModule(path) as W8A16LinearLayer;
    assert.ok(b.int8Weights.data.buffer instanceof SharedArrayBuffer);
    assert.ok(!(a.int8Weights.data.buffer instanceof SharedArrayBuffer));
    assert.deepEqual([...b.int8Weights.data], [...a.int8Weights.data]);
    assert.deepEqual([...b.scales.data], [...a.scales.data]);
    setBackend("cpu");
    const x = new Tensor(randomF32(2 * 128, rng(26)), [2, 128]).to("bf16");
    assert.deepEqual((await b.forward(x)).data, (await a.forward(x)).data);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
