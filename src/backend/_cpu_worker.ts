/**
 * The source of a CPU kernel worker, run with `node:worker_threads`'
 * `eval: true`: an inline script needs no module URL, so it works from a
 * local checkout, from JSR and inside `deno compile` binaries alike, and
 * needs no permission.
 *
 * Protocol: the first message is `{ module, control }`: the compiled
 * `WebAssembly.Module` and a SharedArrayBuffer of {@linkcode CONTROL_BYTES}.
 * Jobs then come two ways:
 *
 * - by message `{ arena, memory?, fn, args }`, answered `null` or the
 *   error's text: the worker instantiates the kernels on an arena's shared
 *   memory the first time it sees it (`memory` is sent then);
 * - through the control words, for arenas it has instantiated (the fast
 *   path: a message round trip costs ~70 µs here, this ~10 µs): the caller
 *   writes the job (arena, kernel index in {@linkcode KERNEL_NAMES}, argument
 *   count, arguments) and bumps word 0; the worker, asleep in
 *   `Atomics.wait` on word 0, runs it, writes the status (0 ok, 1 failed,
 *   the text from byte {@linkcode CONTROL_TEXT} on) to word 2 and the job's
 *   number to word 1, and notifies. Every few milliseconds of idleness it
 *   returns to its event loop, so messages still get through.
 *
 * @module
 */

/** The kernels a job may name, by index. */
export const KERNEL_NAMES = [
  "linear_i8",
  "linear_f32",
  "linear_w8a8",
  "linear_i4",
  "quantize_tokens",
  "widen_rows",
  "prepare_int4_x",
  "read_bytes",
] as const;

/** Bytes of a worker's control block. */
export const CONTROL_BYTES = 1024;

/** Where the error text starts in the control block. */
export const CONTROL_TEXT = 256;

/** Control word indices: job number, done number, status, arena, kernel, argument count, arguments. */
export const CTL = {
  job: 0,
  done: 1,
  status: 2,
  arena: 3,
  fn: 4,
  argc: 5,
  args: 6,
} as const;

/** The worker's script (CommonJS, as `eval: true` runs it). */
export const WORKER_SOURCE: string = `"use strict";
const { parentPort } = require("node:worker_threads");
const NAMES = ${JSON.stringify(KERNEL_NAMES)};
let kernels = null, ctl = null, text = null, seen = 0;
const instances = new Map();
parentPort.on("message", (msg) => {
  if (kernels === null) {
    kernels = msg.module;
    ctl = new Int32Array(msg.control, 0, ${CONTROL_TEXT / 4});
    text = new Uint8Array(msg.control, ${CONTROL_TEXT});
    setImmediate(poll);
    return;
  }
  try {
    if (msg.memory) {
      const instance = new WebAssembly.Instance(kernels, { env: { memory: msg.memory } });
      instances.set(msg.arena, instance.exports);
    }
    instances.get(msg.arena)[msg.fn](...msg.args);
    parentPort.postMessage(null);
  } catch (e) {
    parentPort.postMessage(String(e && e.stack || e));
  }
});
function poll() {
  for (let idle = 0; idle < 4; idle++) {
    Atomics.wait(ctl, ${CTL.job}, seen, 2);
    const job = Atomics.load(ctl, ${CTL.job});
    if (job === seen) continue;
    seen = job;
    idle = 0;
    let status = 0;
    try {
      const args = Array.from(ctl.subarray(${CTL.args}, ${CTL.args} + ctl[${CTL.argc}]));
      instances.get(ctl[${CTL.arena}])[NAMES[ctl[${CTL.fn}]]](...args);
    } catch (e) {
      status = 1;
      const bytes = new TextEncoder().encode(String(e && e.stack || e)).subarray(0, text.length - 1);
      text.fill(0);
      text.set(bytes);
    }
    Atomics.store(ctl, ${CTL.status}, status);
    Atomics.store(ctl, ${CTL.done}, job);
    Atomics.notify(ctl, ${CTL.done});
  }
  setImmediate(poll);
}
`;
