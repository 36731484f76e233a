// The WebAssembly W8A8 and W4A16 kernels of CpuBackend against the plain
// references of src/backend/cpu_lowbit.ts: W8A8 bit for bit, W4A16 within
// f32 rounding of the exact product, on one and two threads, odd shapes,
// every activation dtype, zero points and bias.

import assert from "node:assert/strict";
import { CpuBackend } from "../src/backend/cpu.ts";
import {
  type Int4Weight,
  referenceLinearInt4,
  referenceLinearW8A8,
} from "../src/backend/cpu_lowbit.ts";
import { PARALLEL_MIN_MACS, wasmPool } from "../src/backend/_cpu_pool.ts";
import type { Int8Weight } from "../src/backend/backend.ts";
import { floatArrayToF32 } from "../src/dtype.ts";
import * as linear from "./_exact_linear.ts";
import { activations, randomF32, randomInt8Weight, rng } from "./_random.ts";

/** Random codes (all 16 values), scales and, when asymmetric, zero points. */
function int4Weight(
  n: number,
  k: number,
  groupSize: number,
  r: () => number,
  asymmetric: boolean,
): Int4Weight {
  const groups = n * k / groupSize;
  return {
    packed: Uint8Array.from(
      { length: n * k / 2 },
      () => Math.floor(r() * 256),
    ),
    scales: Float32Array.from({ length: groups }, () => 0.001 + r() * 0.1),
    zeroPoints: asymmetric
      ? Uint8Array.from({ length: groups }, () => Math.floor(r() * 16))
      : null,
    n,
    k,
    groupSize,
  };
}

/** The float value element [j, t] of an int4 weight stands for. */
function dequant4(w: Int4Weight, j: number, t: number): number {
  const e = j * w.k + t;
  const code = (w.packed[e >> 1]! >> ((e & 1) * 4)) & 15;
  const g = j * (w.k / w.groupSize) + Math.floor(t / w.groupSize);
  return (code - (w.zeroPoints ? w.zeroPoints[g]! : 8)) * w.scales[g]!;
}

/** `linear.assertCloseToExact` for a 4-bit weight. */
function assertCloseToExact(
  y: Float32Array,
  x: Float32Array,
  m: number,
  w: Int4Weight,
  bias: Float32Array | null,
  label: string,
): void {
  linear.assertCloseToExact(
    y,
    x,
    m,
    w.n,
    w.k,
    (j, t) => dequant4(w, j, t),
    bias,
    label,
  );
}

/** Same values, element by element: -0 ≠ +0, any NaN = any NaN. */
function assertSameValues(
  got: Float32Array,
  want: Float32Array,
  label: string,
): void {
  assert.equal(got.length, want.length, label);
  for (let i = 0; i < got.length; i++) {
    if (!Object.is(got[i], want[i])) {
      assert.fail(`${label}: [${i}] = ${got[i]}, reference ${want[i]}`);
    }
  }
}

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

// ------------------------------------------------------------------ W8A8

for (const [build, ONE, TWO] of BUILDS) {
  Deno.test(`${build}: linearW8A8() equals referenceLinearW8A8 bit for bit on odd shapes, zero points and bias`, async () => {
    const r = rng(1);
    for (const m of [1, 3, 64, 257]) {
      for (const [n, k] of [[1, 32], [17, 45], [17, 256], [20, 100], [5, 1]]) {
        for (const zp of [false, true]) {
          const w = randomInt8Weight(n!, k!, r, zp);
          for (const withBias of [false, true]) {
            const bias = withBias ? randomF32(n!, r) : null;
            const x = randomF32(m * k!, r, 3);
            const label = `m=${m} n=${n} k=${k} zp=${zp} bias=${withBias}`;
            const want = referenceLinearW8A8(x, m, w, bias);
            assertSameValues(await ONE.linearW8A8(x, m, w, bias), want, label);
            assertSameValues(await TWO.linearW8A8(x, m, w, bias), want, label);
          }
          ONE.release(w);
        }
      }
    }
  });
}

