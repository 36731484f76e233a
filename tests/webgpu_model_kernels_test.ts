import assert from "node:assert/strict";
import {
  computePipeline,
  type Constants,
  declaredBindings,
  MODEL_KERNELS,
  type ModelKernel,
} from "../src/models/_webgpu_kernels.ts";
import { sampleToken } from "../src/models/sampler.ts";
import { f32ArrayToBf16 } from "../src/dtype.ts";
import { quantizeRowsInt8Reference } from "../src/quant/quantize_rows.ts";
import { backend, ignore } from "./_webgpu_harness.ts";
import { floats, rng } from "./_random.ts";
import {
  ACTIVATIONS,
  refAttention,
  refLayerNorm,
  refRmsNorm,
  refRope,
} from "./_webgpu_kernel_reference.ts";

type Data = ArrayBufferView;
const U = GPUBufferUsage;

/**
 * Runs one kernel: `data` fills bindings or gives the byte size of empty ones
 * (binding 0 is the uniform: the step {pos, n, rows, 0}, or the sampler's
 * params); returns the bytes of binding `read`.
 */
async function run(
  kernel: ModelKernel,
  constants: Constants,
  data: Record<number, Data | number>,
  grid: [number, number],
  read: number,
): Promise<ArrayBuffer> {
  const device = (await backend("native")).device;
  const code = MODEL_KERNELS[kernel];
  device.pushErrorScope("validation");
  const pipeline = computePipeline(device, code, constants, kernel);
  const invalid = await device.popErrorScope();
  assert.equal(invalid, null, `${kernel}: ${invalid?.message}`);
  const buffers: GPUBuffer[] = [];
  const entries = declaredBindings(code).map((binding) => {
    const given = data[binding] ?? 16;
    const d = typeof given === "number" ? new Uint8Array(given) : given;
    const buffer = device.createBuffer({
      size: Math.max(16, Math.ceil(d.byteLength / 16) * 16),
      usage: (binding === 0 ? U.UNIFORM : U.STORAGE) | U.COPY_DST |
        U.COPY_SRC,
    });
    device.queue.writeBuffer(buffer, 0, d as ArrayBufferView<ArrayBuffer>);
    buffers.push(buffer);
    return { binding, resource: { buffer } };
  });
  const layout = pipeline.getBindGroupLayout(0);
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, device.createBindGroup({ layout, entries }));
  pass.dispatchWorkgroups(grid[0], grid[1]);
  pass.end();
  const src = buffers[declaredBindings(code).indexOf(read)]!;
  const rb = device.createBuffer({
    size: src.size,
    usage: U.MAP_READ | U.COPY_DST,
  });
  enc.copyBufferToBuffer(src, 0, rb, 0, src.size);
  device.queue.submit([enc.finish()]);
  await rb.mapAsync(GPUMapMode.READ);
  const out = rb.getMappedRange().slice(0);
  rb.destroy();
  for (const b of buffers) b.destroy();
  return out;
}

const step = (pos: number, n: number, rows = n) =>
  new Uint32Array([pos, n, rows, 0]);

function assertNear(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: number,
  what: string,
): void {
  assert.equal(got.length >= want.length, true, `${what}: too short`);
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!, w = want[i]!;
    if (!(Math.abs(g - w) <= tol * (1 + Math.abs(w)))) {
      assert.fail(`${what}[${i}] = ${g}, reference ${w}`);
    }
  }
}

