import assert from "node:assert/strict";
import fc from "fast-check";
import {
  getQScaleAndZeroPoint,
  getQScaleSymmetric,
  linearDequantization,
  linearQAsymmetric,
  linearQAsymmetricPerChannel,
  linearQSymmetric,
  linearQSymmetricPerChannel,
  linearQWithScaleAndZeroPoint,
  NonFiniteWeightError,
  quantizeRowsInt8,
  roundHalfToEven,
  Tensor,
} from "../mod.ts";
import fixtures from "./fixtures/per_channel.json" with { type: "json" };

function sourceTensor(c: (typeof fixtures.cases)[number]): Tensor {
  const shape = c.shape;
  if (c.dtype === "f32") {
    return new Tensor(new Float32Array(new Uint32Array(c.bits).buffer), shape);
  }
  const bits = new Uint16Array(c.bits);
  return c.dtype === "f16"
    ? new Tensor(new Float16Array(bits.buffer), shape)
    : new Tensor(bits, shape, "bf16");
}

for (const c of fixtures.cases) {
  Deno.test(`linearQSymmetricPerChannel() matches TinyQ's PyTorch math on ${c.dtype} weights`, () => {
    const w = sourceTensor(c);
    const { quantized, scale } = linearQSymmetricPerChannel(w, {
      name: "fixture",
    });
    const [rows, cols] = c.shape as [number, number];
    const scaleBits = new Uint32Array((scale as Tensor).data.buffer);
    for (let r = 0; r < rows; r++) {
      const got = [...quantized.data.subarray(r * cols, (r + 1) * cols)];
      if (c.zero_rows.includes(r)) {
        // TinyQ divides by a zero scale here; our contract is zeros with scale 1.
        assert.deepEqual(got, new Array(cols).fill(0), `row ${r}`);
        assert.equal((scale as Tensor).data[r], 1);
        continue;
      }
      assert.deepEqual(
        got,
        c.q.slice(r * cols, (r + 1) * cols),
        `${c.dtype} row ${r}`,
      );
      assert.equal(scaleBits[r], c.scale_bits[r], `${c.dtype} scale ${r}`);
    }
  });
}

Deno.test("roundHalfToEven() rounds ties to even like torch.round", () => {
  assert.deepEqual(
    [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 126.5, 127.5, 2.4999999, -3.7].map((v) =>
      roundHalfToEven(v) + 0
    ),
    [-2, -2, 0, 0, 2, 2, 126, 128, 2, -4],
  );
  assert.ok(Number.isNaN(roundHalfToEven(NaN)));
  assert.equal(roundHalfToEven(2 ** 60), 2 ** 60);
});

Deno.test("quantizeRowsInt8() maps an all-zero row to zeros with scale 1", () => {
  const { q, scales } = quantizeRowsInt8(new Float32Array(8), "f32", 2, 4);
  assert.deepEqual([...q], new Array(8).fill(0));
  assert.deepEqual([...scales], [1, 1]);
});

Deno.test("quantizeRowsInt8() names the tensor and index of a NaN or Inf", () => {
  const w = new Float32Array([1, 2, 3, 4, 5, NaN]);
  assert.throws(
    () => quantizeRowsInt8(w, "f32", 2, 3, "model.fc.weight"),
    (e: unknown) =>
      e instanceof NonFiniteWeightError &&
      e.message ===
        'Tensor "model.fc.weight" has NaN at [1, 2]; cannot quantize a non-finite weight',
  );
  assert.throws(
    () =>
      linearQSymmetricPerChannel(
        new Tensor(new Float32Array([Infinity, 0]), [1, 2]),
        { name: "w" },
      ),
    /Tensor "w" has Infinity at \[0, 0\]/,
  );
});

Deno.test("linearQSymmetricPerChannel() works along any axis", () => {
  const w = new Tensor(new Float32Array([1, -2, 0.5, 4, 0, 0]), [2, 3]);
  const byCol = linearQSymmetricPerChannel(w, { axis: 1 });
  const scales = [...(byCol.scale as Tensor).data];
  assert.deepEqual(scales, [4 / 127, 2 / 127, 0.5 / 127].map(Math.fround));
  assert.deepEqual([...byCol.quantized.data], [32, -127, 127, 127, 0, 0]);
  // axis -1 is the last axis; 3-D tensors work too.
  assert.deepEqual([
    ...linearQSymmetricPerChannel(w, { axis: -1 }).quantized.data,
  ], [...byCol.quantized.data]);
  const cube = new Tensor(new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]), [
    2,
    2,
    2,
  ]);
  assert.equal(
    (linearQSymmetricPerChannel(cube, { axis: 1 }).scale as Tensor).size,
    2,
  );
  assert.throws(
    () => linearQSymmetricPerChannel(w, { axis: 2 }),
    /Axis 2 is out of range/,
  );
});

