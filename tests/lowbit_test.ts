// W4A16 (group-wise 4-bit weights), W8A8 (per-token int8 activations) and
// asymmetric int8 weights, each checked against a plain restatement of its
// spec written here, independently of the library's code.

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  dequantizeInt4,
  f32ArrayToBf16,
  type Int4Weight,
  type Int8Weight,
  linearQAsymmetricPerChannel,
  NonFiniteWeightError,
  packInt4,
  quantizeInt4,
  setBackend,
  Tensor,
  unpackInt4,
  W4A16LinearLayer,
  W8A32LinearLayer,
  W8A8LinearLayer,
} from "../mod.ts";
import {
  checkInt4GroupSize,
  quantizeInt4Reference,
} from "../src/quant/int4.ts";
import {
  linearInt4,
  linearW8A8,
  quantizeActivationsPerToken,
  referenceLinearInt4,
  referenceLinearW8A8,
} from "../src/backend/cpu_lowbit.ts";
import torchFixtures from "./fixtures/lowbit.json" with { type: "json" };
import { exactLinear } from "./_exact_linear.ts";
import { floats } from "./_random.ts";

setBackend("cpu");

const f = Math.fround;

/** Round half to even, restated: nearest integer, ties to the even one. */
function rhe(x: number): number {
  const lo = Math.floor(x);
  const d = x - lo;
  if (d > 0.5) return lo + 1;
  if (d < 0.5) return lo;
  return lo % 2 === 0 ? lo : lo + 1;
}

const clamp = (v: number, lo: number, hi: number) =>
  Math.min(hi, Math.max(lo, v));

const bits = (
  a: Float32Array,
) => [...new Uint32Array(Float32Array.from(a).buffer)];

// ---------------------------------------------------------------- int4 spec

interface PlainInt4 {
  codes: number[];
  scales: number[];
  zps: number[] | null;
}

/** The issue's 4-bit spec, element by element (with 0 in the asymmetric range). */
function plainInt4(
  w: ArrayLike<number>,
  rows: number,
  cols: number,
  group: number,
  asymmetric: boolean,
): PlainInt4 {
  const codes: number[] = [], scales: number[] = [], zps: number[] = [];
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < cols / group; g++) {
      const vals = Array.from(
        { length: group },
        (_, i) => w[r * cols + g * group + i]!,
      );
      const min = Math.min(0, ...vals), max = Math.max(0, ...vals);
      if (asymmetric) {
        let scale = f(f(max - min) / 15);
        if (scale === 0) scale = 1;
        const zp = clamp(rhe(f(-min / scale)), 0, 15);
        scales.push(scale);
        zps.push(zp);
        for (const v of vals) codes.push(clamp(rhe(f(v / scale)) + zp, 0, 15));
      } else {
        let scale = f(Math.max(max, -min) / 7);
        if (scale === 0) scale = 1;
        scales.push(scale);
        for (const v of vals) codes.push(clamp(rhe(f(v / scale)), -8, 7) + 8);
      }
    }
  }
  return { codes, scales, zps: asymmetric ? zps : null };
}

/** Packs codes with the documented layout: 2j low nibble, 2j + 1 high nibble. */
function plainPack(codes: number[]): number[] {
  const out: number[] = [];
  for (let j = 0; j < codes.length; j += 2) {
    out.push(codes[j]! + 16 * codes[j + 1]!);
  }
  return out;
}

const shapes = [[3, 64, 32], [2, 256, 128], [5, 128, 64], [1, 96, 32]] as const;

for (const asymmetric of [false, true]) {
  const kind = asymmetric ? "asymmetric" : "symmetric";
  for (const [rows, cols, group] of shapes) {
    Deno.test(`quantizeInt4() ${kind} ${rows}×${cols} g${group} matches the spec bit for bit (codes, packing, scales, zero points)`, () => {
      const w = floats(rows * cols, rows * 1000 + cols + group, 2);
      // Skewed groups (all positive, all negative) and an all-zero group.
      for (let c = 0; c < group; c++) {
        w[c] = Math.abs(w[c]!) + 0.25;
        if (rows > 1) w[cols + c] = -Math.abs(w[cols + c]!);
        w[(rows - 1) * cols + cols - group + c] = 0;
      }
      const got = quantizeInt4(w, "f32", rows, cols, {
        groupSize: group,
        asymmetric,
      });
      const want = plainInt4(w, rows, cols, group, asymmetric);
      assert.deepEqual([...got.packed], plainPack(want.codes));
      assert.deepEqual([...unpackInt4(got.packed)], want.codes);
      assert.deepEqual(bits(got.scales), bits(Float32Array.from(want.scales)));
      assert.deepEqual(
        got.zeroPoints && [...got.zeroPoints],
        want.zps,
      );
      assert.deepEqual(
        [got.n, got.k, got.groupSize],
        [rows, cols, group],
      );
    });
  }
}

