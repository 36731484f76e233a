import assert from "node:assert/strict";
import { createWebGpuBackend } from "../src/backend/webgpu.ts";
import {
  type Int4Weight,
  referenceLinearInt4,
} from "../src/backend/linear_int4.ts";
import { referenceLinearW8A8 } from "../src/backend/linear_w8a8.ts";
import type { Int8Weight } from "../src/backend/backend.ts";
import { setBackend } from "../src/backend/select.ts";
import { dequantizeInt4 } from "../src/quant/int4.ts";
import { W8A8LinearLayer } from "../src/quant/w8a8_linear_layer.ts";
import { W4A16LinearLayer } from "../src/quant/w4a16_linear_layer.ts";
import { Tensor } from "../src/tensor.ts";
import { floatArrayToF32, type FloatDType } from "../src/dtype.ts";
import { activations, floats, rng } from "./_random.ts";
import {
  adapter,
  assertClose,
  backend,
  ignore,
  int8Weight,
  pickRows,
  probe,
  rowNorms,
  VARIANTS,
} from "./_webgpu_harness.ts";

function int4Weight(
  n: number,
  k: number,
  groupSize: number,
  asym: boolean,
  seed: number,
): Int4Weight {
  const r = rng(seed);
  const groups = n * k / groupSize;
  return {
    packed: Uint8Array.from({ length: n * k / 2 }, () => r() * 256),
    scales: Float32Array.from({ length: groups }, () => 1e-3 + r() * 2e-2),
    zeroPoints: asym
      ? Uint8Array.from({ length: groups }, () => r() * 16)
      : null,
    n,
    k,
    groupSize,
  };
}

// Rows checked against the plain-JS reference: all, or for the largest
// shapes the tile edges and a few others (rows are independent everywhere).
function checkedRows(m: number, work: number): number[] {
  if (work <= 2 ** 26) return Array.from({ length: m }, (_, i) => i);
  const picks = [0, 1, 7, 8, 63, 64, 65, 127, 128, 200, m - 2, m - 1];
  return [...new Set(picks.filter((i) => i >= 0 && i < m))];
}

/** Asserts `got` rows `rows` equal `want` (their reference) bit for bit. */
function assertSame(
  got: Float32Array,
  want: Float32Array,
  rows: number[],
  n: number,
): void {
  for (const [wi, i] of rows.entries()) {
    for (let j = 0; j < n; j++) {
      const g = got[i * n + j]!, e = want[wi * n + j]!;
      if (!Object.is(g, e)) assert.fail(`y[${i}, ${j}] = ${g}, reference ${e}`);
    }
  }
}

interface W8A8Case {
  m: number;
  k: number;
  n: number;
  bias: boolean;
  zp: boolean;
  only?: string; // the biggest shape runs on one variant (seconds on lavapipe)
}

// Every value of each axis (K = 100 for padding), not the whole product.
const W8A8_GRID: W8A8Case[] = [
  { m: 1, k: 64, n: 17, bias: true, zp: true },
  { m: 1, k: 4096, n: 4096, bias: false, zp: false },
  { m: 1, k: 100, n: 1, bias: true, zp: false },
  { m: 3, k: 4096, n: 17, bias: true, zp: true },
  { m: 3, k: 64, n: 4096, bias: false, zp: true },
  { m: 64, k: 64, n: 4096, bias: true, zp: false },
  { m: 64, k: 4096, n: 17, bias: false, zp: true },
  { m: 257, k: 64, n: 1, bias: true, zp: true },
  { m: 257, k: 100, n: 17, bias: true, zp: true },
  { m: 257, k: 4096, n: 4096, bias: true, zp: true, only: "native" },
];