Deno.test("linearQWithScaleAndZeroPoint() follows ONNX QuantizeLinear (saturate, ties to even)", () => {
  const x = new Tensor(new Float32Array([0.5, 1.5, 2.5, -1000, 1000, -0.5]), [
    6,
  ]);
  assert.deepEqual([...linearQWithScaleAndZeroPoint(x, 1, 0).data], [
    0,
    2,
    2,
    -128,
    127,
    0,
  ]);
  const u = linearQWithScaleAndZeroPoint(x, 1, 128, { dtype: "u8" });
  assert.equal(u.dtype, "u8");
  assert.deepEqual([...u.data], [128, 130, 130, 0, 255, 128]);
  // Per-axis scale and zero point along axis 1 of a [2, 2] tensor.
  const m = new Tensor(new Float32Array([1, 1, 1, 1]), [2, 2]);
  const q = linearQWithScaleAndZeroPoint(
    m,
    new Tensor(new Float32Array([0.5, 0.25]), [2]),
    new Tensor(new Int8Array([1, -1]), [2]),
  );
  assert.deepEqual([...q.data], [3, 3, 3, 3]);
  assert.throws(
    () =>
      linearQWithScaleAndZeroPoint(m, new Tensor(new Float32Array(3), [3]), 0),
    /does not match axis 1/,
  );
});

Deno.test("linearDequantization() follows ONNX DequantizeLinear", () => {
  const q = new Tensor(new Int8Array([-128, 0, 127, 5]), [2, 2]);
  const r = linearDequantization(
    q,
    new Tensor(new Float32Array([2, 0.5]), [2]),
    new Tensor(new Int8Array([0, 1]), [2]),
    {
      axis: 1,
    },
  );
  assert.deepEqual([...r.data], [-256, -0.5, 254, 2]);
  assert.throws(
    () => linearDequantization(new Tensor(new Float32Array(1), [1]), 1, 0),
    /integer tensor/,
  );
});

Deno.test("per-tensor and asymmetric variants quantize and dequantize a tensor", () => {
  const t = new Tensor(new Float32Array([-1, 0, 0.5, 3]), [4]);
  assert.equal(getQScaleSymmetric(t), Math.fround(3 / 127));
  const s = linearQSymmetric(t);
  assert.deepEqual([...s.quantized.data], [-42, 0, 21, 127]);
  const { scale, zeroPoint } = getQScaleAndZeroPoint(t);
  assert.equal(scale, Math.fround(4 / 255));
  assert.equal(zeroPoint, roundHalfToEven(-128 - Math.fround(-1 / scale)));
  const a = linearQAsymmetric(t);
  const back = linearDequantization(a.quantized, a.scale, a.zeroPoint);
  for (let i = 0; i < 4; i++) {
    assert.ok(
      Math.abs(back.data[i] as number - (t.data[i] as number)) <=
        scale / 2 + 1e-7,
    );
  }
  // A constant tensor still dequantizes to itself.
  const c = linearQAsymmetric(new Tensor(new Float32Array([300, 300]), [2]));
  assert.ok(
    Math.abs(
      linearDequantization(c.quantized, c.scale, c.zeroPoint)
        .data[0] as number - 300,
    ) < 1,
  );
});

const matrix = fc.integer({ min: 1, max: 6 }).chain((rows) =>
  fc.integer({ min: 1, max: 12 }).chain((cols) =>
    fc.tuple(
      fc.constant(rows),
      fc.constant(cols),
      fc.float32Array({
        minLength: rows * cols,
        maxLength: rows * cols,
        noNaN: true,
        noDefaultInfinity: true,
        min: Math.fround(-1e30),
        max: Math.fround(1e30),
      }),
    )
  )
);

Deno.test("property: dequantize(quantize(w)) is within scale/2 of w", () => {
  fc.assert(
    fc.property(matrix, ([rows, cols, data]) => {
      const w = new Tensor(data, [rows, cols]);
      for (
        const r of [
          linearQSymmetricPerChannel(w),
          linearQAsymmetricPerChannel(w),
        ]
      ) {
        const back = linearDequantization(r.quantized, r.scale, r.zeroPoint, {
          axis: 0,
        });
        const scales = (r.scale as Tensor).data as Float32Array;
        for (let i = 0; i < data.length; i++) {
          const s = scales[Math.floor(i / cols)]!;
          // scale/2 plus the f32 rounding of the dequantized product itself.
          const err = Math.abs((back.data[i] as number) - data[i]!);
          if (!(err <= s / 2 + Math.abs(data[i]!) * 2 ** -23 + 1e-45)) {
            return false;
          }
        }
      }
      return true;
    }),
    { seed: 7, numRuns: 300 },
  );
});

Deno.test("property: quantizing an already-quantized grid returns the same integers", () => {
  fc.assert(
    fc.property(matrix, ([rows, cols, data]) => {
      const w = new Tensor(data, [rows, cols]);
      const first = linearQSymmetricPerChannel(w);
      const grid = linearDequantization(first.quantized, first.scale, 0, {
        axis: 0,
      });
      const second = linearQSymmetricPerChannel(grid);
      // Dequantizing again gives the same floats: the grid is a fixed point.
      const again = linearDequantization(second.quantized, second.scale, 0, {
        axis: 0,
      });
      return again.data.every((v, i) => v === grid.data[i]);
    }),
    { seed: 11, numRuns: 300 },
  );
});