for (const dtype of ["f16", "bf16"] as const) {
  Deno.test(`quantizeInt4() reads ${dtype} weights exactly as their f32 values`, () => {
    const t = new Tensor(floats(4 * 64, 77), [4, 64]).to(dtype);
    const asF32 = t.toF32Array();
    for (const asymmetric of [false, true]) {
      const a = quantizeInt4(t.data, dtype, 4, 64, {
        groupSize: 32,
        asymmetric,
      });
      const want = plainInt4(asF32, 4, 64, 32, asymmetric);
      assert.deepEqual([...unpackInt4(a.packed)], want.codes);
      assert.deepEqual(bits(a.scales), bits(Float32Array.from(want.scales)));
    }
  });
}

Deno.test("quantizeInt4() defaults to symmetric groups of 128", () => {
  const q = quantizeInt4(floats(2 * 256, 3), "f32", 2, 256);
  assert.equal(q.groupSize, 128);
  assert.equal(q.scales.length, 4);
  assert.equal(q.zeroPoints, null);
});

Deno.test("quantizeInt4() rounds ties to even and saturates at -8 and 7", () => {
  // absmax 7 → scale 1 exactly, so w / scale is w itself.
  const w = new Float32Array(32);
  w.set([7, -7, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, -3.5, 6.5, -6.5]);
  const q = quantizeInt4(w, "f32", 1, 32, { groupSize: 32 });
  assert.equal(q.scales[0], 1);
  const vals = [...unpackInt4(q.packed)].slice(0, 12).map((c) => c - 8);
  assert.deepEqual(vals, [7, -7, 0, 2, 2, 0, -2, -2, 4, -4, 6, -6]);
  // Asymmetric: range [-7.5, 7.5] → scale 1, zero point rhe(7.5) = 8.
  w.set([7.5, -7.5, 0.5, 1.5]);
  const a = quantizeInt4(w, "f32", 1, 32, { groupSize: 32, asymmetric: true });
  assert.equal(a.scales[0], 1);
  assert.equal(a.zeroPoints![0], 8);
  // 7.5 → rhe 8 + 8 = 16, saturated to 15; −7.5 → −8 + 8 = 0.
  assert.deepEqual([...unpackInt4(a.packed)].slice(0, 4), [15, 0, 8, 10]);
});

Deno.test("quantizeInt4() maps an all-zero group to scale 1 and zero codes", () => {
  const w = new Float32Array(64);
  w[40] = 0.7; // second group only
  const s = quantizeInt4(w, "f32", 1, 64, { groupSize: 32 });
  assert.deepEqual([...s.scales], [1, f(f(0.7) / 7)]);
  assert.ok([...unpackInt4(s.packed)].slice(0, 32).every((c) => c === 8));
  const a = quantizeInt4(w, "f32", 1, 64, { groupSize: 32, asymmetric: true });
  assert.equal(a.scales[0], 1);
  assert.equal(a.zeroPoints![0], 0);
  assert.ok([...unpackInt4(a.packed)].slice(0, 32).every((c) => c === 0));
  assert.ok(dequantizeInt4(a).slice(0, 32).every((v) => v === 0));
});

Deno.test("asymmetric int4 keeps all-positive groups unsaturated (range widened to 0)", () => {
  const w = Float32Array.from({ length: 32 }, (_, i) => 1 + i / 31); // [1, 2]
  const q = quantizeInt4(w, "f32", 1, 32, { groupSize: 32, asymmetric: true });
  assert.equal(q.scales[0], f(f(2) / 15));
  assert.equal(q.zeroPoints![0], 0);
  const codes = unpackInt4(q.packed);
  assert.equal(codes[31], 15); // the max is the top code, not clipped below it
  const back = dequantizeInt4(q);
  for (let i = 0; i < 32; i++) {
    assert.ok(Math.abs(back[i]! - w[i]!) <= q.scales[0]! / 2 + 1e-7);
  }
});

Deno.test("quantizeInt4() rejects a size not divisible by the group, naming tensor and sizes", () => {
  assert.throws(
    () =>
      quantizeInt4(new Float32Array(2 * 96), "f32", 2, 96, {
        groupSize: 64,
        name: "model.fc1.weight",
      }),
    {
      name: "RangeError",
      message:
        'Tensor "model.fc1.weight" has 96 input features, not a multiple of the group size 64; use a group size of 32, or exclude the layer',
    },
  );
  assert.throws(
    () => checkInt4GroupSize(100, 32, "w"),
    /"w" has 100 input features.*no supported group size divides it/,
  );
  assert.throws(
    () => checkInt4GroupSize(256, 48, "w"),
    /Group size 48 for "w" is not supported: use 32, 64, 128/,
  );
  assert.throws(
    () => new W4A16LinearLayer(100, 4),
    /W4A16LinearLayer\(100, 4\) weight" has 100 input features/,
  );
  assert.throws(
    () => new W4A16LinearLayer(96, 4, { groupSize: 64, name: "lm.fc.weight" }),
    /^RangeError: Tensor "lm.fc.weight" has 96 input features, not a multiple of the group size 64; use a group size of 32, or exclude the layer$/,
  );
});