for (const [build, _ONE, TWO] of BUILDS) {
  Deno.test(`${build}: linearW8A8() splits outputs over two threads with the reference's bits`, async () => {
    const pool = wasmPool(build)!;
    const r = rng(2);
    for (
      const [m, n, k] of [[1, 17, 65536], [3, 257, 1399], [64, 33, 500], [
        257,
        17,
        256,
      ]]
    ) {
      assert.ok(m! * n! * k! >= PARALLEL_MIN_MACS);
      for (const zp of [false, true]) {
        const w = randomInt8Weight(n!, k!, r, zp);
        const bias = randomF32(n!, r);
        const x = randomF32(m! * k!, r);
        const before = pool.stats.parallelCalls;
        const y = await TWO.linearW8A8(x, m!, w, bias);
        assert.equal(pool.stats.parallelCalls, before + 1, "used the workers");
        assertSameValues(
          y,
          referenceLinearW8A8(x, m!, w, bias),
          `m=${m} n=${n} k=${k} zp=${zp}`,
        );
        TWO.release(w);
      }
    }
  });
}

for (const [build, ONE, _TWO] of BUILDS) {
  Deno.test(`${build}: linearW8A8() keeps the reference's bits on edge rows: NaN, ±Inf, zeros, subnormals, ties, |acc| > 2²⁴`, async () => {
    const k = 2048, n = 6;
    const r = rng(3);
    const rows: number[][] = [
      Array.from({ length: k }, (_, t) => (t === 7 ? NaN : 1)),
      Array.from({ length: k }, (_, t) => (t === 2047 ? -Infinity : 0.5)),
      new Array(k).fill(0),
      Array.from({ length: k }, (_, t) => (t % 2 ? -0 : 0)),
      Array.from({ length: k }, (_, t) => (t % 3 - 1) * 1e-45),
      Array.from({ length: k }, (_, t) => (t % 5 - 2) * 3e-39),
      // absmax 127: scale 1, so every x.5 is a tie (rounded to even).
      Array.from({ length: k }, (_, t) => (t === 0 ? 127 : (t % 40) - 19.5)),
      // All at ±absmax against ±127 weights: |acc| ≈ 127² · 2048 > 2²⁴.
      Array.from({ length: k }, (_, t) => (t % 2 ? 3.25 : -3.25)),
      Array.from({ length: k }, () => r() * 1e30),
    ];
    const m = rows.length;
    const x = Float32Array.from(rows.flat());
    const w = randomInt8Weight(n, k, r, false);
    for (let t = 0; t < k; t++) w.q[t] = t % 2 ? 127 : -127; // row 0
    for (let t = 0; t < k; t++) w.q[k + t] = -128;
    for (const zp of [null, Int8Array.from([5, -128, 127, 0, -3, 9])]) {
      const wz = { ...w, zeroPoints: zp };
      for (
        const bias of [null, Float32Array.from([1, -0, 0, 2.5, -1e-30, 3])]
      ) {
        const want = referenceLinearW8A8(x, m, wz, bias);
        assert.ok(Number.isNaN(want[0]) && Number.isNaN(want[n]));
        assertSameValues(
          await ONE.linearW8A8(x, m, wz, bias),
          want,
          `zp=${!!zp} bias=${!!bias}`,
        );
      }
      ONE.release(wz);
    }
  });
}

Deno.test("linearW8A8() beyond k = 65536 (int32 could overflow) still returns the reference's bits", async () => {
  const r = rng(4);
  const k = 65537;
  const w = randomInt8Weight(2, k, r, true);
  w.q.fill(-128);
  const x = new Float32Array(k).fill(-1);
  assertSameValues(
    await ONE.linearW8A8(x, 1, w, null),
    referenceLinearW8A8(x, 1, w, null),
    "k=65537",
  );
});

// ----------------------------------------------------------------- W4A16

