/**
 * Prints the WebGPU adapter Deno sees (description, fallback flag, features,
 * WGSL language features, binding limits) and exits 1 when there is none, so
 * that CI never runs the WebGPU tests as skips.
 *
 * `deno run -A tools/check_webgpu.ts`
 *
 * @module
 */

const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
const adapter = gpu ? await gpu.requestAdapter() : null;
if (!adapter) {
  console.error(
    gpu
      ? "check_webgpu: navigator.gpu.requestAdapter() returned null (install mesa-vulkan-drivers for lavapipe)"
      : "check_webgpu: navigator.gpu is missing",
  );
  Deno.exit(1);
}
const { info, features, limits } = adapter;
const wgsl = (gpu as { wgslLanguageFeatures?: Set<string> })
  .wgslLanguageFeatures;
console.log(`adapter: ${info.description || "(no description)"}`);
console.log(`vendor: ${info.vendor} architecture: ${info.architecture}`);
console.log(`isFallbackAdapter: ${info.isFallbackAdapter}`);
console.log(`shader-f16: ${features.has("shader-f16")}`);
console.log(`features: ${[...features].sort().join(", ")}`);
console.log(
  `wgslLanguageFeatures: ${wgsl ? [...wgsl].sort().join(", ") : "(missing)"}`,
);
console.log(
  `maxStorageBufferBindingSize: ${limits.maxStorageBufferBindingSize} maxBufferSize: ${limits.maxBufferSize}`,
);