Deno.test({
  name:
    "embedding kernel gathers f32, f16 and bf16 rows, scaled, and adds positions",
  ignore,
  async fn() {
    const dim = 37, rows = 11, n = 3;
    const table = floats(rows * dim, 1, 2);
    const tokens = new Uint32Array([7, 0, 10]);
    const tables = {
      0: table,
      1: Float16Array.from(table),
      2: f32ArrayToBf16(table),
    };
    for (const [dtype, t] of Object.entries(tables)) {
      const words = new Uint32Array(Math.ceil(t.byteLength / 4));
      new Uint8Array(words.buffer).set(new Uint8Array(t.buffer));
      const wide = dtype === "0"
        ? table
        : dtype === "1"
        ? Float32Array.from(t as Float16Array)
        : new Float32Array(
          Uint32Array.from(t as Uint16Array, (b) => b << 16).buffer,
        );
      const c = { DTYPE: Number(dtype), DIM: dim, LDH: 48, ROWS: rows };
      const h = new Float32Array(
        await run(
          "embedding",
          { ...c, SCALE: 1.5 },
          { 0: step(0, n), 1: tokens, 2: words, 3: 4 * 48 * n },
          [1, n],
          3,
        ),
      );
      for (let i = 0; i < n; i++) {
        const want = wide.subarray(tokens[i]! * dim, tokens[i]! * dim + dim)
          .map((v) => Math.fround(v * 1.5));
        assert.deepEqual(h.slice(i * 48, i * 48 + dim), want, `dtype ${dtype}`);
      }
      // Learned positions 4..6 (offset 2 from pos 2), accumulated; a chunk
      // of the table from row 6 writes only the rows it holds.
      const acc = new Float32Array(
        await run(
          "embedding",
          {
            ...c,
            ROW0: 6,
            ROWS: rows - 6,
            POSITIONS: true,
            OFFSET: 2,
            ACC: true,
          },
          {
            0: step(2, n),
            1: tokens,
            2: new Uint32Array(words.buffer, 6 * dim * (dtype === "0" ? 4 : 2)),
            3: new Float32Array(48 * n).fill(1),
          },
          [1, n],
          3,
        ),
      );
      assert.equal(acc[0], 1, "row 4 is not in the chunk");
      assert.equal(acc[48 + 3], 1, "row 5 is not in the chunk");
      assert.equal(
        acc[96 + dim - 1],
        Math.fround(1 + wide[6 * dim + dim - 1]!),
      );
    }
  },
});

Deno.test({
  name:
    "rms_norm kernel adds the residual delta and normalises, 1 + w included",
  ignore,
  async fn() {
    for (
      const [dim, ldo, addOne] of [[64, 64, false], [300, 304, true]] as const
    ) {
      const n = 3;
      const x = floats(n * dim, 2, 3),
        d = floats(n * dim, 3),
        w = floats(dim, 4);
      const sum = x.map((v, i) => v + d[i]!);
      const c = {
        DIM: dim,
        LDX: dim,
        LDD: dim,
        LDO: ldo,
        EPS: 1e-6,
        PLUS_ONE: addOne,
      };
      const data = { 0: step(0, n), 1: x, 2: d, 3: w, 4: 4 * n * ldo };
      const out = new Float32Array(
        await run("rms_norm", { ...c, ADD: true }, data, [n, 1], 4),
      );
      const want = refRmsNorm(sum, w, dim, 1e-6, addOne);
      for (let i = 0; i < n; i++) {
        assertNear(
          out.subarray(i * ldo, i * ldo + dim),
          want.subarray(i * dim, (i + 1) * dim),
          2e-6,
          `rms ${dim} row ${i}`,
        );
        assert.ok(
          out.subarray(i * ldo + dim, (i + 1) * ldo).every((v) => v === 0),
        );
      }
      const back = new Float32Array(
        await run("rms_norm", { ...c, ADD: true }, data, [n, 1], 1),
      );
      assert.deepEqual(
        back.subarray(0, n * dim),
        sum,
        "x += d is written back",
      );
      // The last row only, into output row 0.
      const last = new Float32Array(
        await run("rms_norm", { ...c, LAST: true }, data, [1, 1], 4),
      );
      assertNear(
        last.subarray(0, dim),
        refRmsNorm(x.subarray((n - 1) * dim), w, dim, 1e-6, addOne),
        2e-6,
        "last row",
      );
    }
  },
});