for (const [build, ONE, TWO] of BUILDS) {
  Deno.test(`${build}: linearInt4() is within f32 rounding of x·dequant(W)ᵀ + b: odd shapes, groups 32/64/128, sym/asym, every dtype`, async () => {
    const r = rng(5);
    const shapes = [[1, 32, 32], [17, 64, 32], [17, 128, 64], [20, 256, 128], [
      9,
      384,
      128,
    ], [4, 32, 32]];
    for (const m of [1, 3, 5, 64, 257]) {
      for (const [n, k, g] of shapes) {
        for (const asym of [false, true]) {
          const w = int4Weight(n!, k!, g!, r, asym);
          for (const dtype of ["f32", "f16", "bf16"] as const) {
            const bias = r() < 0.5 ? randomF32(n!, r) : null;
            const x = activations(randomF32(m * k!, r, 3), dtype);
            const label =
              `m=${m} n=${n} k=${k} g=${g} asym=${asym} ${dtype} bias=${!!bias}`;
            const y = await ONE.linearInt4(x, dtype, m, w, bias);
            assertCloseToExact(y, floatArrayToF32(x, dtype), m, w, bias, label);
            assert.deepEqual(await TWO.linearInt4(x, dtype, m, w, bias), y);
          }
          ONE.release(w);
        }
      }
    }
  });
}

for (const [build, ONE, TWO] of BUILDS) {
  Deno.test(`${build}: linearInt4() on two threads splits the outputs and gives the one-thread results bit for bit`, async () => {
    const pool = wasmPool(build)!;
    const r = rng(6);
    const shapes = [
      [1, 64, 16384, 128],
      [1, 17, 65536, 64],
      [3, 257, 1408, 128],
      [13, 101, 896, 32],
      [64, 40, 512, 64],
      [257, 40, 128, 128],
    ];
    for (const [m, n, k, g] of shapes) {
      assert.ok(m! * n! * k! >= PARALLEL_MIN_MACS);
      for (const asym of [false, true]) {
        const w = int4Weight(n!, k!, g!, r, asym);
        const bias = randomF32(n!, r);
        for (const dtype of ["f32", "bf16"] as const) {
          const x = activations(randomF32(m! * k!, r), dtype);
          const before = pool.stats.parallelCalls;
          const two = await TWO.linearInt4(x, dtype, m!, w, bias);
          assert.equal(
            pool.stats.parallelCalls,
            before + 1,
            "used the workers",
          );
          const label = `m=${m} n=${n} k=${k} g=${g} asym=${asym} ${dtype}`;
          assert.deepEqual(two, await ONE.linearInt4(x, dtype, m!, w, bias));
          if (m! <= 3) {
            assertCloseToExact(
              two,
              floatArrayToF32(x, dtype),
              m!,
              w,
              bias,
              label,
            );
          }
        }
        TWO.release(w);
      }
    }
  });
}

for (const [build, ONE, _TWO] of BUILDS) {
  Deno.test(`${build}: linearInt4() subtracts zero points exactly: rows of codes equal to the zero point give exactly the bias`, async () => {
    const r = rng(7);
    for (const m of [1, 3, 20]) {
      const n = 5, k = 256, g = 64;
      const w = int4Weight(n, k, g, r, true);
      // Row 2: every code equals its group's zero point (weights all 0).
      for (let t = 0; t < k; t += 2) {
        const zp = w.zeroPoints![2 * (k / g) + Math.floor(t / g)]!;
        w.packed[(2 * k + t) >> 1] = zp | (zp << 4);
      }
      const bias = Float32Array.from([1, 2, -0.375, 4, 5]);
      // Large activations with an outlier: a sum through Σx would not cancel.
      const x = randomF32(m * k, r, 1000);
      x[17] = 3e7;
      const y = await ONE.linearInt4(x, "f32", m, w, bias);
      for (let i = 0; i < m; i++) assert.equal(y[i * n + 2], -0.375, `m=${m}`);
      assertCloseToExact(y, x, m, w, bias, `m=${m}`);
      ONE.release(w);
    }
  });
}

