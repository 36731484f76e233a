// The engine's kernels (kernels/*.wgsl) by name, and pipelines built from them
// with their override constants: model shapes are compile-time constants, so
// one pipeline per (kernel, constants) serves every step of a model.

import embedding from "../../kernels/embedding.wgsl" with { type: "text" };
import rmsNorm from "../../kernels/rms_norm.wgsl" with { type: "text" };
import layerNorm from "../../kernels/layer_norm.wgsl" with { type: "text" };
import ropeCache from "../../kernels/rope_cache.wgsl" with { type: "text" };
import attention from "../../kernels/attention.wgsl" with { type: "text" };
import attentionPrefill from "../../kernels/attention_prefill.wgsl" with {
  type: "text",
};
import glu from "../../kernels/glu.wgsl" with { type: "text" };
import sample from "../../kernels/sample.wgsl" with { type: "text" };
import logitSoftcap from "../../kernels/logit_softcap.wgsl" with {
  type: "text",
};
import rmsNormI8 from "../../kernels/rms_norm_i8.wgsl" with { type: "text" };
import i8Codes from "../../kernels/i8_codes.wgsl" with { type: "text" };
import normRows from "../../kernels/norm_rows.wgsl" with { type: "text" };

/** The engine's own kernels (the matmuls come from the backend's files). */
export const MODEL_KERNELS = {
  embedding,
  rms_norm: `${normRows}\n${rmsNorm}`,
  rms_norm_i8: `${i8Codes}\n${normRows}\n${rmsNormI8}`,
  layer_norm: `${normRows}\n${layerNorm}`,
  rope_cache: ropeCache,
  attention,
  attention_prefill: attentionPrefill,
  glu,
  sample,
  logit_softcap: logitSoftcap,
} as const;

/** A kernel's name. */
export type ModelKernel = keyof typeof MODEL_KERNELS;

/** Override constants of a pipeline (booleans as 0/1). */
export type Constants = Record<string, number | boolean>;

const modules = new WeakMap<GPUDevice, Map<string, GPUShaderModule>>();

/** A compute pipeline of `code` with `constants`, its module cached per device. */
export function computePipeline(
  device: GPUDevice,
  code: string,
  constants: Constants = {},
  label = "",
): GPUComputePipeline {
  let byCode = modules.get(device);
  if (!byCode) modules.set(device, byCode = new Map());
  let module = byCode.get(code);
  if (!module) {
    module = device.createShaderModule({ code, label });
    byCode.set(code, module);
  }
  const values: Record<string, number> = {};
  for (const [k, v] of Object.entries(constants)) values[k] = Number(v);
  return device.createComputePipeline({
    label,
    layout: "auto",
    compute: { module, entryPoint: "main", constants: values },
  });
}

/** The binding numbers a kernel declares (what "auto" layouts expect). */
export function declaredBindings(code: string): number[] {
  return [...code.replace(/\/\/.*$/gm, "").matchAll(/@binding\((\d+)\)/g)]
    .map((b) => Number(b[1]));
}
