/**
 * TinyQ for Deno: quantize the `Linear` layers of neural networks to 8-bit
 * integers — TinyQ's `Quantizer`, `W8A32LinearLayer`, `W8A16LinearLayer` and
 * `replaceLinearWithTargetAndQuantize` in TypeScript, with WebGPU kernels
 * where a GPU exists and typed-array CPU kernels everywhere else.
 *
 * ```ts
 * import { Linear, Module, Quantizer, Tensor, W8A16LinearLayer } from "@tinyq/tinyq";
 * import assert from "node:assert/strict";
 *
 * const model = new Module();
 * const fc = new Linear(4, 2, { bias: false });
 * fc.weight = new Tensor(new Float32Array([0.5, -1, 0.25, 0, 1, 1, -1, 0.125]), [2, 4]);
 * model.setChild("fc", fc);
 *
 * await new Quantizer(model).quantize("w8a16");
 * const layer = model.getChild("fc") as W8A16LinearLayer;
 * assert.deepEqual([...layer.int8Weights.data], [64, -127, 32, 0, 127, 127, -127, 16]);
 *
 * const y = await layer.forward(new Tensor(new Float16Array([1, 1, 1, 1]), [1, 4]));
 * assert.equal(y.dtype, "f16");
 * ```
 *
 * @module
 */

export * from "./src/dtype.ts";
export * from "./src/tensor.ts";
export * from "./src/module.ts";
export * from "./src/linear.ts";
export * from "./src/backend/backend.ts";
export * from "./src/backend/cpu_reference.ts";
export * from "./src/backend/select.ts";
export * from "./src/round.ts";
export * from "./src/quant/quantize_rows.ts";
export * from "./src/quant/math.ts";
export { w8a16Forward, w8a32Forward } from "./src/quant/forward.ts";
export * from "./src/quant/int8_linear_layer.ts";
export * from "./src/quant/w8a32_linear_layer.ts";
export * from "./src/quant/w8a16_linear_layer.ts";
export * from "./src/quant/replace.ts";
export * from "./src/quantizer.ts";
export * from "./src/quant/schemes.ts";
export * from "./src/quant/layouts.ts";
export { QuantizedLinearLayer } from "./src/quant/quantized_linear_layer.ts";
export * from "./src/backend/cpu_lowbit.ts";
export * from "./src/quant/int4.ts";
export * from "./src/quant/w8a8_linear_layer.ts";
export * from "./src/quant/w4a16_linear_layer.ts";
export * from "./src/io/safetensors.ts";
export * from "./src/backend/cpu.ts";
export * from "./src/io/checkpoint.ts";
export * from "./src/io/checkpoint_tensor.ts";
export * from "./src/io/quantize_checkpoint.ts";
export * from "./src/io/dequantize_checkpoint.ts";
export * from "./src/io/save_module.ts";
export * from "./src/io/formats/tinyq.ts";
export {
  type DemoCheckpoint,
  type DemoCheckpointOptions,
  makeDemoCheckpoint,
} from "./src/demo/demo_checkpoint.ts";
export * from "./src/backend/webgpu.ts";
export * from "./src/io/formats/registry.ts";
export * from "./src/io/formats/compressed_tensors.ts";
export * from "./src/io/formats/compressed_tensors_config.ts";
export * from "./src/io/formats/compressed_tensors_packing.ts";
export * from "./src/io/formats/compressed_tensors_warnings.ts";
export * from "./src/io/formats/quanto.ts";
export * from "./src/quant/quantize_rows_asymmetric.ts";