for (const [build, ONE, _TWO] of BUILDS) {
  Deno.test(`${build}: linearInt4() stays exact for huge activations (no overflow from the scaled 2²⁴ path)`, async () => {
    const r = rng(8);
    const n = 6, k = 128;
    for (const asym of [false, true]) {
      const w = int4Weight(n, k, 32, r, asym);
      for (const m of [1, 3, 5, 20]) {
        for (const scale of [2 ** 89, 2 ** 91, 1e30, 1e36]) {
          for (const dtype of ["f32", "bf16"] as const) {
            const x = activations(randomF32(m * k, r, scale), dtype);
            const y = await ONE.linearInt4(x, dtype, m, w, null);
            const label = `asym=${asym} m=${m} |x| ≤ ${scale} ${dtype}`;
            assert.ok(y.every(Number.isFinite), `${label}: finite`);
            assertCloseToExact(y, floatArrayToF32(x, dtype), m, w, null, label);
          }
        }
      }
      ONE.release(w);
    }
  });
}

for (const [build, ONE, _TWO] of BUILDS) {
  Deno.test(`${build}: linearInt4() propagates NaN and ±Inf as the reference does`, async () => {
    const r = rng(9);
    const n = 9, k = 64;
    const w = int4Weight(n, k, 32, r, true);
    // Row 0 of the weight all zero (code = zero point): Inf · 0 = NaN.
    for (let t = 0; t < k; t += 2) {
      const zp = w.zeroPoints![Math.floor(t / 32)]!;
      w.packed[t >> 1] = zp | (zp << 4);
    }
    for (const m of [1, 2, 20]) {
      const x = randomF32(m * k, r);
      x[3] = Infinity;
      if (m > 1) x[k + 40] = NaN;
      const want = referenceLinearInt4(x, m, w, null);
      const got = await ONE.linearInt4(x, "f32", m, w, null);
      for (let i = 0; i < got.length; i++) {
        if (!Number.isFinite(want[i]!)) {
          assert.ok(Object.is(got[i], want[i]), `m=${m} [${i}]`);
        }
      }
      assert.ok(Number.isNaN(got[0]!));
    }
    ONE.release(w);
  });
}

Deno.test("linearInt4() reads packed bytes at any byte offset, and k = 0 gives the bias", async () => {
  const r = rng(10);
  const w = int4Weight(3, 64, 32, r, false);
  const shifted = new Uint8Array(w.packed.length + 1).subarray(1);
  shifted.set(w.packed);
  const x = randomF32(5 * 64, r);
  const offset = { ...w, packed: shifted };
  assert.deepEqual(
    await ONE.linearInt4(x, "f32", 5, offset, null),
    await ONE.linearInt4(x, "f32", 5, w, null),
  );
  ONE.release(offset);
  ONE.release(w);
  const empty: Int4Weight = {
    packed: new Uint8Array(0),
    scales: new Float32Array(0),
    zeroPoints: null,
    n: 3,
    k: 0,
    groupSize: 32,
  };
  assert.deepEqual(
    [
      ...await ONE.linearInt4(
        new Float32Array(0),
        "f32",
        2,
        empty,
        Float32Array.from([1, 2, 3]),
      ),
    ],
    [1, 2, 3, 1, 2, 3],
  );
  const empty8: Int8Weight = {
    q: new Int8Array(0),
    scales: Float32Array.from([1, 2, 3]),
    zeroPoints: null,
    n: 3,
    k: 0,
  };
  assertSameValues(
    await ONE.linearW8A8(
      new Float32Array(0),
      2,
      empty8,
      Float32Array.from([1, -0, 3]),
    ),
    Float32Array.from([1, 0, 3, 1, 0, 3]),
    "W8A8 k=0",
  );
  ONE.release(empty8);
});

// ------------------------------------------------------- shared behaviour

Deno.test("release() frees the copy of an Int4Weight (and of a W8A8 weight)", async () => {
  const pool = wasmPool()!;
  const r = rng(11);
  const w4 = int4Weight(16, 128, 64, r, true);
  const w8 = randomInt8Weight(16, 64, r, false);
  await ONE.linearInt4(randomF32(128, r), "f32", 1, w4, null);
  await ONE.linearW8A8(randomF32(64, r), 1, w8, null);
  // Synchronous from here: no finalizer of another test's weights can run.
  const kept = pool.stats.residentWeights;
  ONE.release(w4);
  assert.equal(pool.stats.residentWeights, kept - 1);
  ONE.release(w8);
  assert.equal(pool.stats.residentWeights, kept - 2);
  ONE.release(w8);
  assert.equal(
    pool.stats.residentWeights,
    kept - 2,
    "a second release is a no-op",
  );
});

