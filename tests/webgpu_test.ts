import assert from "node:assert/strict";
import {
  createWebGpuBackend,
  type WebGpuBackend,
} from "../src/backend/webgpu.ts";
import { activeBackend, setBackend } from "../src/backend/select.ts";
import { referenceLinearF32 } from "../src/backend/linear_f32.ts";
import { referenceLinearInt8 } from "../src/backend/linear_int8.ts";
import type { F32Weight } from "../src/backend/backend.ts";
import { floatArrayToF32, type FloatDType } from "../src/dtype.ts";
import { activations, floats } from "./_random.ts";
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

interface Case {
  m: number;
  k: number;
  n: number;
  dtype: FloatDType;
  bias: boolean;
  zp: boolean;
  /** Run on this variant only (the largest shape costs seconds on lavapipe). */
  only?: string;
}

// Rows checked against the reference: all of them, or for the largest shapes
// the tile edges and a few others (rows are independent in every kernel).
function checkedRows(m: number, work: number): number[] {
  if (work <= 2 ** 27) return Array.from({ length: m }, (_, i) => i);
  const picks = [0, 1, 7, 8, 63, 64, 65, 127, 128, 191, 200, m - 2, m - 1];
  return [...new Set(picks.filter((i) => i >= 0 && i < m))];
}

// Every value of every axis of the grid, the biggest shapes once,
// rather than the whole cartesian product (the reference is plain JS).
const GRID: Case[] = [
  { m: 1, k: 5, n: 1, dtype: "f32", bias: true, zp: true },
  { m: 1, k: 4096, n: 4096, dtype: "f16", bias: false, zp: false },
  { m: 1, k: 4095, n: 17, dtype: "bf16", bias: true, zp: true },
  { m: 3, k: 64, n: 17, dtype: "f32", bias: false, zp: false },
  { m: 3, k: 4095, n: 4096, dtype: "bf16", bias: false, zp: true },
  { m: 64, k: 5, n: 4096, dtype: "f16", bias: true, zp: true },
  { m: 64, k: 4096, n: 17, dtype: "bf16", bias: true, zp: false },
  { m: 257, k: 64, n: 1, dtype: "f16", bias: false, zp: true },
  { m: 257, k: 4095, n: 17, dtype: "f32", bias: true, zp: true },
  {
    m: 257,
    k: 4096,
    n: 4096,
    dtype: "f32",
    bias: true,
    zp: true,
    only: "native",
  },
];

Deno.test({
  name: "linearInt8() on WebGPU matches the CPU reference over the shape grid",
  ignore,
  async fn(t) {
    for (const [ci, c] of GRID.entries()) {
      const w = int8Weight(c, 100 + ci);
      const x32 = floats(c.m * c.k, 200 + ci, 2);
      const x = activations(x32, c.dtype);
      const xf = floatArrayToF32(x, c.dtype);
      const bias = c.bias ? floats(c.n, 300 + ci) : null;
      const rows = checkedRows(c.m, c.m * c.k * c.n);
      const xRows = pickRows(xf, c.k, rows);
      const want = referenceLinearInt8(xRows, rows.length, w, bias);
      const xNorm = rowNorms(xRows, rows.length, c.k);
      const wNorm = rowNorms(w.q, c.n, c.k, w.zeroPoints);
      const outs: Float32Array[] = [];
      for (const variant of c.only ? [c.only] : Object.keys(VARIANTS)) {
        const gpu = await backend(variant);
        const label = `${c.m}×${c.k}×${c.n} ${c.dtype}${
          c.bias ? " +bias" : ""
        }${
          c.zp ? " +zp" : ""
        } (${variant}: shader-f16 ${gpu.shaderF16}, dot4 ${gpu.dot4})`;
        await t.step(label, async () => {
          const y = await gpu.linearInt8(x, c.dtype, c.m, w, bias);
          assert.equal(y.length, c.m * c.n);
          assertClose(y, want, rows, c.n, xNorm, wNorm, w.scales, bias, 1e-5);
          outs.push(y);
        });
        gpu.release(w);
      }
      // Both paths convert exactly and sum in the same order.
      if (outs.length === 2) {
        assert.deepEqual(outs[0], outs[1], "native and fallback paths differ");
      }
    }
  },
});

Deno.test({
  name: "createWebGpuBackend() options force the core-WGSL paths",
  ignore,
  async fn() {
    const fallback = await backend("fallback");
    assert.equal(fallback.shaderF16, false);
    assert.equal(fallback.dot4, false);
    const native = await backend("native");
    assert.equal(native.shaderF16, adapter().features.has("shader-f16"));
    assert.equal(native.info.name, "webgpu");
    assert.equal(native.info.adapter, adapter().info);
  },
});

