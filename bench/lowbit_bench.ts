// Low-bit CPU kernels next to the int8 reference kernel, on a 4096×4096
// Linear: decode (1 row) and prefill (M rows).
//
//   deno bench -A bench/lowbit_bench.ts          # Deno's table (time/iter)
//   deno run -A bench/lowbit_bench.ts [--m 128] [--reps 5]
//                                                # medians, GFLOP/s, weight GB/s
//
// The plain reference kernels run prefill at 16 rows (at 128 they take ~10 s a
// call); their GFLOP/s compare directly with the fast kernels' at M rows.

import process from "node:process";
import { parseArgs } from "node:util";
import type { Int8Weight } from "../src/backend/backend.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import {
  type Int4Weight,
  linearInt4,
  referenceLinearInt4,
} from "../src/backend/linear_int4.ts";
import { linearW8A8, referenceLinearW8A8 } from "../src/backend/linear_w8a8.ts";
import { referenceLinearInt8 } from "../src/backend/linear_int8.ts";
import { quantizeInt4 } from "../src/quant/int4.ts";
import { linearQAsymmetricPerChannel } from "../src/quant/math.ts";
import { quantizeRowsInt8 } from "../src/quant/quantize_rows.ts";
import { Tensor } from "../src/tensor.ts";

const N = 4096, K = 4096, REF_M = 16;

const args = parseArgs({
  args: import.meta.main ? Deno.args : [],
  options: { m: { type: "string", default: "128" }, reps: { type: "string" } },
});
const PREFILL_M = Number(args.values.m);

function random(n: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    out[i] = (a / 2 ** 32) * 2 - 1;
  }
  return out;
}

const w = random(N * K, 1);
const i8 = quantizeRowsInt8(w, "f32", N, K);
const int8: Int8Weight = {
  q: i8.q,
  scales: i8.scales,
  zeroPoints: null,
  n: N,
  k: K,
};
const asym8 = linearQAsymmetricPerChannel(new Tensor(w, [N, K]));
const int8Asym: Int8Weight = {
  q: asym8.quantized.data as Int8Array,
  scales: (asym8.scale as Tensor).data as Float32Array,
  zeroPoints: (asym8.zeroPoint as Tensor).data as Int8Array,
  n: N,
  k: K,
};
const int4 = quantizeInt4(w, "f32", N, K, { groupSize: 128 });
const int4Asym = quantizeInt4(w, "f32", N, K, {
  groupSize: 128,
  asymmetric: true,
});
const int4G32 = quantizeInt4(w, "f32", N, K, { groupSize: 32 });
const cpu = new CpuBackend("bench");
const cpu1 = new CpuBackend("bench, 1 thread", { threads: 1 });

const int8Bytes = (v: Int8Weight) =>
  v.q.byteLength + v.scales.byteLength + (v.zeroPoints?.byteLength ?? 0);
const int4Bytes = (v: Int4Weight) =>
  v.packed.byteLength + v.scales.byteLength + (v.zeroPoints?.byteLength ?? 0);

interface Case {
  group: string;
  name: string;
  m: number;
  bytes: number;
  baseline?: boolean;
  fn: () => unknown;
}