Deno.test("quantizeInt4() names the tensor and index of a NaN or Inf", () => {
  const w = new Float32Array(2 * 32);
  w[32 + 5] = NaN;
  assert.throws(
    () => quantizeInt4(w, "f32", 2, 32, { groupSize: 32, name: "fc.weight" }),
    (e: unknown) =>
      e instanceof NonFiniteWeightError &&
      e.message ===
        'Tensor "fc.weight" has NaN at [1, 5]; cannot quantize a non-finite weight',
  );
  w[32 + 5] = -Infinity;
  assert.throws(
    () =>
      quantizeInt4(w, "f32", 2, 32, {
        groupSize: 32,
        asymmetric: true,
        name: "x",
      }),
    /Tensor "x" has -Infinity at \[1, 5\]/,
  );
});

Deno.test("packInt4() and unpackInt4() put element 2j in the low nibble", () => {
  const codes = Uint8Array.from({ length: 32 }, (_, i) => (i * 7) % 16);
  const packed = packInt4(codes);
  assert.deepEqual([...packed], plainPack([...codes]));
  assert.equal(packed[0], codes[0]! | (codes[1]! << 4));
  assert.deepEqual([...unpackInt4(packed)], [...codes]);
  assert.throws(() => packInt4(new Uint8Array(3)), /even number of codes/);
  assert.throws(
    () => packInt4(new Uint8Array([1, 16])),
    /code 16 at 1 does not fit in 4 bits/,
  );
});

const int4Matrix = fc.record({
  rows: fc.integer({ min: 1, max: 3 }),
  groups: fc.integer({ min: 1, max: 3 }),
  groupSize: fc.constantFrom(32, 64),
  asymmetric: fc.boolean(),
  scale: fc.constantFrom(1e-30, 1e-3, 1, 1e3, 1e30),
}).chain((p) =>
  fc.tuple(
    fc.constant(p),
    fc.float32Array({
      minLength: p.rows * p.groups * p.groupSize,
      maxLength: p.rows * p.groups * p.groupSize,
      noNaN: true,
      noDefaultInfinity: true,
      min: -1,
      max: 1,
    }).map((a) => a.map((v) => v * p.scale)),
  )
);

Deno.test("property: quantizeInt4() equals its plain reference bit for bit, from f32, f16 and bf16", () => {
  fc.assert(
    fc.property(int4Matrix, ([p, w]) => {
      const cols = p.groups * p.groupSize;
      const inputs = [[w, "f32"], [f32ArrayToBf16(w), "bf16"]] as [
        Float32Array | Float16Array | Uint16Array,
        "f32" | "f16" | "bf16",
      ][];
      // f16 holds the matrix only where it does not overflow to ±Inf.
      if (p.scale <= 1e3) inputs.push([Float16Array.from(w), "f16"]);
      for (const [data, dtype] of inputs) {
        assert.deepEqual(
          quantizeInt4(data, dtype, p.rows, cols, p),
          quantizeInt4Reference(data, dtype, p.rows, cols, p),
        );
      }
    }),
    { numRuns: 200 },
  );
});

Deno.test("property: dequantizeInt4(quantizeInt4(w)) is within scale/2 of w", () => {
  fc.assert(
    fc.property(int4Matrix, ([p, w]) => {
      const cols = p.groups * p.groupSize;
      const q = quantizeInt4(w, "f32", p.rows, cols, p);
      const back = dequantizeInt4(q);
      for (let i = 0; i < w.length; i++) {
        const s = q.scales[Math.floor(i / p.groupSize)]!;
        // scale/2, plus f32 roundings: of the scale, of −min / scale (the
        // zero point can land just past a tie) and of w / scale, each a few
        // ulps of numbers ≤ 16 in units of scale, and of (q − zp) · scale.
        const tol = s / 2 + s * 2 ** -18 + Math.abs(w[i]!) * 2 ** -23 + 1e-45;
        if (!(Math.abs(back[i]! - w[i]!) <= tol)) return false;
      }
      return true;
    }),
    { seed: 5, numRuns: 200 },
  );
});

// ----------------------------------------------------------- int4 kernels

/** f32 recursive summation over k terms: error ≤ (k + 2)·2⁻²⁴·Σ|terms|. */
function assertClose(
  got: Float32Array,
  want: { y: Float64Array; mag: Float64Array },
  k: number,
  what: string,
): void {
  for (let i = 0; i < got.length; i++) {
    const tol = (k + 2) * 2 ** -24 * want.mag[i]! + 1e-30;
    assert.ok(
      Math.abs(got[i]! - want.y[i]!) <= tol,
      `${what} output ${i}: ${got[i]} vs ${want.y[i]} (tol ${tol})`,
    );
  }
}

