/**
 * The CPU backend's WebAssembly kernels for code outside `backend/`: the
 * weight quantizer (`quant/quantize_rows.ts`) runs `quantize_rows` beside its
 * plain reference through this module, so no other folder imports the
 * backend's private files.
 *
 * @module
 */

export { alignUp, Arena, kernelsModule } from "./_cpu_wasm.ts";
export { defaultKernel } from "./_cpu_config.ts";