Deno.test({
  name: "linearW8A8() on WebGPU equals the CPU reference bit for bit",
  ignore,
  async fn(t) {
    for (const [ci, c] of W8A8_GRID.entries()) {
      const w = int8Weight(c, 100 + ci);
      const x = floats(c.m * c.k, 200 + ci, 3);
      const bias = c.bias ? floats(c.n, 300 + ci) : null;
      const rows = checkedRows(c.m, c.m * c.k * c.n);
      const want = referenceLinearW8A8(
        pickRows(x, c.k, rows),
        rows.length,
        w,
        bias,
      );
      for (const variant of c.only ? [c.only] : Object.keys(VARIANTS)) {
        const gpu = await backend(variant);
        const label = `${c.m}×${c.k}×${c.n}${c.bias ? " +bias" : ""}${
          c.zp ? " +zp" : ""
        } (${variant}: dot4 ${gpu.dot4})`;
        await t.step(label, async () => {
          const y = await gpu.linearW8A8(x, c.m, w, bias);
          assert.equal(y.length, c.m * c.n);
          assertSame(y, want, rows, c.n);
        });
        gpu.release(w);
      }
    }
  },
});

// Rows whose f32 quotients x / s_x sit on or a few ULP beside half-integers,
// where a 2.5-ULP GPU division or round-half-away would pick another code,
// plus the edge rows: zeros, subnormals, a scale that rounds to 0, the f32
// maximum, NaN and −Inf.
function edgeRows(k: number, seed: number): { x: Float32Array; m: number } {
  const r = rng(seed);
  const rows: Float32Array[] = [];
  const bits = new Uint32Array(1), f = new Float32Array(bits.buffer);
  // Row maxima from 1e-30 to 1e30, and tiny ones whose s_x or codes' inputs
  // are subnormal (normal x with subnormal s_x, subnormal x with normal s_x).
  const tiny = [100 * 2 ** -126, 127.5 * 2 ** -126, 1e-39, 2 ** -140];
  for (let row = 0; row < 24 + tiny.length; row++) {
    const a = Math.fround(tiny[row - 24] ?? 10 ** (r() * 60 - 30));
    const s = Math.fround(a / 127);
    const x = new Float32Array(k);
    x[row % k] = r() < 0.5 ? a : -a;
    for (let t = 0; t < k; t++) {
      if (t === row % k) continue;
      f[0] = Math.fround((Math.floor(r() * 127) + 0.5) * s);
      bits[0] += Math.floor(r() * 5) - 2;
      x[t] = r() < 0.5 ? f[0] : -f[0];
    }
    rows.push(x);
  }
  rows.push(new Float32Array(k));
  rows.push(floats(k, seed + 2, 2 ** -149 * 60)); // s_x rounds to 0: 1
  rows.push(floats(k, seed + 3, 3.4e38));
  const nan = floats(k, seed + 4);
  nan[k >> 1] = NaN;
  const inf = floats(k, seed + 5);
  inf[0] = -Infinity;
  rows.push(nan, inf);
  const x = new Float32Array(rows.length * k);
  rows.forEach((row, i) => x.set(row, i * k));
  return { x, m: rows.length };
}

function absMax(a: Float32Array): number {
  return a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
}

Deno.test({
  name:
    "linearW8A8() quantizes activations like the CPU at ties, subnormals and non-finite rows",
  ignore,
  async fn() {
    const k = 64;
    const { x, m } = edgeRows(k, 5);
    // An identity weight shows the codes times s_x directly; a random one too.
    const identity: Int8Weight = {
      q: Int8Array.from({ length: k * k }, (_, e) => e % (k + 1) === 0 ? 1 : 0),
      scales: new Float32Array(k).fill(1),
      zeroPoints: null,
      n: k,
      k,
    };
    for (const variant of Object.keys(VARIANTS)) {
      const gpu = await backend(variant);
      for (const w of [identity, int8Weight({ n: 33, k, zp: true }, 6)]) {
        const y = await gpu.linearW8A8(x, m, w, null);
        const want = referenceLinearW8A8(x, m, w, null);
        for (let i = 0; i < m; i++) {
          const got = y.subarray(i * w.n, (i + 1) * w.n);
          const ref = want.subarray(i * w.n, (i + 1) * w.n);
          // WGSL lets hardware flush f32 subnormals: a row whose s_x is one
          // may then come out as zeros (its codes are still exact). Software
          // adapters keep subnormals, so there it must match too.
          const sx = Math.fround(absMax(x.subarray(i * k, (i + 1) * k)) / 127);
          const flushed = !probe.isFallback && sx < 2 ** -126 &&
            got.every((v) => v === 0);
          if (!flushed) assertSame(got, ref, [0], w.n);
        }
        gpu.release(w);
      }
      const y = await gpu.linearW8A8(x, m, identity, null);
      assert.ok(y.subarray((m - 2) * k).every(Number.isNaN));
      assert.ok(y.subarray(0, (m - 2) * k).every(Number.isFinite));
    }
  },
});