for (const asymmetric of [false, true]) {
  for (
    const [m, k, n, group] of [[1, 64, 5, 32], [4, 128, 3, 64], [
      9,
      256,
      7,
      128,
    ], [6, 96, 2, 32]] as const
  ) {
    Deno.test(
      `linearInt4() and referenceLinearInt4() are within f32 rounding of x·dequant(W)ᵀ (${
        asymmetric ? "asym" : "sym"
      }, ${m}×${k}×${n}, g${group})`,
      () => {
        const w = quantizeInt4(floats(n * k, 21 + m), "f32", n, k, {
          groupSize: group,
          asymmetric,
        });
        const x = floats(m * k, 31 + k, 3);
        const bias = floats(n, 41);
        const want = exactLinear(x, dequantizeInt4(w), bias, m, k, n);
        assertClose(linearInt4(x, m, w, bias), want, k, "fast");
        assertClose(referenceLinearInt4(x, m, w, bias), want, k, "reference");
        assertClose(
          linearInt4(x, m, w, null),
          exactLinear(x, dequantizeInt4(w), null, m, k, n),
          k,
          "fast, no bias",
        );
      },
    );
  }
}

Deno.test("referenceLinearInt4() sums each group in f32, then scales it", () => {
  // Two groups of 32: codes 9 (q = +1) with scale 0.5, codes 6 (q = −2) with scale 3.
  const packed = new Uint8Array(32);
  packed.fill(0x99, 0, 16);
  packed.fill(0x66, 16, 32);
  const w: Int4Weight = {
    packed,
    scales: new Float32Array([0.5, 3]),
    zeroPoints: null,
    n: 1,
    k: 64,
    groupSize: 32,
  };
  const x = new Float32Array(64).fill(1);
  x[33] = 0.1;
  const g2 = f(f(30 * -2 + f(0.1 * -2)) + -2); // x[32], then 0.1, then 30 ones
  let p = 0;
  for (let t = 32; t < 64; t++) p = f(p + f(x[t]! * -2));
  assert.equal(p, f(p)); // the reference's own order, restated
  const want = f(f(16) + f(p * 3));
  assert.equal(referenceLinearInt4(x, 1, w, null)[0], want);
  assert.ok(Math.abs(want - (16 + g2 * 3)) < 1e-4);
  assert.ok(Math.abs(linearInt4(x, 1, w, null)[0]! - want) < 1e-4);
});

Deno.test("linearInt4() reads packed bytes at any byte offset", () => {
  const [n, k] = [3, 64];
  const w = quantizeInt4(floats(n * k, 8), "f32", n, k, { groupSize: 32 });
  const shifted = new Uint8Array(w.packed.length + 1).subarray(1);
  shifted.set(w.packed);
  const x = floats(5 * k, 9);
  assert.deepEqual(
    linearInt4(x, 5, { ...w, packed: shifted }, null),
    linearInt4(x, 5, w, null),
  );
});

Deno.test("the int4 kernels check their arguments", () => {
  const w = quantizeInt4(floats(64, 1), "f32", 1, 64, { groupSize: 32 });
  assert.throws(
    () => linearInt4(new Float32Array(63), 1, w, null),
    /x must have 64 elements, got 63/,
  );
  assert.throws(
    () => linearInt4(new Float32Array(64), 1, { ...w, groupSize: 48 }, null),
    /multiple of the group size/,
  );
  assert.throws(
    () => referenceLinearInt4(new Float32Array(64), 1, w, new Float32Array(2)),
    /bias must have 1 elements, got 2/,
  );
});

// ------------------------------------------------------------ W4A16 layer

Deno.test("W4A16LinearLayer stores int4_weights, scales, zero_points and bias in the native layout", () => {
  const layer = new W4A16LinearLayer(64, 3, { groupSize: 32, dtype: "bf16" });
  const named = () =>
    [...layer.namedTensors()].map(([name, t]) => [name, t.dtype, t.shape]);
  assert.deepEqual(named(), [
    ["int4_weights", "u8", [3, 32]],
    ["scales", "f32", [3, 2]],
    ["bias", "bf16", [3]],
  ]);
  const w = floats(3 * 64, 12);
  layer.quantize(new Tensor(w, [3, 64]), { asymmetric: true });
  assert.deepEqual(named(), [
    ["int4_weights", "u8", [3, 32]],
    ["scales", "f32", [3, 2]],
    ["zero_points", "u8", [3, 2]],
    ["bias", "bf16", [3]],
  ]);
  const want = plainInt4(w, 3, 64, 32, true);
  assert.deepEqual([...layer.int4Weights.data], plainPack(want.codes));
  assert.deepEqual([...layer.zeroPoints!.data], want.zps);
  assert.ok(layer.asymmetric);
  layer.quantize(new Tensor(w, [3, 64]));
  assert.equal(layer.zeroPoints, null);
  assert.equal(layer.groupSize, 32);
  assert.equal(new W4A16LinearLayer(256, 1).groupSize, 128);
});

