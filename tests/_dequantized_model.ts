// The float runtime on a quantized model's dequantized weights: the
// reference the quantized layers are held to. Each quantized layer becomes
// a Linear on `layer.dequantize()` that sees the activations the quantized
// layer sees (bf16 for W8A16/W4A16, per-token fake-quantized int8 for W8A8).
import {
  activationDtype,
  type CausalLM,
  Linear,
  Module,
  type QuantizedLinear,
  Tensor,
  W8A8LinearLayer,
} from "../mod.ts";
import { quantizeActivationsPerToken } from "../src/backend/cpu_lowbit.ts";

class ActivationsAs extends Module {
  constructor(
    readonly inner: Linear,
    readonly prepare: (x: Tensor) => Tensor,
  ) {
    super();
  }
  get inFeatures(): number {
    return this.inner.inFeatures;
  }
  get outFeatures(): number {
    return this.inner.outFeatures;
  }
  forward(x: Tensor): Promise<Tensor> {
    return this.inner.forward(this.prepare(x));
  }
}

function fakeQuantize(x: Tensor): Tensor {
  const k = x.shape[x.shape.length - 1]!;
  const m = x.size / k;
  const { q, scales } = quantizeActivationsPerToken(x.toF32Array(), m, k);
  const y = new Float32Array(x.size);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < k; j++) y[i * k + j] = q[i * k + j]! * scales[i]!;
  }
  return new Tensor(y, x.shape);
}

/** Replaces, in `float` (the same model loaded in float), every layer that is quantized in `quantized`. */
export function useDequantizedWeights(
  quantized: CausalLM,
  float: CausalLM,
): number {
  let n = 0;
  for (const [path, m] of quantized.model.namedModules()) {
    if (typeof (m as Partial<QuantizedLinear>).dequantize !== "function") {
      continue;
    }
    const q = m as QuantizedLinear;
    const dot = path.lastIndexOf(".");
    const parent = dot < 0
      ? float.model
      : float.model.getModule(path.slice(0, dot))!;
    const lin = Linear.fromTensors(q.dequantize(), q.bias);
    const act16 = float.config.dtype === "f16" ? "f16" : "bf16";
    const dtype = activationDtype(q, act16);
    parent.setChild(
      path.slice(dot + 1),
      q instanceof W8A8LinearLayer
        ? new ActivationsAs(lin, fakeQuantize)
        : new ActivationsAs(lin, (x) => x.to(dtype)),
    );
    n++;
  }
  return n;
}