Deno.test({
  name: "linearF32() on WebGPU matches the CPU reference",
  ignore,
  async fn() {
    const gpu = await backend("native");
    const shapes = [[1, 5, 17, 1], [3, 4095, 1, 0], [64, 64, 4096, 1], [
      257,
      4096,
      17,
      0,
    ]];
    for (const [si, [m, k, n, b]] of shapes.entries()) {
      const w: F32Weight = { data: floats(n! * k!, 400 + si), n: n!, k: k! };
      const x = floats(m! * k!, 500 + si, 3);
      const bias = b ? floats(n!, 600 + si) : null;
      const y = await gpu.linearF32(x, m!, w, bias);
      const rows = Array.from({ length: m! }, (_, i) => i);
      assertClose(
        y,
        referenceLinearF32(x, m!, w, bias),
        rows,
        n!,
        rowNorms(x, m!, k!),
        rowNorms(w.data, n!, k!),
        null,
        bias,
        1e-5,
      );
      gpu.release(w);
    }
  },
});

Deno.test({
  name: "linearInt8() splits weights and activations larger than a binding",
  ignore,
  async fn() {
    // 64 KiB bindings: the 1000 × 100 weight (rows padded to 112 bytes) goes
    // in two chunks of at most 576 rows, 40 activation rows in blocks of 16.
    const gpu = await createWebGpuBackend(adapter(), "test", {
      maxBindingBytes: 65536,
    });
    try {
      const c: Case = {
        m: 40,
        k: 100,
        n: 1000,
        dtype: "f16",
        bias: true,
        zp: true,
      };
      const w = int8Weight(c, 7);
      const x = Float16Array.from(floats(c.m * c.k, 8));
      const bias = floats(c.n, 9);
      const xf = floatArrayToF32(x, "f16");
      const rows = Array.from({ length: c.m }, (_, i) => i);
      for (const m of [1, c.m]) {
        const y = await gpu.linearInt8(
          x.subarray(0, m * c.k),
          "f16",
          m,
          w,
          bias,
        );
        assertClose(
          y,
          referenceLinearInt8(xf, c.m, w, bias),
          rows.slice(0, m),
          c.n,
          rowNorms(xf, c.m, c.k),
          rowNorms(w.q, c.n, c.k, w.zeroPoints),
          w.scales,
          bias,
          1e-5,
        );
      }
      await assert.rejects(
        gpu.linearInt8(
          new Float32Array(20000),
          "f32",
          1,
          int8Weight({ ...c, k: 20000, n: 1 }, 1),
          null,
        ),
        /does not fit|exceeds/,
      );
    } finally {
      gpu.destroy();
    }
  },
});

Deno.test({
  name: "linearInt8() uploads a weight once and release() frees it",
  ignore,
  async fn() {
    const gpu = await createWebGpuBackend(adapter(), "test");
    try {
      const c: Case = {
        m: 2,
        k: 33,
        n: 50,
        dtype: "f32",
        bias: false,
        zp: false,
      };
      const w = int8Weight(c, 11);
      const x = floats(c.m * c.k, 12);
      const want = referenceLinearInt8(x, c.m, w, null);
      const y1 = await gpu.linearInt8(x, "f32", c.m, w, null);
      const held = gpu.residentBytes;
      assert.ok(held >= c.n * 48, `resident ${held} bytes`);
      // Concurrent calls share the upload and take separate pooled buffers.
      const ys = await Promise.all(
        [0, 1, 2, 3].map(() => gpu.linearInt8(x, "f32", c.m, w, null)),
      );
      assert.equal(gpu.residentBytes, held);
      for (const y of [y1, ...ys]) assert.deepEqual(y, ys[0]);
      const norms = rowNorms(x, c.m, c.k);
      const wNorm = rowNorms(w.q, c.n, c.k);
      assertClose(y1, want, [0, 1], c.n, norms, wNorm, w.scales, null, 1e-5);
      gpu.release(w);
      assert.equal(gpu.residentBytes, 0);
      assert.deepEqual(await gpu.linearInt8(x, "f32", c.m, w, null), y1);
      assert.equal(gpu.residentBytes, held);
      assert.equal(
        (await gpu.linearInt8(new Float32Array(0), "f32", 0, w, null)).length,
        0,
      );
    } finally {
      gpu.destroy();
    }
  },
});

Deno.test({
  name: "the WebGPU backend rejects bad arguments and use after destroy()",
  ignore,
  async fn() {
    const gpu = await createWebGpuBackend(adapter(), "test");
    const w = int8Weight({ n: 2, k: 4, zp: false }, 1);
    await assert.rejects(
      gpu.linearInt8(new Float32Array(5), "f32", 1, w, null),
      /linearInt8: input has 5 values, expected 1 × 4 = 4/,
    );
    await assert.rejects(
      gpu.linearInt8(new Float32Array(4), "f16", 1, w, null),
      /f16 activations must be a Float16Array, got Float32Array/,
    );
    await assert.rejects(
      gpu.linearInt8(new Float32Array(4), "f32", 1, w, new Float32Array(3)),
      /linearInt8: bias has 3 values, expected 2/,
    );
    await assert.rejects(
      gpu.linearInt8(new Float32Array(4), "f32", 1, {
        ...w,
        scales: new Float32Array(1),
      }, null),
      /has 8 values, 1 scales, 0 zero points/,
    );
    // A call in flight when the device goes away rejects with the reason.
    const inFlight = gpu.linearInt8(new Float32Array(4), "f32", 1, w, null);
    gpu.destroy();
    await assert.rejects(inFlight, /The WebGPU backend was destroyed/);
    await assert.rejects(
      gpu.linearInt8(new Float32Array(4), "f32", 1, w, null),
      /The WebGPU backend was destroyed/,
    );
  },
});

