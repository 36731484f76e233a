import assert from "node:assert/strict";
import {
  f32ToFloatArray,
  Linear,
  setBackend,
  Tensor,
  W8A16LinearLayer,
  w8a32Forward,
  W8A32LinearLayer,
} from "../mod.ts";
import { exactLinear } from "./_exact_linear.ts";
import { floats } from "./_random.ts";

setBackend("cpu");

function randomTensor(shape: number[], seed: number, scale = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return new Tensor(floats(n, seed, scale), shape);
}

for (const [m, k, n] of [[1, 5, 3], [3, 64, 17], [2, 257, 9]] as const) {
  Deno.test(`W8A32LinearLayer.forward() is within 1e-5 of x @ dequant(W)ᵀ + b for ${m}×${k}×${n}`, async () => {
    const layer = new W8A32LinearLayer(k, n);
    layer.quantize(randomTensor([n, k], 1));
    layer.bias = randomTensor([n], 2);
    const x = randomTensor([m, k], 3, 4);
    const y = await layer.forward(x);
    assert.deepEqual(y.shape, [m, n]);
    assert.equal(y.dtype, "f32");
    const w = layer.dequantize().data as Float32Array;
    const ref = exactLinear(
      x.data as Float32Array,
      w,
      layer.bias!.data as Float32Array,
      m,
      k,
      n,
    );
    for (let i = 0; i < m * n; i++) {
      assert.ok(
        Math.abs((y.data[i] as number) - ref.y[i]!) <=
          1e-5 * ref.mag[i]! + 1e-30,
        `output ${i}`,
      );
    }
  });
}

for (const dtype of ["f16", "bf16"] as const) {
  Deno.test(`W8A16LinearLayer.forward() takes ${dtype}, returns ${dtype}, within its rounding of the f32 result`, async () => {
    const [m, k, n] = [4, 96, 11];
    const layer = new W8A16LinearLayer(k, n, { dtype });
    layer.quantize(randomTensor([n, k], 5).to(dtype));
    layer.bias = randomTensor([n], 6).to(dtype);
    const x = randomTensor([m, k], 7).to(dtype);
    const y = await layer.forward(x);
    assert.equal(y.dtype, dtype);
    const w = layer.dequantize().data as Float32Array;
    const ref = exactLinear(
      x.toF32Array(),
      w,
      layer.bias!.toF32Array(),
      m,
      k,
      n,
    );
    const eps = dtype === "f16" ? 2 ** -11 : 2 ** -8; // half an ulp, relative
    const yf = y.toF32Array();
    for (let i = 0; i < m * n; i++) {
      const tol = eps * Math.abs(ref.y[i]!) + 1e-5 * ref.mag[i]! + 2 ** -24;
      assert.ok(
        Math.abs(yf[i]! - ref.y[i]!) <= tol,
        `output ${i}: ${yf[i]} vs ${ref.y[i]}`,
      );
    }
  });
}

Deno.test("quantized layers take batched inputs of shape [..., in]", async () => {
  const layer = new W8A32LinearLayer(8, 3, { bias: false });
  layer.quantize(randomTensor([3, 8], 9));
  const x = randomTensor([2, 5, 8], 10);
  const y = await layer.forward(x);
  assert.deepEqual(y.shape, [2, 5, 3]);
  const row = await layer.forward(
    new Tensor((x.data as Float32Array).slice(8 * 7, 8 * 8), [8]),
  );
  assert.deepEqual([...row.data], [...y.data.slice(3 * 7, 3 * 8)]);
});

