import assert from "node:assert/strict";
import fc from "fast-check";
import {
  bf16ArrayToF32,
  f32ArrayToBf16,
  f32ToFloatArray,
  floatArrayToF32,
  Tensor,
} from "../mod.ts";
import { bf16BitsToF32, f32ToBf16Bits } from "../src/dtype.ts";

Deno.test("f32ToBf16Bits() rounds to nearest even", () => {
  // 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties to the even one (1).
  assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80);
  // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up.
  assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8), 0x3f82);
  // Just above a tie rounds up.
  assert.equal(f32ToBf16Bits(Math.fround(1 + 2 ** -8 + 2 ** -20)), 0x3f81);
});

Deno.test("f32ToBf16Bits() keeps NaN, infinities, signed zero and subnormals", () => {
  assert.ok(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN))));
  // A NaN whose payload sits only in the low bits must not become Inf.
  const lowNaN = new Float32Array(new Uint32Array([0x7f800001]).buffer)[0]!;
  assert.ok(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(lowNaN))));
  assert.equal(bf16BitsToF32(f32ToBf16Bits(Infinity)), Infinity);
  assert.equal(bf16BitsToF32(f32ToBf16Bits(-Infinity)), -Infinity);
  assert.ok(Object.is(bf16BitsToF32(f32ToBf16Bits(-0)), -0));
  const sub = 2 ** -130; // an f32 and bf16 subnormal
  assert.equal(bf16BitsToF32(f32ToBf16Bits(sub)), sub);
  // The largest finite f32 rounds up to Inf in bf16, as IEEE rounding does.
  assert.equal(bf16BitsToF32(f32ToBf16Bits(3.4028234663852886e38)), Infinity);
});

Deno.test("bf16 array conversions agree with the scalar ones on every bit pattern", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const f = bf16ArrayToF32(all);
  for (let i = 0; i < 65536; i++) {
    const v = bf16BitsToF32(i);
    if (Number.isNaN(v)) assert.ok(Number.isNaN(f[i]!));
    else assert.ok(Object.is(f[i], v), `bits ${i}`);
  }
  // Round trip bf16 -> f32 -> bf16 is the identity except NaN payloads (made quiet).
  const back = f32ArrayToBf16(f);
  for (let i = 0; i < 65536; i++) {
    if (!Number.isNaN(f[i]!)) assert.equal(back[i], i);
  }
});

Deno.test("f32ArrayToBf16() picks the nearer bf16 neighbour, the even one on ties", () => {
  fc.assert(
    fc.property(fc.float({ noNaN: true, noDefaultInfinity: true }), (x) => {
      const v = Math.abs(Math.fround(x));
      const bits = new Uint32Array(new Float32Array([v]).buffer)[0]!;
      const down = bits >>> 16; // truncation toward zero
      const lo = bf16BitsToF32(down);
      // Past the largest finite bf16 the next step is 2^128, which rounds to Inf.
      const hi = down + 1 === 0x7f80 ? 2 ** 128 : bf16BitsToF32(down + 1);
      const dLo = v - lo, dHi = hi - v;
      const want = dLo < dHi
        ? down
        : dHi < dLo
        ? down + 1
        : (down & 1) === 0
        ? down
        : down + 1;
      return f32ArrayToBf16(new Float32Array([v]))[0] === want &&
        f32ToBf16Bits(v) === want;
    }),
    { seed: 42, numRuns: 5000 },
  );
});

Deno.test("f16 conversions round to nearest even and keep specials", () => {
  const src = new Float32Array([
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    65520,
    2 ** -24,
    2 ** -26,
    NaN,
    -Infinity,
  ]);
  const h = f32ToFloatArray(src, "f16") as Float16Array;
  assert.equal(h[0], 1);
  assert.equal(h[1], 1 + 2 ** -9);
  assert.equal(h[2], Infinity); // 65520 is the tie between 65504 and overflow
  assert.equal(h[3], 2 ** -24); // smallest f16 subnormal survives
  assert.equal(h[4], 0);
  assert.ok(Number.isNaN(h[5]!));
  assert.equal(h[6], -Infinity);
  assert.deepEqual([...floatArrayToF32(h, "f16")], [...h]);
});

Deno.test("Tensor infers dtypes, requires one for bf16 and checks shapes", () => {
  assert.equal(new Tensor(new Int8Array(6), [2, 3]).dtype, "i8");
  assert.equal(new Tensor(new Float16Array(1), [1]).dtype, "f16");
  assert.equal(new Tensor(new Uint16Array(1), [1], "bf16").dtype, "bf16");
  assert.equal(new Tensor(new BigInt64Array(2), [2]).dtype, "i64");
  assert.equal(new Tensor(new Float32Array(1), []).ndim, 0);
  assert.throws(
    () => new Tensor(new Float32Array(5), [2, 3]),
    /needs 6 elements, got 5/,
  );
  assert.throws(
    () => new Tensor(new Float32Array(1), [1], "bf16"),
    /needs a Uint16Array/,
  );
  assert.throws(() => new Tensor(new Float32Array(0), [-1]), /Invalid shape/);
});

Deno.test("Tensor.to() converts between float dtypes through f32", () => {
  const t = new Tensor(new Float32Array([1.5, -2.25, 1 / 3]), [3]);
  const b = t.to("bf16");
  assert.equal(b.dtype, "bf16");
  assert.deepEqual([...b.toF32Array()], [
    1.5,
    -2.25,
    bf16BitsToF32(f32ToBf16Bits(1 / 3)),
  ]);
  assert.equal(t.to("f32"), t);
  assert.deepEqual([...t.to("f16").toF32Array()].slice(0, 2), [1.5, -2.25]);
  assert.deepEqual([...Tensor.fromBytes(t.bytes(), [3], "f32").data], [
    ...t.data,
  ]);
});
