/**
 * The source of a CPU kernel worker, run with `node:worker_threads`'
 * `eval: true`: an inline script needs no module URL, so it works from a
 * local checkout, from JSR and inside `deno compile` binaries alike, and
 * needs no permission.
 *
 * Protocol: the first message is the compiled `WebAssembly.Module`. Each
 * later message is a job `{ arena, memory?, fn, args }`: the worker
 * instantiates the kernels on an arena's shared memory the first time it sees
 * it (`memory` is sent then), calls `fn(...args)` and answers `null`, or the
 * error's text.
 *
 * @module
 */

/** The worker's script (CommonJS, as `eval: true` runs it). */
export const WORKER_SOURCE: string = `"use strict";
const { parentPort } = require("node:worker_threads");
let kernels = null;
const instances = new Map();
parentPort.on("message", (msg) => {
  if (kernels === null) {
    kernels = msg;
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
`;