Deno.test({
  name:
    "rms_norm_i8 kernel gives the int8 codes and scales of the normed rows, bit for bit",
  ignore,
  async fn() {
    const dim = 300, ldo = 304, n = 3;
    // Large and tiny magnitudes, so both the float and the exact division run.
    const x = floats(n * dim, 20, 50).map((v, i) => i % 7 ? v : v * 1e-3);
    const d = floats(n * dim, 21), d2 = floats(n * dim, 22);
    const w = floats(dim, 23, 2);
    const c = { DIM: dim, LDX: dim, LDD: dim, LDO: ldo, EPS: 1e-5 };
    const data = { 0: step(0, n), 1: x, 2: d, 3: w, 6: d2 };
    const normed = new Float32Array(
      await run(
        "rms_norm",
        { ...c, ADD: true, ADD2: true },
        { ...data, 4: 4 * n * ldo },
        [n, 1],
        4,
      ),
    );
    const fused = { ...data, 8: n * ldo, 9: 8 * n };
    const cf = { ...c, ADD: true, ADD2: true };
    const qx = new Int8Array(await run("rms_norm_i8", cf, fused, [n, 1], 8));
    const xs = new Uint32Array(await run("rms_norm_i8", cf, fused, [n, 1], 9));
    const want = quantizeRowsInt8Reference(normed, "f32", n, ldo);
    assert.deepEqual(qx.subarray(0, n * ldo), want.q);
    for (let i = 0; i < n; i++) {
      assert.equal(
        new Float32Array(xs.buffer, 8 * i, 1)[0],
        want.scales[i],
        `scale of row ${i}`,
      );
      const sum = want.q.subarray(i * ldo, (i + 1) * ldo).reduce(
        (a, b) => a + b,
        0,
      );
      assert.equal(
        new Int32Array(xs.buffer, 8 * i + 4, 1)[0],
        sum,
        `Σq of row ${i}`,
      );
    }
  },
});

Deno.test({
  name: "layer_norm kernel matches LayerNorm with weight and bias",
  ignore,
  async fn() {
    const dim = 100, n = 2;
    const x = floats(n * dim, 5, 4).map((v) => v + 3), w = floats(dim, 6);
    const b = floats(dim, 7);
    const out = new Float32Array(
      await run(
        "layer_norm",
        { DIM: dim, LDX: dim, LDO: 112, EPS: 1e-5 },
        { 0: step(0, n), 1: x, 3: w, 4: 4 * n * 112, 5: b },
        [n, 1],
        4,
      ),
    );
    const want = refLayerNorm(x, w, b, dim, 1e-5);
    for (let i = 0; i < n; i++) {
      assertNear(
        out.subarray(i * 112, i * 112 + dim),
        want.subarray(i * dim, (i + 1) * dim),
        3e-6,
        `row ${i}`,
      );
    }
  },
});

/** The (cos, sin) table the engine uploads, [positions, rot / 2]. */
function ropeTable(positions: number, invFreq: Float32Array): Float32Array {
  const half = invFreq.length, t = new Float32Array(positions * half * 2);
  for (let p = 0; p < positions; p++) {
    for (let j = 0; j < half; j++) {
      const a = Math.fround(p * invFreq[j]!);
      t[2 * (p * half + j)] = Math.cos(a);
      t[2 * (p * half + j) + 1] = Math.sin(a);
    }
  }
  return t;
}