Deno.test({
  name:
    "linearW8A8() stays exact with accumulators past 2^24 and at k = 65536, rejects k > 65536",
  ignore,
  async fn() {
    const gpu = await backend("native");
    // Same-sign activations and weights: |acc| ≈ 127 · 110 · 4096 > 2^24, so
    // f32(acc) rounds; the GPU rounds it as Math.fround does.
    const k = 4096, n = 8, m = 3;
    const r = rng(7);
    const w: Int8Weight = {
      q: Int8Array.from({ length: n * k }, () => 100 + r() * 28),
      scales: Float32Array.from({ length: n }, () => 1e-3 + r() * 1e-3),
      zeroPoints: Int8Array.from({ length: n }, (_, j) => -j * 10),
      n,
      k,
    };
    const x = Float32Array.from({ length: m * k }, () => 0.5 + r());
    const bias = floats(n, 8);
    const want = referenceLinearW8A8(x, m, w, bias);
    const y = await gpu.linearW8A8(x, m, w, bias);
    assertSame(y, want, [0, 1, 2], n);
    // The extremes at k = 65536: Σ 127 · (−128 − 127) = −2122383360 fits in
    // an int32, with raw sums and the zero-point term wrapping on the way.
    const big = 65536;
    const wb: Int8Weight = {
      q: new Int8Array(2 * big).fill(-128).fill(127, big),
      scales: new Float32Array([0.5, 0.25]),
      zeroPoints: new Int8Array([127, -128]),
      n: 2,
      k: big,
    };
    const xb = new Float32Array(big).fill(1);
    const yb = await gpu.linearW8A8(xb, 1, wb, null);
    assertSame(yb, referenceLinearW8A8(xb, 1, wb, null), [0], 2);
    assert.equal(yb[0], Math.fround(Math.fround(-2122383360 / 127) * 0.5));
    gpu.release(wb);
    await assert.rejects(
      gpu.linearW8A8(new Float32Array(big + 1), 1, {
        ...wb,
        q: new Int8Array(2 * (big + 1)),
        k: big + 1,
      }, null),
      /W8A8 on WebGPU sums int8 products in int32, exact for k ≤ 65536; this weight has k = 65537/,
    );
    await assert.rejects(
      gpu.linearW8A8(new Float16Array(k) as never, 1, w, null),
      /f32 activations must be a Float32Array, got Float16Array/,
    );
    gpu.release(w);
  },
});

interface Int4Case {
  m: number;
  k: number;
  n: number;
  group: number;
  asym: boolean;
  dtype: FloatDType;
  bias: boolean;
  only?: string;
}

const INT4_GRID: Int4Case[] = [
  { m: 1, k: 64, n: 17, group: 32, asym: false, dtype: "f16", bias: true },
  {
    m: 1,
    k: 4096,
    n: 4096,
    group: 128,
    asym: true,
    dtype: "bf16",
    bias: false,
  },
  { m: 3, k: 4096, n: 17, group: 64, asym: true, dtype: "f32", bias: true },
  { m: 3, k: 64, n: 4096, group: 32, asym: true, dtype: "f16", bias: false },
  { m: 64, k: 64, n: 17, group: 64, asym: false, dtype: "bf16", bias: true },
  { m: 64, k: 4096, n: 17, group: 128, asym: true, dtype: "f16", bias: true },
  { m: 257, k: 64, n: 1, group: 32, asym: true, dtype: "f32", bias: false },
  { m: 257, k: 4096, n: 17, group: 32, asym: false, dtype: "bf16", bias: true },
  {
    m: 257,
    k: 4096,
    n: 4096,
    group: 128,
    asym: false,
    dtype: "f16",
    bias: true,
    only: "native",
  },
];

