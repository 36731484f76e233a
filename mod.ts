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

export type * from "./src/dtype.ts";
export {
  bf16ArrayToF32,
  DTYPE_SIZE,
  f32ArrayToBf16,
  f32ToFloatArray,
  floatArrayToF32,
  isFloatDType,
} from "./src/dtype.ts";
export * from "./src/tensor.ts";
export * from "./src/module.ts";
export * from "./src/linear.ts";
export * from "./src/backend/backend.ts";
export type * from "./src/backend/cpu_reference.ts";
export * from "./src/backend/select.ts";
export type * from "./src/round.ts";
export { roundHalfToEven } from "./src/round.ts";
export type * from "./src/quant/quantize_rows.ts";
export {
  NonFiniteWeightError,
  quantizeRowsInt8,
} from "./src/quant/quantize_rows.ts";
export * from "./src/quant/math.ts";
export {
  type Int8Forward,
  w8a16Forward,
  w8a32Forward,
} from "./src/quant/forward.ts";
export * from "./src/quant/int8_linear_layer.ts";
export * from "./src/quant/w8a32_linear_layer.ts";
export * from "./src/quant/w8a16_linear_layer.ts";
export * from "./src/quant/replace.ts";
export * from "./src/quantizer.ts";
export type * from "./src/quant/schemes.ts";
export {
  describeScheme,
  METHODS,
  parseQuantMethod,
  weightSchemeOf,
} from "./src/quant/schemes.ts";
export type * from "./src/quant/layouts.ts";
export { QuantizedLinearLayer } from "./src/quant/quantized_linear_layer.ts";
export type * from "./src/backend/cpu_lowbit.ts";
export type * from "./src/quant/int4.ts";
export {
  DEFAULT_INT4_GROUP_SIZE,
  dequantizeInt4,
  INT4_GROUP_SIZES,
  packInt4,
  quantizeInt4,
  unpackInt4,
} from "./src/quant/int4.ts";
export * from "./src/quant/w8a8_linear_layer.ts";
export * from "./src/quant/w4a16_linear_layer.ts";
export type * from "./src/io/safetensors.ts";
export {
  SafetensorsError,
  SafetensorsFile,
  writeSafetensors,
} from "./src/io/safetensors.ts";
export * from "./src/backend/cpu.ts";
export type * from "./src/io/checkpoint.ts";
export { Checkpoint, CheckpointError } from "./src/io/checkpoint.ts";
export * from "./src/io/checkpoint_tensor.ts";
export type * from "./src/io/quantize_checkpoint.ts";
export { quantizeCheckpoint } from "./src/io/quantize_checkpoint.ts";
export * from "./src/io/dequantize_checkpoint.ts";
export * from "./src/io/save_module.ts";
export type * from "./src/io/formats/tinyq.ts";
export { tinyqFormat } from "./src/io/formats/tinyq.ts";
export {
  type DemoCheckpoint,
  type DemoCheckpointOptions,
  makeDemoCheckpoint,
} from "./src/demo/demo_checkpoint.ts";
export * from "./src/backend/webgpu.ts";
export * from "./src/io/formats/registry.ts";
export * from "./src/io/formats/compressed_tensors.ts";
export type * from "./src/io/formats/compressed_tensors_config.ts";
export type * from "./src/io/formats/compressed_tensors_packing.ts";
export type * from "./src/io/formats/compressed_tensors_warnings.ts";
export type * from "./src/io/formats/quanto.ts";
export { quantoFormat } from "./src/io/formats/quanto.ts";
export type * from "./src/quant/quantize_rows_asymmetric.ts";
export * from "./src/models/config.ts";
export * from "./src/models/engine.ts";
export * from "./src/models/sampler.ts";
export * from "./src/models/tokenizer.ts";
export * from "./src/models/generate.ts";
export * from "./src/models/perplexity.ts";
export * from "./src/models/embedding.ts";
export * from "./src/models/norms.ts";
export * from "./src/models/rope.ts";
export * from "./src/models/kv_cache.ts";
export * from "./src/models/linear_call.ts";
export * from "./src/models/attention.ts";
export * from "./src/models/mlp.ts";
export * from "./src/models/decoder.ts";
export * from "./src/models/lm_head.ts";
export * from "./src/models/decoder_model.ts";
export * from "./src/models/families.ts";
export * from "./src/models/cpu_engine.ts";
export * from "./src/models/engines.ts";
export * from "./src/models/causal_lm.ts";
export * from "./src/models/load_causal_lm.ts";