Deno.test({
  name:
    "rope_cache kernel rotates q and k (neox, interleaved, partial) and appends k, v to the cache",
  ignore,
  async fn() {
    const nq = 4, nkv = 2, hd = 16, ctx = 8, n = 2, pos = 5;
    for (
      const [rot, neox] of [[16, true], [8, true], [16, false], [
        0,
        true,
      ]] as const
    ) {
      const invFreq = Float32Array.from(
        { length: rot / 2 },
        (_, j) => Math.fround(10000 ** (-(2 * j) / rot)),
      );
      // One fused qkv row per token: [q | k | v], as Phi-3 and GPT-2 have it.
      const width = (nq + 2 * nkv) * hd;
      const qkv = floats(n * width, 8);
      const c = {
        NQ: nq,
        NKV: nkv,
        HD: hd,
        ROT: rot,
        NEOX: neox,
        CTX: ctx,
        LDQ: width,
        LDK: width,
        LDV: width,
        K_OFF: nq * hd,
        V_OFF: (nq + nkv) * hd,
      };
      const data = {
        0: step(pos, n),
        1: qkv,
        2: qkv,
        3: qkv,
        4: new Float32Array(n * nq * hd),
        5: new Float32Array(nkv * ctx * hd),
        6: new Float32Array(nkv * ctx * hd),
        7: ropeTable(ctx, invFreq.length ? invFreq : new Float32Array(1)),
      };
      const what = `rot ${rot} ${neox ? "neox" : "interleaved"}`;
      const rotate = (i: number, off: number) =>
        refRope(
          qkv.slice(i * width + off, i * width + off + hd),
          pos + i,
          invFreq,
          neox,
        );
      const qr = new Float32Array(
        await run("rope_cache", c, data, [nq + nkv, n], 4),
      );
      const kc = new Float32Array(
        await run("rope_cache", c, data, [nq + nkv, n], 5),
      );
      const vc = new Float32Array(
        await run("rope_cache", c, data, [nq + nkv, n], 6),
      );
      for (let i = 0; i < n; i++) {
        for (let h = 0; h < nq; h++) {
          const at = (i * nq + h) * hd;
          assertNear(
            qr.subarray(at, at + hd),
            rotate(i, h * hd),
            1e-6,
            `${what} q`,
          );
        }
        for (let g = 0; g < nkv; g++) {
          const at = (g * ctx + pos + i) * hd;
          assertNear(
            kc.subarray(at, at + hd),
            rotate(i, (nq + g) * hd),
            1e-6,
            `${what} k`,
          );
          const v0 = i * width + (nq + nkv + g) * hd;
          assert.deepEqual(vc.subarray(at, at + hd), qkv.subarray(v0, v0 + hd));
        }
      }
    }
  },
});

for (const kernel of ["attention", "attention_prefill"] as const) {
  Deno.test({
    name:
      `${kernel} kernel matches causal GQA softmax attention with window and soft-cap`,
    ignore,
    async fn() {
      const nq = 4, nkv = 2, ctx = 150;
      for (
        const [hd, n, pos, window, cap] of [
          [16, 1, 0, 0, 0],
          [64, 1, 140, 0, 0], // decode over three 64-key chunks
          [32, 5, 70, 0, 0], // a prefill chunk after a cached prefix
          [256, 2, 20, 7, 0],
          [16, 3, 90, 0, 5],
          [128, 37, 40, 0, 0], // three query tiles, the last one partial
          [8, 20, 0, 9, 0], // a window shorter than the query tile
          [64, 17, 3, 0, 3],
        ] as const
      ) {
        if (kernel === "attention_prefill" && hd > 128) continue;
        const kc = floats(nkv * ctx * hd, 9, 2),
          vc = floats(nkv * ctx * hd, 10);
        const q = floats(n * nq * hd, 11, 2);
        const ldo = nq * hd + 16, scale = hd ** -0.5;
        const out = new Float32Array(
          await run(
            kernel,
            {
              NQ: nq,
              NKV: nkv,
              HD: hd,
              CTX: ctx,
              LDO: ldo,
              SCALE: scale,
              CAP: cap,
              WINDOW: window,
            },
            {
              0: step(pos, n),
              1: q,
              2: kc,
              3: vc,
              4: new Float32Array(n * ldo).fill(7),
            },
            [nq, kernel === "attention" ? n : Math.ceil(n / 16)],
            4,
          ),
        );
        for (let i = 0; i < n; i++) {
          const p = pos + i, lo = window ? Math.max(0, p - window + 1) : 0;
          for (let h = 0; h < nq; h++) {
            const g = Math.floor(h / (nq / nkv));
            const row = (j: number, a: Float32Array) =>
              a.subarray((g * ctx + j) * hd, (g * ctx + j + 1) * hd);
            const js = Array.from({ length: p - lo + 1 }, (_, t) => lo + t);
            const want = refAttention(
              q.subarray((i * nq + h) * hd, (i * nq + h + 1) * hd),
              js.map((j) => row(j, kc)),
              js.map((j) => row(j, vc)),
              scale,
              cap,
            );
            const at = i * ldo + h * hd;
            assertNear(
              out.subarray(at, at + hd),
              want,
              2e-5,
              `hd ${hd} n ${n} i ${i} h ${h}`,
            );
          }
          assert.ok(
            out.subarray(i * ldo + nq * hd, (i + 1) * ldo).every((v) =>
              v === 0
            ),
          );
        }
      }
    },
  });
}

