// What the generate bench compares WebGPU figures with: the adapter's name
// and whether it is a software fallback, and the copy bandwidth of its
// memory, measured with copyBufferToBuffer between two large buffers and
// timed by timestamp queries where the adapter has them (else wall clock).

import { probeWebGpu } from "../src/backend/webgpu.ts";

/** The adapter and its measured copy bandwidth. */
export interface WebGpuProbeFigures {
  /** `vendor / architecture / description` of the adapter. */
  adapter: string;
  /** True for a software adapter (lavapipe, llvmpipe, SwiftShader, WARP). */
  fallback: boolean;
  /** Bytes moved per second (each byte read once and written once counts twice). */
  copyBytesPerS: number;
  /** How the copies were timed. */
  timer: "timestamp-query" | "wall clock";
}

/** Probes `navigator.gpu` and measures copy bandwidth; null without an adapter. */
export async function webGpuFigures(): Promise<WebGpuProbeFigures | null> {
  const probe = await probeWebGpu();
  const adapter = probe.adapter;
  if (!adapter) return null;
  const timed = adapter.features.has("timestamp-query");
  const device = await adapter.requestDevice({
    requiredFeatures: timed ? ["timestamp-query"] : [],
    requiredLimits: { maxBufferSize: adapter.limits.maxBufferSize },
  });
  const size = Math.min(2 ** 30, device.limits.maxBufferSize) & ~255;
  const U = GPUBufferUsage;
  const a = device.createBuffer({ size, usage: U.COPY_SRC | U.COPY_DST });
  const b = device.createBuffer({ size, usage: U.COPY_SRC | U.COPY_DST });
  const query = timed
    ? device.createQuerySet({ type: "timestamp", count: 2 })
    : null;
  const resolve = device.createBuffer({
    size: 16,
    usage: U.QUERY_RESOLVE | U.COPY_SRC,
  });
  const read = device.createBuffer({
    size: 16,
    usage: U.MAP_READ | U.COPY_DST,
  });
  const rounds = 8;
  let best = 0;
  try {
    for (let trial = 0; trial < 4; trial++) {
      const enc = device.createCommandEncoder();
      // An empty compute pass carries the timestamps around the copies.
      if (query) {
        enc.beginComputePass({
          timestampWrites: { querySet: query, beginningOfPassWriteIndex: 0 },
        }).end();
      }
      for (let i = 0; i < rounds; i++) {
        enc.copyBufferToBuffer(i % 2 ? b : a, 0, i % 2 ? a : b, 0, size);
      }
      if (query) {
        enc.beginComputePass({
          timestampWrites: { querySet: query, endOfPassWriteIndex: 1 },
        }).end();
        enc.resolveQuerySet(query, 0, 2, resolve, 0);
        enc.copyBufferToBuffer(resolve, 0, read, 0, 16);
      }
      const t0 = performance.now();
      device.queue.submit([enc.finish()]);
      await device.queue.onSubmittedWorkDone();
      let seconds = (performance.now() - t0) / 1000;
      if (query) {
        await read.mapAsync(GPUMapMode.READ);
        const t = new BigUint64Array(read.getMappedRange());
        const ns = Number(t[1]! - t[0]!);
        read.unmap();
        if (ns > 0) seconds = ns / 1e9;
      }
      best = Math.max(best, (2 * size * rounds) / seconds);
    }
  } finally {
    device.destroy();
  }
  const info = adapter.info;
  return {
    adapter: [info.vendor, info.architecture, info.description]
      .filter(Boolean).join(" / "),
    fallback: probe.isFallback,
    copyBytesPerS: best,
    timer: query ? "timestamp-query" : "wall clock",
  };
}

if (import.meta.main) {
  const f = await webGpuFigures();
  console.log(JSON.stringify(f));
  if (!f) Deno.exit(1);
}