for (const dtype of ["f16", "bf16", "f32"] as const) {
  Deno.test(`W4A16LinearLayer.forward() takes ${dtype}, returns ${dtype}, within its rounding of x·dequant(W)ᵀ + b`, async () => {
    const [m, k, n] = [5, 128, 6];
    const layer = new W4A16LinearLayer(k, n, { groupSize: 64, dtype });
    layer.quantize(new Tensor(floats(n * k, 51), [n, k]).to(dtype), {
      asymmetric: dtype === "bf16",
    });
    layer.bias = new Tensor(floats(n, 52), [n]).to(dtype);
    const x = new Tensor(floats(m * k, 53), [m, k]).to(dtype);
    const y = await layer.forward(x.reshape([1, m, k]));
    assert.equal(y.dtype, dtype);
    assert.deepEqual(y.shape, [1, m, n]);
    const want = exactLinear(
      x.toF32Array(),
      layer.dequantize().data as Float32Array,
      layer.bias!.toF32Array(),
      m,
      k,
      n,
    );
    const eps = { f16: 2 ** -11, bf16: 2 ** -8, f32: 0 }[dtype];
    const yf = y.toF32Array();
    for (let i = 0; i < m * n; i++) {
      const tol = eps * Math.abs(want.y[i]!) + 1e-5 * want.mag[i]! + 2 ** -24;
      assert.ok(Math.abs(yf[i]! - want.y[i]!) <= tol, `output ${i}`);
    }
  });
}

Deno.test("W4A16LinearLayer.dequantize() is within scale/2 of the float weights", () => {
  const [n, k] = [4, 128];
  const w = floats(n * k, 61);
  const layer = new W4A16LinearLayer(k, n, { bias: false });
  layer.quantize(new Tensor(w, [n, k]));
  const back = layer.dequantize();
  assert.deepEqual(back.shape, [n, k]);
  const s = layer.scales.data as Float32Array;
  for (let i = 0; i < n * k; i++) {
    assert.ok(
      Math.abs((back.data[i] as number) - w[i]!) <= s[Math.floor(i / k)]! / 2 +
          1e-7,
    );
  }
});

Deno.test("W4A16LinearLayer.fromTensors() rebuilds a layer from its stored tensors", async () => {
  const src = new W4A16LinearLayer(128, 3, { groupSize: 32 });
  src.quantize(new Tensor(floats(3 * 128, 71), [3, 128]), {
    asymmetric: true,
  });
  src.bias = new Tensor(floats(3, 72), [3]);
  const copy = W4A16LinearLayer.fromTensors({
    int4Weights: src.int4Weights,
    scales: src.scales,
    zeroPoints: src.zeroPoints,
    bias: src.bias,
  });
  assert.deepEqual(
    [copy.inFeatures, copy.outFeatures, copy.groupSize],
    [128, 3, 32],
  );
  const x = new Tensor(floats(2 * 128, 73), [2, 128]);
  assert.deepEqual(
    [...(await copy.forward(x)).data],
    [...(await src.forward(x)).data],
  );
  assert.throws(
    () =>
      W4A16LinearLayer.fromTensors({
        int4Weights: src.int4Weights,
        scales: new Tensor(new Float32Array(9), [3, 3]),
      }),
    /do not split 128 input features into equal groups/,
  );
});

Deno.test("W4A16LinearLayer rejects bad buffers and inputs", async () => {
  const layer = new W4A16LinearLayer(64, 2, { groupSize: 32 });
  assert.throws(
    () => (layer.scales = new Tensor(new Float32Array(2), [2, 1])),
    /scales must be f32 \[2, 2\], got f32 \[2, 1\]/,
  );
  assert.throws(
    () => (layer.int4Weights = new Tensor(new Int8Array(64), [2, 32])),
    /int4Weights must be u8 \[2, 32\], got i8/,
  );
  assert.throws(
    () => (layer.zeroPoints = new Tensor(new Uint8Array(2), [2, 1])),
    /zeroPoints must be u8 \[2, 2\]/,
  );
  assert.throws(
    () => layer.quantize(new Tensor(new Float32Array(64), [1, 64])),
    /must be \[2, 64\] to quantize/,
  );
  await assert.rejects(
    layer.forward(new Tensor(new Int8Array(64), [1, 64])),
    /takes f16, bf16 or f32 activations, got i8/,
  );
  await assert.rejects(
    layer.forward(new Tensor(new Float32Array(32), [1, 32])),
    /expects input of shape \[\.\.\., 64\], got \[1, 32\]/,
  );
});