function cases(m: number, phase: string): Case[] {
  const x = random(m * K, 2 + m);
  const xh = Float16Array.from(x);
  const xr = x.subarray(0, Math.min(m, REF_M) * K);
  const mr = Math.min(m, REF_M);
  return [
    {
      group: phase,
      name: "int8 reference (referenceLinearInt8)",
      m: mr,
      bytes: int8Bytes(int8),
      baseline: true,
      fn: () => referenceLinearInt8(xr, mr, int8, null),
    },
    {
      group: phase,
      name: "W8A16 CpuBackend.linearInt8, default threads",
      m,
      bytes: int8Bytes(int8),
      fn: () => cpu.linearInt8(xh, "f16", m, int8, null),
    },
    {
      group: phase,
      name: "W8A16 CpuBackend.linearInt8, 1 thread",
      m,
      bytes: int8Bytes(int8),
      fn: () => cpu1.linearInt8(xh, "f16", m, int8, null),
    },
    {
      group: phase,
      name: "W8A8 linearW8A8",
      m,
      bytes: int8Bytes(int8),
      fn: () => linearW8A8(x, m, int8, null),
    },
    {
      group: phase,
      name: "W8A8 linearW8A8, zero points",
      m,
      bytes: int8Bytes(int8Asym),
      fn: () => linearW8A8(x, m, int8Asym, null),
    },
    {
      group: phase,
      name: "W8A8 referenceLinearW8A8",
      m: mr,
      bytes: int8Bytes(int8),
      fn: () => referenceLinearW8A8(xr, mr, int8, null),
    },
    {
      group: phase,
      name: "W4A16 linearInt4 g128",
      m,
      bytes: int4Bytes(int4),
      fn: () => linearInt4(x, m, int4, null),
    },
    {
      group: phase,
      name: "W4A16 linearInt4 g128 asymmetric",
      m,
      bytes: int4Bytes(int4Asym),
      fn: () => linearInt4(x, m, int4Asym, null),
    },
    {
      group: phase,
      name: "W4A16 linearInt4 g32",
      m,
      bytes: int4Bytes(int4G32),
      fn: () => linearInt4(x, m, int4G32, null),
    },
    {
      group: phase,
      name: "W4A16 referenceLinearInt4 g128",
      m: mr,
      bytes: int4Bytes(int4),
      fn: () => referenceLinearInt4(xr, mr, int4, null),
    },
  ];
}

const all = [
  ...cases(1, `decode 1×${K}×${N}`),
  ...cases(PREFILL_M, `prefill ${PREFILL_M}×${K}×${N}`),
];

if (import.meta.main) {
  const reps = Number(args.values.reps ?? 5);
  console.log(
    `${navigator.hardwareConcurrency} threads; median of ${reps} after 1 warm-up; ` +
      `references at ${REF_M} rows in prefill; rates from wall time; ` +
      `"cpu ms" is process CPU time (all threads), which a busy machine ` +
      `inflates less than wall time`,
  );
  const rows: string[][] = [[
    "phase",
    "kernel",
    "rows",
    "wall ms",
    "cpu ms",
    "GFLOP/s",
    "weight GB/s",
    "× int8 ref (per FLOP, cpu time)",
  ]];
  let baseRate = 0;
  for (const c of all) {
    await c.fn();
    const wall: number[] = [], cpuMs: number[] = [];
    for (let r = 0; r < reps; r++) {
      const u0 = process.cpuUsage();
      const t0 = performance.now();
      await c.fn();
      wall.push(performance.now() - t0);
      const u = process.cpuUsage(u0);
      cpuMs.push((u.user + u.system) / 1000);
    }
    const median = (a: number[]) => a.sort((p, q) => p - q)[a.length >> 1]!;
    const ms = median(wall), cms = median(cpuMs);
    const flop = 2 * c.m * N * K;
    if (c.baseline) baseRate = flop / cms;
    rows.push([
      c.group,
      c.name,
      String(c.m),
      ms.toFixed(1),
      cms.toFixed(1),
      (flop / ms / 1e6).toFixed(2),
      (c.bytes / ms / 1e6).toFixed(2),
      (flop / cms / baseRate).toFixed(2),
    ]);
  }
  const widths = rows[0]!.map((_, i) =>
    Math.max(...rows.map((r) => r[i]!.length))
  );
  for (const r of rows) {
    console.log(
      r.map((v, i) => i < 2 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))
        .join("  "),
    );
  }
} else {
  for (const c of all) {
    Deno.bench({
      name: `${c.name}, ${c.m} rows [${c.group.split(" ")[0]}]`,
      group: c.group,
      baseline: c.baseline,
      n: c.m > 1 ? 2 : 10,
      warmup: 1,
      fn: async () => {
        await c.fn();
      },
    });
  }
}