Deno.test({
  name:
    "attention kernel with ROPE rotates q and the new key itself and appends k, v, as rope_cache + attention",
  ignore,
  async fn() {
    const nq = 4, nkv = 2, hd = 32, ctx = 80;
    for (
      const [rot, neox, pos, window] of [
        [32, true, 70, 0],
        [16, false, 5, 0],
        [0, true, 0, 0],
        [32, true, 40, 9],
      ] as const
    ) {
      const invFreq = Float32Array.from(
        { length: rot / 2 },
        (_, j) => Math.fround(10000 ** (-(2 * j) / rot)),
      );
      const width = (nq + 2 * nkv) * hd;
      const qkv = floats(width, 30 + pos);
      const table = ropeTable(
        ctx,
        invFreq.length ? invFreq : new Float32Array(1),
      );
      // Earlier positions already in the cache.
      const kc0 = floats(nkv * ctx * hd, 31), vc0 = floats(nkv * ctx * hd, 32);
      const shape = { NQ: nq, NKV: nkv, HD: hd, CTX: ctx };
      const rope = {
        ...shape,
        ROT: rot,
        NEOX: neox,
        LDQ: width,
        LDK: width,
        LDV: width,
        K_OFF: nq * hd,
        V_OFF: (nq + nkv) * hd,
      };
      const two = {
        0: step(pos, 1),
        1: qkv,
        2: qkv,
        3: qkv,
        4: 4 * nq * hd,
        5: kc0,
        6: vc0,
        7: table,
      };
      const qr = new Float32Array(
        await run("rope_cache", rope, two, [nq + nkv, 1], 4),
      );
      const kc = new Float32Array(
        await run("rope_cache", rope, two, [nq + nkv, 1], 5),
      );
      const vc = new Float32Array(
        await run("rope_cache", rope, two, [nq + nkv, 1], 6),
      );
      const attn = {
        ...shape,
        LDO: nq * hd,
        SCALE: hd ** -0.5,
        WINDOW: window,
      };
      const want = new Float32Array(
        await run(
          "attention",
          attn,
          { 0: step(pos, 1), 1: qr, 2: kc, 3: vc, 4: 4 * nq * hd },
          [nq, 1],
          4,
        ),
      );
      const fused = {
        0: step(pos, 1),
        1: qkv,
        2: kc0,
        3: vc0,
        4: 4 * nq * hd,
        5: qkv,
        6: qkv,
        7: table,
      };
      const c = { ...rope, ...attn, ROPE: true };
      const got = new Float32Array(
        await run("attention", c, fused, [nq, 1], 4),
      );
      assertNear(got, want, 1e-6, `rot ${rot} pos ${pos}`);
      const gotK = new Float32Array(
        await run("attention", c, fused, [nq, 1], 2),
      );
      const gotV = new Float32Array(
        await run("attention", c, fused, [nq, 1], 3),
      );
      assert.deepEqual(gotV.subarray(0, vc.length), vc, "values appended");
      assertNear(gotK.subarray(0, kc.length), kc, 1e-6, "keys appended");
    }
  },
});