Deno.test("stale values in reused kernel memory never reach a low-bit result", async () => {
  const r = rng(12);
  const w4 = int4Weight(8, 64, 32, r, true);
  const w8 = randomInt8Weight(8, 30, r, true);
  const poison = randomInt8Weight(8, 64, r, false);
  for (const m of [1, 5, 40]) {
    const x4 = randomF32(m * 64, r);
    const x8 = randomF32(m * 30, r);
    await ONE.linearInt4(x4, "f32", m, w4, null);
    await ONE.linearW8A8(x8, m, w8, null);
    // Fill the scratch with NaN, then run the smaller calls again.
    await ONE.linearInt8(
      new Float32Array(64 * 64).fill(NaN),
      "f32",
      64,
      poison,
      null,
    );
    assertCloseToExact(
      await ONE.linearInt4(x4, "f32", m, w4, null),
      x4,
      m,
      w4,
      null,
      `int4 m=${m}`,
    );
    assertSameValues(
      await ONE.linearW8A8(x8, m, w8, null),
      referenceLinearW8A8(x8, m, w8, null),
      `w8a8 m=${m}`,
    );
  }
  for (const w of [w4, w8, poison]) ONE.release(w);
});

Deno.test("the reference kernel choice runs referenceLinearW8A8 and referenceLinearInt4", async () => {
  const r = rng(13);
  const w8 = randomInt8Weight(9, 21, r, true);
  const x8 = randomF32(2 * 21, r);
  const bias = randomF32(9, r);
  assertSameValues(
    await REF.linearW8A8(x8, 2, w8, bias),
    referenceLinearW8A8(x8, 2, w8, bias),
    "w8a8",
  );
  const w4 = int4Weight(9, 64, 32, r, true);
  const x4 = randomF32(2 * 64, r);
  assertSameValues(
    await REF.linearInt4(Float16Array.from(x4), "f16", 2, w4, bias),
    referenceLinearInt4(Float32Array.from(Float16Array.from(x4)), 2, w4, bias),
    "int4",
  );
});

Deno.test("linearInt4() and linearW8A8() reject bad arguments with a clear message", async () => {
  const r = rng(14);
  const w = int4Weight(2, 64, 32, r, false);
  await assert.rejects(
    ONE.linearInt4(new Float32Array(63), "f32", 1, w, null),
    /linearInt4: input has 63 values, expected 1 × 64 = 64/,
  );
  await assert.rejects(
    ONE.linearInt4(new Float32Array(64), "f16", 1, w, null),
    /linearInt4: f16 activations must be a Float16Array, got Float32Array/,
  );
  await assert.rejects(
    ONE.linearInt4(
      new Float32Array(64),
      "f32",
      1,
      { ...w, groupSize: 48 },
      null,
    ),
    /multiple of the group size \(32, 64 or 128\), got group size 48/,
  );
  await assert.rejects(
    ONE.linearInt4(new Float32Array(64), "f32", 1, {
      ...w,
      packed: new Uint8Array(63),
    }, null),
    /weight \[2, 64\] in groups of 32 needs 64 bytes and 4 scales, got 63 bytes/,
  );
  await assert.rejects(
    ONE.linearInt4(new Float32Array(64), "f32", 1, w, new Float32Array(3)),
    /bias has 3 values, expected 2/,
  );
  const w8 = randomInt8Weight(2, 3, r, false);
  await assert.rejects(
    ONE.linearW8A8(new Float32Array(5), 2, w8, null),
    /linearW8A8: input has 5 values, expected 2 × 3 = 6/,
  );
  await assert.rejects(
    ONE.linearW8A8(
      new Float32Array(3),
      1,
      { ...w8, q: new Int8Array(5) },
      null,
    ),
    /linearW8A8: weight \[2, 3\] has 5 values/,
  );
});