// --------------------------------------------------------------- W8A8 spec

/** The issue's per-token activation quantization, restated. */
function plainActivations(
  x: Float32Array,
  m: number,
  k: number,
): { q: number[]; scales: number[] } {
  const q: number[] = [], scales: number[] = [];
  for (let i = 0; i < m; i++) {
    const row = [...x.subarray(i * k, (i + 1) * k)];
    let s = f(Math.max(0, ...row.map(Math.abs)) / 127);
    if (s === 0) s = 1;
    scales.push(s);
    for (const v of row) q.push(clamp(rhe(f(v / s)), -128, 127));
  }
  return { q, scales };
}

/** Plain int32 accumulators Σ qx·(qw − zp), then the documented epilogue. */
function plainW8A8(
  x: Float32Array,
  m: number,
  w: Int8Weight,
  bias: Float32Array | null,
): { acc: number[]; y: Float32Array } {
  const a = plainActivations(x, m, w.k);
  const acc: number[] = [];
  const y = new Float32Array(m * w.n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < w.n; j++) {
      let s = 0;
      const zp = w.zeroPoints ? w.zeroPoints[j]! : 0;
      for (let t = 0; t < w.k; t++) {
        s += a.q[i * w.k + t]! * (w.q[j * w.k + t]! - zp);
      }
      assert.ok(Math.abs(s) < 2 ** 31, "fits int32");
      acc.push(s);
      const v = f(f(f(s) * a.scales[i]!) * w.scales[j]!);
      y[i * w.n + j] = bias ? f(v + bias[j]!) : v;
    }
  }
  return { acc, y };
}

function int8Weight(
  data: Float32Array,
  n: number,
  k: number,
  asymmetric: boolean,
): Int8Weight {
  const layer = new W8A32LinearLayer(k, n, { bias: false });
  layer.quantize(new Tensor(data, [n, k]), { asymmetric });
  return {
    q: layer.int8Weights.data as Int8Array,
    scales: layer.scales.data as Float32Array,
    zeroPoints: (layer.zeroPoints?.data as Int8Array | undefined) ?? null,
    n,
    k,
  };
}

Deno.test("quantizeActivationsPerToken() matches the spec: per-row absmax/127, ties to even, zero row → scale 1", () => {
  const [m, k] = [4, 37];
  const x = floats(m * k, 81, 5);
  x.fill(0, k, 2 * k); // row 1 all zeros
  // Row 2: absmax 127 → scale 1, so the values themselves are rounded.
  x.set([127, 0.5, 1.5, 2.5, -0.5, -1.5, -126.5, 3.4999], 2 * k);
  for (let t = 2 * k + 8; t < 3 * k; t++) x[t] = 0.25;
  const got = quantizeActivationsPerToken(x, m, k);
  const want = plainActivations(x, m, k);
  assert.deepEqual([...got.q], want.q);
  assert.deepEqual(bits(got.scales), bits(Float32Array.from(want.scales)));
  assert.equal(got.scales[1], 1);
  assert.equal(got.scales[2], 1);
  assert.deepEqual(
    [...got.q.subarray(2 * k, 2 * k + 8)],
    [127, 0, 2, 2, 0, -2, -126, 3],
  );
});

for (const asymmetric of [false, true]) {
  for (
    const [m, k, n] of [[1, 64, 7], [4, 36, 3], [9, 132, 5], [7, 5, 2], [
      2,
      130,
      4,
    ]]
  ) {
    Deno.test(
      `linearW8A8() and referenceLinearW8A8() equal the spec bit for bit (${
        asymmetric ? "zero-point" : "symmetric"
      } weights, ${m}×${k}×${n})`,
      () => {
        const w = int8Weight(
          floats(n * k, 90 + k).map((v, i) => v + (i % 3 === 0 ? 0.6 : 0)),
          n,
          k,
          asymmetric,
        );
        const x = floats(m * k, 91 + m, 4);
        const bias = floats(n, 92);
        for (const b of [bias, null]) {
          const want = plainW8A8(x, m, w, b);
          assert.deepEqual(bits(linearW8A8(x, m, w, b)), bits(want.y));
          assert.deepEqual(bits(referenceLinearW8A8(x, m, w, b)), bits(want.y));
        }
      },
    );
  }
}

Deno.test("W8A8 converts the int32 accumulator to f32 before scaling (|acc| > 2²⁴)", () => {
  const k = 2048;
  const x = new Float32Array(k).fill(1);
  x[0] = 0.9; // → 114: the accumulator is odd and above 2²⁴, so f32(acc) rounds
  const w: Int8Weight = {
    q: new Int8Array(k).fill(127),
    scales: new Float32Array([f(1 / 3)]),
    zeroPoints: null,
    n: 1,
    k,
  };
  w.q[1] = 125; // 114·127 + 127·125 + 2046·127² is odd
  const { acc, y } = plainW8A8(x, 1, w, null);
  assert.ok(acc[0]! > 2 ** 24 && f(acc[0]!) !== acc[0]);
  assert.equal(linearW8A8(x, 1, w, null)[0], y[0]);
  assert.equal(referenceLinearW8A8(x, 1, w, null)[0], y[0]);
});