Deno.test({
  name: "glu kernel applies SiLU, GELU, GELU-tanh and ReLU, gated or plain",
  ignore,
  async fn() {
    const dim = 300, n = 2, ldo = 304;
    const gu = floats(n * 2 * dim, 12, 6); // a fused gate_up row: [gate | up]
    for (const [act, f] of ACTIVATIONS.entries()) {
      for (const gated of [true, false]) {
        const out = new Float32Array(
          await run(
            "glu",
            {
              ACT: act,
              GATED: gated,
              DIM: dim,
              LDG: 2 * dim,
              LDU: 2 * dim,
              LDO: ldo,
              U_OFF: dim,
            },
            { 0: step(0, n), 1: gu, 2: gu, 3: 4 * n * ldo },
            [2, n],
            3,
          ),
        );
        const want = Float64Array.from({ length: n * ldo }, (_, e) => {
          const i = Math.floor(e / ldo), c = e % ldo;
          if (c >= dim) return 0;
          const g = f(gu[i * 2 * dim + c]!);
          return gated ? g * gu[i * 2 * dim + dim + c]! : g;
        });
        assertNear(out, want, 1e-6, `act ${act} gated ${gated}`);
      }
    }
  },
});

Deno.test({
  name: "logit_softcap kernel caps logits with c·tanh(l / c)",
  ignore,
  async fn() {
    const v = 300, rows = 2, l = floats(v * rows, 13, 80);
    const out = new Float32Array(
      await run(
        "logit_softcap",
        { V: v, CAP: 30 },
        { 0: step(0, rows), 1: l },
        [2, rows],
        1,
      ),
    );
    // Builtin tanh is within a few ULP on lavapipe, not correctly rounded.
    assertNear(
      out,
      Float64Array.from(l, (x) => 30 * Math.tanh(x / 30)),
      5e-6,
      "capped",
    );
  },
});

async function sampleOnGpu(
  logits: Float32Array,
  params: { temperature: number; topK: number; topP: number },
  u: number,
): Promise<[number, number]> {
  const sp = new ArrayBuffer(16);
  new Float32Array(sp).set([params.temperature, 0, params.topP, u]);
  new Uint32Array(sp)[1] = params.topK;
  const out = new Uint32Array(
    await run(
      "sample",
      { V: logits.length },
      {
        0: new Uint8Array(sp),
        1: logits,
        2: new Float32Array(logits.length),
        3: new Uint32Array(4),
      },
      [1, 1],
      3,
    ),
  );
  return [out[0]!, out[1]!];
}

Deno.test({
  name:
    "sample kernel picks the host sampler's token: greedy ties, temperature, top-k, top-p",
  ignore,
  async fn() {
    const r = rng(14);
    // Quantised logits so that ties occur, and a vocabulary over one stride.
    const logits = Float32Array.from(
      { length: 1000 },
      () => Math.round(r() * 40) / 8 - 2,
    );
    const ties = new Float32Array(600).fill(-1);
    ties[77] = ties[300] = ties[599] = 3;
    assert.deepEqual(
      await sampleOnGpu(ties, { temperature: 0, topK: 0, topP: 1 }, 0),
      [77, 0],
    );
    const settings = [
      { temperature: 0, topK: 0, topP: 1 },
      { temperature: 1, topK: 0, topP: 1 },
      { temperature: 0.7, topK: 40, topP: 1 },
      { temperature: 1.3, topK: 0, topP: 0.9 },
      { temperature: 0.8, topK: 40, topP: 0.95 },
      { temperature: 2, topK: 3, topP: 0.5 },
      { temperature: 1, topK: 1, topP: 1 },
      { temperature: 0.9, topK: 256, topP: 0.8 }, // candidates fill the workgroup
      { temperature: 0.9, topK: 257, topP: 0.8 }, // one too many: the row path
    ];
    for (const params of settings) {
      for (const u of [0, 0.013, 0.25, 0.5, 0.77, 0.9999]) {
        const want = sampleToken(logits, params, u);
        const [got, nan] = await sampleOnGpu(logits, params, u);
        assert.equal(nan, 0);
        assert.equal(got, want, `${JSON.stringify(params)} u ${u}`);
      }
    }
    const bad = logits.slice();
    bad[500] = NaN;
    assert.equal(
      (await sampleOnGpu(bad, settings[0]!, 0))[1],
      1,
      "NaN is flagged",
    );
  },
});