Deno.test("quantized layers reject the wrong activation dtype or width", async () => {
  const a32 = new W8A32LinearLayer(4, 2);
  const a16 = new W8A16LinearLayer(4, 2);
  await assert.rejects(
    a32.forward(new Tensor(new Float16Array(4), [1, 4])),
    /W8A32 takes f32 activations, got f16/,
  );
  await assert.rejects(
    a16.forward(new Tensor(new Float32Array(4), [1, 4])),
    /W8A16 takes f16 or bf16 activations, got f32/,
  );
  await assert.rejects(
    a32.forward(new Tensor(new Float32Array(6), [2, 3])),
    /expects input of shape \[\.\.\., 4\], got \[2, 3\]/,
  );
  assert.throws(
    () => a32.quantize(new Tensor(new Float32Array(6), [3, 2])),
    /must be \[2, 4\] to quantize/,
  );
});

Deno.test("W8A16 quantizes exactly like W8A32 (clamped f32 math, no wrap to -128)", () => {
  // TinyQ's own W8A16 divides in bf16 without clamping, so 128 can wrap; ours cannot.
  const w = new Tensor(new Float32Array([1, -1, 0.999, 0.5]), [1, 4]).to(
    "bf16",
  );
  const a = new W8A16LinearLayer(4, 1);
  const b = new W8A32LinearLayer(4, 1);
  a.quantize(w);
  b.quantize(w);
  assert.deepEqual([...a.int8Weights.data], [...b.int8Weights.data]);
  assert.deepEqual([...a.scales.data], [...b.scales.data]);
  assert.ok(
    (a.int8Weights.data as Int8Array).every((v) => v >= -127 && v <= 127),
  );
});

Deno.test("asymmetric weights carry zero points through forward", async () => {
  const layer = new W8A32LinearLayer(16, 4, { bias: false });
  const w = randomTensor([4, 16], 12).reshape([4, 16]);
  // Shift rows so they are far from symmetric.
  const shifted = new Tensor(
    (w.data as Float32Array).map((v, i) => v + (i < 32 ? 3 : 0)),
    [4, 16],
  );
  layer.quantize(shifted, { asymmetric: true });
  assert.equal(layer.zeroPoints?.dtype, "i8");
  const x = randomTensor([2, 16], 13);
  const y = await layer.forward(x);
  const ref = exactLinear(
    x.data as Float32Array,
    layer.dequantize().data as Float32Array,
    null,
    2,
    16,
    4,
  );
  for (let i = 0; i < 8; i++) {
    assert.ok(
      Math.abs((y.data[i] as number) - ref.y[i]!) <= 1e-5 * ref.mag[i]! + 1e-6,
    );
  }
});

Deno.test("w8a32Forward() matches the layer and checks its buffers", async () => {
  const layer = new W8A32LinearLayer(6, 2);
  layer.quantize(randomTensor([2, 6], 14));
  const x = randomTensor([1, 6], 15);
  const direct = await w8a32Forward(
    layer.int8Weights,
    x,
    layer.scales,
    layer.bias,
  );
  assert.deepEqual([...direct.data], [...(await layer.forward(x)).data]);
  await assert.rejects(
    w8a32Forward(layer.int8Weights, x, new Tensor(new Float32Array(3), [3])),
    /Scales must be f32 \[2\], got f32 \[3\]/,
  );
});

Deno.test("Linear.forward() computes x @ Wᵀ + b in the input's dtype", async () => {
  const lin = new Linear(3, 2);
  lin.weight = new Tensor(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
  lin.bias = new Tensor(new Float32Array([0.5, -0.5]), [2]);
  const y = await lin.forward(
    new Tensor(new Float32Array([1, 1, 1, 2, 0, 1]), [2, 3]),
  );
  assert.deepEqual([...y.data], [6.5, 14.5, 5.5, 13.5]);
  const h = await lin.forward(
    new Tensor(f32ToFloatArray(new Float32Array([1, 1, 1]), "f16"), [3]),
  );
  assert.equal(h.dtype, "f16");
  assert.deepEqual([...h.data], [6.5, 14.5]);
  assert.throws(
    () => (lin.weight = new Tensor(new Float32Array(4), [2, 2])),
    /must be \[2, 3\]/,
  );
});