Deno.test("W8A8 gives NaN for a row holding NaN or Inf, and finite rows elsewhere", () => {
  const w = int8Weight(floats(3 * 8, 5), 3, 8, false);
  const x = floats(3 * 8, 6);
  x[8 + 2] = NaN;
  x[16] = Infinity;
  const y = linearW8A8(x, 3, w, null);
  assert.ok(y.slice(0, 3).every(Number.isFinite));
  assert.ok(y.slice(3).every(Number.isNaN));
  assert.deepEqual(bits(referenceLinearW8A8(x, 3, w, null)), bits(y));
});

Deno.test("linearW8A8() reads weights at any byte offset", () => {
  const w = int8Weight(floats(4 * 32, 7), 4, 32, true);
  const q = new Int8Array(w.q.length + 3).subarray(3);
  q.set(w.q);
  const x = floats(6 * 32, 8);
  assert.deepEqual(
    linearW8A8(x, 6, { ...w, q }, null),
    linearW8A8(x, 6, w, null),
  );
});

// -------------------------------------------------------------- W8A8 layer

Deno.test("W8A8LinearLayer.forward() is the W8A8 kernel, within activation rounding of x·dequant(W)ᵀ + b", async () => {
  const [m, k, n] = [3, 48, 5];
  const layer = new W8A8LinearLayer(k, n);
  layer.quantize(new Tensor(floats(n * k, 101), [n, k]));
  layer.bias = new Tensor(floats(n, 102), [n]);
  const x = floats(m * k, 103, 2);
  const y = await layer.forward(new Tensor(x, [m, 1, k]));
  assert.equal(y.dtype, "f32");
  assert.deepEqual(y.shape, [m, 1, n]);
  const w = {
    q: layer.int8Weights.data as Int8Array,
    scales: layer.scales.data as Float32Array,
    zeroPoints: null,
    n,
    k,
  };
  const bias = layer.bias.data as Float32Array;
  assert.deepEqual(
    bits(y.data as Float32Array),
    bits(plainW8A8(x, m, w, bias).y),
  );
  // Each activation moves by at most s_x / 2, so y moves by ≤ Σ (s_x/2)·|w|.
  const wd = layer.dequantize().data as Float32Array;
  const exact = exactLinear(x, wd, bias, m, k, n);
  const sx = quantizeActivationsPerToken(x, m, k).scales;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let budget = 0;
      for (let t = 0; t < k; t++) {
        budget += sx[i]! / 2 * Math.abs(wd[j * k + t]!);
      }
      const err = Math.abs((y.data[i * n + j] as number) - exact.y[i * n + j]!);
      assert.ok(err <= budget + 1e-5 * exact.mag[i * n + j]!, `(${i}, ${j})`);
    }
  }
});

Deno.test("W8A8LinearLayer supports asymmetric weights and takes only f32", async () => {
  const layer = new W8A8LinearLayer(16, 2, { bias: false });
  const w = floats(32, 111).map((v) => v + 2); // all positive rows
  layer.quantize(new Tensor(w, [2, 16]), { asymmetric: true });
  assert.equal(layer.zeroPoints?.dtype, "i8");
  const x = floats(16, 112);
  const y = await layer.forward(new Tensor(x, [16]));
  const kw: Int8Weight = {
    q: layer.int8Weights.data as Int8Array,
    scales: layer.scales.data as Float32Array,
    zeroPoints: layer.zeroPoints!.data as Int8Array,
    n: 2,
    k: 16,
  };
  assert.deepEqual(
    bits(y.data as Float32Array),
    bits(plainW8A8(x, 1, kw, null).y),
  );
  await assert.rejects(
    layer.forward(new Tensor(new Float16Array(16), [1, 16])),
    /W8A8LinearLayer takes f32 activations, got f16/,
  );
  // Re-quantizing swaps the weights the next forward uses.
  layer.quantize(new Tensor(w.map((v) => -v), [2, 16]));
  const y2 = await layer.forward(new Tensor(x, [16]));
  assert.ok(Math.abs((y2.data[0] as number) + (y.data[0] as number)) < 0.1);
});

// ----------------------------------------------------- asymmetric int8 spec