Deno.test({
  name: "kernelMs reports GPU time with timing on, NaN with it off",
  ignore,
  async fn() {
    const timed = await createWebGpuBackend(adapter(), "test", {
      timing: true,
    });
    try {
      const w = int8Weight({ n: 256, k: 256, zp: false }, 3);
      await timed.linearInt8(floats(256, 4), "f32", 1, w, null);
      if (adapter().features.has("timestamp-query")) {
        assert.ok(
          timed.kernelMs > 0 && timed.kernelMs < 1e4,
          `${timed.kernelMs}`,
        );
      } else {
        assert.ok(Number.isNaN(timed.kernelMs));
      }
    } finally {
      timed.destroy();
    }
    assert.ok(Number.isNaN((await backend("native")).kernelMs));
  },
});

// ---- backend choice (select.ts), each in a fresh process with its own env

const SELECT = new URL("../src/backend/select.ts", import.meta.url).href;

async function choose(
  env: Record<string, string>,
  code = "",
): Promise<{ ok: boolean; name?: string; reason?: string; error?: string }> {
  const script = `import { getBackend, setBackend } from "${SELECT}";
${code}
try {
  const b = await getBackend();
  console.log(JSON.stringify({ ok: true, name: b.name, reason: b.reason }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: e.message }));
}
Deno.exit(0);`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    env: { TINYQ_BACKEND: "", ...env },
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  assert.ok(text, new TextDecoder().decode(out.stderr));
  return JSON.parse(text.split("\n").at(-1)!);
}

Deno.test({
  name: "getBackend() under auto takes CPU on a software adapter, saying so",
  ignore,
  async fn() {
    const got = await choose({});
    assert.equal(got.ok, true, got.error);
    if (probe.isFallback) {
      assert.equal(got.name, "cpu");
      assert.match(got.reason!, /software fallback/);
      assert.ok(
        got.reason!.includes(adapter().info.description),
        `reason ${got.reason} does not name the adapter`,
      );
    } else {
      assert.equal(got.name, "webgpu");
      assert.match(got.reason!, /hardware WebGPU adapter/);
    }
  },
});

Deno.test({
  name: 'TINYQ_BACKEND=webgpu and setBackend("webgpu") give the WebGPU backend',
  ignore,
  async fn() {
    const env = await choose({ TINYQ_BACKEND: "webgpu" });
    assert.deepEqual([env.ok, env.name], [true, "webgpu"], env.error);
    assert.match(env.reason!, /TINYQ_BACKEND=webgpu/);
    const set = await choose({}, `setBackend("webgpu");`);
    assert.deepEqual([set.ok, set.name], [true, "webgpu"], set.error);
  },
});

Deno.test("asking for webgpu where there is no adapter is a clear error", async () => {
  // DENO_WEBGPU_BACKEND=none lets wgpu enumerate no backend at all.
  const hidden = { DENO_WEBGPU_BACKEND: "none" };
  const set = await choose(hidden, `setBackend("webgpu");`);
  assert.equal(set.ok, false);
  assert.match(
    set.error!,
    /WebGPU was requested \(setBackend\(\)\) but navigator.gpu gave no adapter/,
  );
  const env = await choose({ ...hidden, TINYQ_BACKEND: "webgpu" });
  assert.match(env.error!, /WebGPU was requested \(TINYQ_BACKEND=webgpu\)/);
  const auto = await choose(hidden);
  assert.equal(auto.name, "cpu");
  assert.match(
    auto.reason!,
    /^no WebGPU adapter \(requestAdapter\(\) returned null\)/,
  );
});

Deno.test({
  name: "a lost WebGPU device is given up: the next call opens a new one",
  ignore,
  async fn() {
    setBackend("webgpu");
    try {
      const first = await activeBackend() as WebGpuBackend;
      first.device.destroy(); // a lost device, as a driver reset would leave
      await first.device.lost;
      await new Promise((resolve) => setTimeout(resolve, 0));
      const second = await activeBackend() as WebGpuBackend;
      assert.notEqual(second, first);
      const w = { data: new Float32Array([1, 2]), n: 1, k: 2 };
      const y = await second.linearF32(new Float32Array([3, 4]), 1, w, null);
      assert.deepEqual([...y], [11]);
      second.release(w);
    } finally {
      setBackend("auto");
    }
  },
});