Deno.test({
  name: "linearInt4() on WebGPU matches the CPU reference over the shape grid",
  ignore,
  async fn(t) {
    for (const [ci, c] of INT4_GRID.entries()) {
      const w = int4Weight(c.n, c.k, c.group, c.asym, 400 + ci);
      const x = activations(floats(c.m * c.k, 500 + ci, 2), c.dtype);
      const xf = floatArrayToF32(x, c.dtype);
      const bias = c.bias ? floats(c.n, 600 + ci) : null;
      const rows = checkedRows(c.m, c.m * c.k * c.n);
      const xRows = pickRows(xf, c.k, rows);
      const want = referenceLinearInt4(xRows, rows.length, w, bias);
      const xNorm = rowNorms(xRows, rows.length, c.k);
      const wNorm = rowNorms(dequantizeInt4(w), c.n, c.k);
      const outs: Float32Array[] = [];
      for (const variant of c.only ? [c.only] : Object.keys(VARIANTS)) {
        const gpu = await backend(variant);
        const label = `${c.m}×${c.k}×${c.n} ${c.dtype} group ${c.group} ${
          c.asym ? "asym" : "sym"
        }${c.bias ? " +bias" : ""} (${variant}: shader-f16 ${gpu.shaderF16})`;
        await t.step(label, async () => {
          const y = await gpu.linearInt4(x, c.dtype, c.m, w, bias);
          assert.equal(y.length, c.m * c.n);
          assertClose(y, want, rows, c.n, xNorm, wNorm, null, bias, 1e-5);
          outs.push(y);
        });
        gpu.release(w);
      }
      // Both loaders widen f16 exactly and sum in the same order.
      if (outs.length === 2) {
        assert.deepEqual(outs[0], outs[1], "native and fallback paths differ");
      }
    }
  },
});

Deno.test({
  name: "low-bit weights larger than a binding are split, with their scales",
  ignore,
  async fn() {
    // 64 KiB bindings: 1000 rows of 256 int4 (128 B) or int8 go in chunks of
    // 512 or 256 rows; 40 activation rows run in blocks of 16 (GEMM) and 8 (GEMV).
    const gpu = await createWebGpuBackend(adapter(), "test", {
      maxBindingBytes: 65536,
    });
    try {
      const m = 40, k = 256, n = 1000;
      const x = floats(m * k, 9, 2);
      const bias = floats(n, 10);
      const rows = Array.from({ length: m }, (_, i) => i);
      const w8 = int8Weight({ n, k, zp: true }, 11);
      assertSame(
        await gpu.linearW8A8(x, m, w8, bias),
        referenceLinearW8A8(x, m, w8, bias),
        rows,
        n,
      );
      const w4 = int4Weight(n, k, 32, true, 12);
      const xh = Float16Array.from(x);
      const xf = floatArrayToF32(xh, "f16");
      assertClose(
        await gpu.linearInt4(xh, "f16", m, w4, bias),
        referenceLinearInt4(xf, m, w4, bias),
        rows,
        n,
        rowNorms(xf, m, k),
        rowNorms(dequantizeInt4(w4), n, k),
        null,
        bias,
        1e-5,
      );
    } finally {
      gpu.destroy();
    }
  },
});

Deno.test({
  name:
    "low-bit weights upload once, share the int8 copy, and release() frees them",
  ignore,
  async fn() {
    const gpu = await createWebGpuBackend(adapter(), "test");
    try {
      const w4 = int4Weight(50, 128, 64, true, 13);
      const x = floats(2 * 128, 14);
      const y1 = await gpu.linearInt4(x, "f32", 2, w4, null);
      const held = gpu.residentBytes;
      // 64 code bytes, 2 scales and 2 zero points per row, at least.
      assert.ok(held >= 50 * (64 + 8 + 2), `resident ${held} bytes`);
      const ys = await Promise.all(
        [0, 1, 2].map(() => gpu.linearInt4(x, "f32", 2, w4, null)),
      );
      for (const y of ys) assert.deepEqual(y, y1);
      assert.equal(gpu.residentBytes, held);
      gpu.release(w4);
      assert.equal(gpu.residentBytes, 0);
      assert.deepEqual(await gpu.linearInt4(x, "f32", 2, w4, null), y1);
      gpu.release(w4);
      // W8A8 and the int8 kernels keep one copy of an Int8Weight.
      const w8 = int8Weight({ n: 50, k: 128, zp: false }, 15);
      await gpu.linearInt8(x, "f32", 2, w8, null);
      const int8Held = gpu.residentBytes;
      await gpu.linearW8A8(x, 2, w8, null);
      assert.equal(gpu.residentBytes, int8Held);
      gpu.release(w8);
      assert.equal(gpu.residentBytes, 0);
      assert.equal(
        (await gpu.linearW8A8(x.subarray(0, 0), 0, w8, null)).length,
        0,
      );
    } finally {
      gpu.destroy();
    }
  },
});

