import assert from "node:assert/strict";

// A program that ends while the CPU pool's workers are alive and a WebGPU
// device is open (neither released: what a user's script does) must exit
// cleanly: no native teardown may race the process's exit.
const PROGRAM = `
import { CpuBackend } from ${
  JSON.stringify(import.meta.resolve("../src/backend/cpu.ts"))
};
import { createWebGpuBackend } from ${
  JSON.stringify(import.meta.resolve("../src/backend/webgpu.ts"))
};
const n = 256, k = 1024, m = 8;
const w = { q: new Int8Array(n * k).fill(3), scales: new Float32Array(n).fill(0.01), zeroPoints: null, n, k };
const x = new Float32Array(m * k).fill(1);
const cpu = new CpuBackend("exit test", { threads: 4 });
const adapter = await navigator.gpu?.requestAdapter();
const gpu = adapter ? await createWebGpuBackend(adapter, "exit test") : null;
for (let i = 0; i < 3; i++) {
  await Promise.all([cpu.linearInt8(x, "f32", m, w, null), gpu?.linearInt8(x, "f32", m, w, null)]);
}
console.log("done");
`;

Deno.test("a process using the CPU workers and a WebGPU device exits with code 0, every time", async () => {
  for (let run = 0; run < 3; run++) {
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", PROGRAM],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(stderr);
    assert.equal(code, 0, `run ${run + 1} exited with ${code}: ${err}`);
    assert.equal(new TextDecoder().decode(stdout).trim(), "done", err);
  }
});