/** The issue's asymmetric int8 spec, restated (range widened to include 0). */
function plainAsymInt8(
  w: ArrayLike<number>,
  rows: number,
  cols: number,
): { q: number[]; scales: number[]; zps: number[] } {
  const q: number[] = [], scales: number[] = [], zps: number[] = [];
  for (let r = 0; r < rows; r++) {
    const row = Array.from({ length: cols }, (_, c) => w[r * cols + c]!);
    const min = Math.min(0, ...row), max = Math.max(0, ...row);
    const scale = f(f(max - min) / 255) || 1;
    const zp = clamp(rhe(-128 - f(min / scale)), -128, 127);
    scales.push(scale);
    zps.push(zp);
    for (const v of row) q.push(clamp(rhe(f(v / scale)) + zp, -128, 127));
  }
  return { q, scales, zps };
}

for (const dtype of ["f32", "f16", "bf16"] as const) {
  Deno.test(`asymmetric int8 quantize() matches the spec bit for bit on ${dtype} weights (mixed, all-positive, all-negative, constant, zero rows)`, () => {
    const [rows, cols] = [7, 40];
    const w = floats(rows * cols, 121, 3);
    for (let c = 0; c < cols; c++) {
      w[cols + c] = Math.abs(w[cols + c]!) + 1; // all positive
      w[2 * cols + c] = -Math.abs(w[2 * cols + c]!) - 0.5; // all negative
      w[3 * cols + c] = 0.75; // constant
      w[4 * cols + c] = 0; // zeros
      w[5 * cols + c] = (c - 20) * 0.5; // a grid with ties
    }
    const t = new Tensor(w, [rows, cols]).to(dtype);
    const want = plainAsymInt8(t.toF32Array(), rows, cols);
    const r = linearQAsymmetricPerChannel(t, { name: "w" });
    assert.deepEqual([...r.quantized.data], want.q);
    assert.deepEqual(
      bits((r.scale as Tensor).data as Float32Array),
      bits(Float32Array.from(want.scales)),
    );
    assert.deepEqual([...(r.zeroPoint as Tensor).data], want.zps);
    // Every int8 layer stores exactly these through quantize({ asymmetric: true }).
    for (
      const layer of [
        new W8A32LinearLayer(cols, rows),
        new W8A8LinearLayer(cols, rows),
      ]
    ) {
      layer.quantize(t, { asymmetric: true, name: "w" });
      assert.deepEqual([...layer.int8Weights.data], want.q);
      assert.deepEqual([...layer.zeroPoints!.data], want.zps);
    }
    // All-positive row: zero point −128 and the max maps to 127, unsaturated.
    assert.equal(want.zps[1], -128);
    assert.equal(Math.max(...want.q.slice(cols, 2 * cols)), 127);
    assert.equal(want.zps[2], 127); // all negative: 0 is the top of the range
    assert.deepEqual(
      [want.scales[4], want.zps[4]],
      [1, -128],
    );
  });
}

// ------------------------------------------- PyTorch fixtures (torch f32 ops)

function fixtureWeights(c: (typeof torchFixtures.cases)[number]): Tensor {
  if (c.dtype === "f32") {
    return new Tensor(
      new Float32Array(new Uint32Array(c.bits).buffer),
      c.shape,
    );
  }
  const raw = new Uint16Array(c.bits);
  return c.dtype === "f16"
    ? new Tensor(new Float16Array(raw.buffer), c.shape)
    : new Tensor(raw, c.shape, "bf16");
}

for (const c of torchFixtures.cases) {
  Deno.test(`int4 and asymmetric int8 quantization of ${c.dtype} weights match PyTorch bit for bit`, () => {
    const w = fixtureWeights(c);
    const [rows, cols] = c.shape as [number, number];
    for (const e of c.int4) {
      const q = quantizeInt4(w.data, w.dtype as "f32", rows, cols, {
        groupSize: e.group_size,
        asymmetric: e.asymmetric,
      });
      const what = `g${e.group_size} ${e.asymmetric ? "asym" : "sym"}`;
      assert.deepEqual([...q.packed], e.packed, `${what} packed`);
      assert.deepEqual(bits(q.scales), e.scale_bits, `${what} scales`);
      assert.deepEqual(q.zeroPoints && [...q.zeroPoints], e.zero_points);
    }
    const r = linearQAsymmetricPerChannel(w);
    assert.deepEqual([...r.quantized.data], c.int8_asymmetric.q);
    assert.deepEqual(
      bits((r.scale as Tensor).data as Float32Array),
      c.int8_asymmetric.scale_bits,
    );
    assert.deepEqual(
      [...(r.zeroPoint as Tensor).data],
      c.int8_asymmetric.zero_points,
    );
  });
}

Deno.test("quantizeActivationsPerToken() matches PyTorch bit for bit", () => {
  const a = torchFixtures.activations;
  const x = new Float32Array(new Uint32Array(a.x_bits).buffer);
  const k = 128;
  const got = quantizeActivationsPerToken(x, x.length / k, k);
  assert.deepEqual([...got.q], a.q);
  assert.deepEqual(bits(got.scales), a.scale_bits);
});