Deno.test({
  name: "linearInt4() rejects a bad group size, lengths and activation types",
  ignore,
  async fn() {
    const gpu = await backend("native");
    const w = int4Weight(2, 64, 32, false, 16);
    await assert.rejects(
      gpu.linearInt4(
        new Float32Array(64),
        "f32",
        1,
        { ...w, groupSize: 48 },
        null,
      ),
      /The 2×64 int4 weight \(group size 48\): k must be a multiple of the group size, 32, 64 or 128/,
    );
    await assert.rejects(
      gpu.linearInt4(new Float32Array(96), "f32", 1, {
        ...w,
        k: 96,
        groupSize: 64,
      }, null),
      /k must be a multiple of the group size/,
    );
    await assert.rejects(
      gpu.linearInt4(new Float32Array(64), "f32", 1, {
        ...w,
        scales: new Float32Array(3),
      }, null),
      /The 2×64 int4 weight \(group size 32\) has 64 bytes, 3 scales, 0 zero points/,
    );
    await assert.rejects(
      gpu.linearInt4(new Float32Array(64), "bf16", 1, w, null),
      /bf16 activations must be a Uint16Array, got Float32Array/,
    );
    await assert.rejects(
      gpu.linearInt4(new Float32Array(63), "f32", 1, w, null),
      /linearInt4: input has 63 values, expected 1 × 64 = 64/,
    );
  },
});

Deno.test({
  name:
    "W8A8LinearLayer and W4A16LinearLayer forward on webgpu agree with the CPU backend",
  ignore,
  async fn() {
    try {
      const k = 256, n = 40, m = 12;
      const weights = new Tensor(floats(n * k, 17, 0.2), [n, k]);
      const bias = new Tensor(floats(n, 18), [n]);
      const w8 = new W8A8LinearLayer(k, n);
      w8.quantize(weights, { asymmetric: true });
      w8.bias = bias;
      const w4 = new W4A16LinearLayer(k, n, { groupSize: 64 });
      w4.quantize(weights, { asymmetric: true });
      w4.bias = bias;
      const x = new Tensor(floats(m * k, 19, 2), [3, 4, k]);
      const xh = x.to("f16");
      const run = async (choice: "cpu" | "webgpu") => {
        setBackend(choice);
        const out = [await w8.forward(x), await w4.forward(xh)];
        w8.dispose();
        w4.dispose();
        return out;
      };
      const [cpu8, cpu4] = await run("cpu");
      const [gpu8, gpu4] = await run("webgpu");
      assert.deepEqual(gpu8!.shape, [3, 4, n]);
      assert.deepEqual(gpu8!.data, cpu8!.data, "W8A8 differs from the CPU");
      assert.equal(gpu4!.dtype, "f16");
      assert.deepEqual(gpu4!.shape, [3, 4, n]);
      // f32 results within 1e-5 relative, then rounded to f16: one f16 ULP.
      const a = gpu4!.toF32Array(), b = cpu4!.toF32Array();
      for (let e = 0; e < a.length; e++) {
        const ulp = 2 **
          (Math.floor(Math.log2(Math.abs(b[e]!) || 2 ** -14)) - 10);
        assert.ok(
          Math.abs(a[e]! - b[e]!) <= ulp,
          `y[${e}]: ${a[e]} vs ${b[e]}`,
        );
      }
    } finally {
      setBackend("auto");
    }
  },
});
