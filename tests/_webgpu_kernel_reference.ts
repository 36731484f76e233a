// Plain TypeScript references of the WebGPU engine's kernels, in f64: what
// each kernel in kernels/ (embedding … sample) is checked against.

/** x · (1/√(mean x² + eps)) · (addOne ? 1 + w : w), per row of [rows, dim]. */
export function refRmsNorm(
  x: Float32Array,
  w: Float32Array,
  dim: number,
  eps: number,
  addOne: boolean,
): Float64Array {
  const rows = x.length / dim, out = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let c = 0; c < dim; c++) ss += x[r * dim + c]! ** 2;
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let c = 0; c < dim; c++) {
      out[r * dim + c] = x[r * dim + c]! * inv * (addOne ? 1 + w[c]! : w[c]!);
    }
  }
  return out;
}

/** (x − mean) / √(var + eps) · w + b, per row of [rows, dim]. */
export function refLayerNorm(
  x: Float32Array,
  w: Float32Array,
  b: Float32Array,
  dim: number,
  eps: number,
): Float64Array {
  const rows = x.length / dim, out = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < dim; c++) s += x[r * dim + c]!;
    const mean = s / dim;
    let v = 0;
    for (let c = 0; c < dim; c++) v += (x[r * dim + c]! - mean) ** 2;
    const inv = 1 / Math.sqrt(v / dim + eps);
    for (let c = 0; c < dim; c++) {
      out[r * dim + c] = (x[r * dim + c]! - mean) * inv * w[c]! + b[c]!;
    }
  }
  return out;
}

/** One head's RoPE at position p: neox pairs (j, j + rot/2), else (2j, 2j + 1). */
export function refRope(
  head: Float32Array,
  p: number,
  invFreq: Float32Array,
  neox: boolean,
): Float64Array {
  const out = Float64Array.from(head);
  const half = invFreq.length;
  for (let j = 0; j < half; j++) {
    const [a, b] = neox ? [j, j + half] : [2 * j, 2 * j + 1];
    const ang = Math.fround(p * invFreq[j]!);
    const c = Math.cos(ang), s = Math.sin(ang);
    out[a] = head[a]! * c - head[b]! * s;
    out[b] = head[b]! * c + head[a]! * s;
  }
  return out;
}

/** Causal attention of one query against keys/values [len, hd] of its KV head. */
export function refAttention(
  q: Float32Array,
  keys: Float32Array[],
  values: Float32Array[],
  scale: number,
  cap: number,
): Float64Array {
  const s = keys.map((k) => {
    let d = 0;
    for (let e = 0; e < q.length; e++) d += q[e]! * k[e]!;
    d *= scale;
    return cap > 0 ? cap * Math.tanh(d / cap) : d;
  });
  const m = Math.max(...s);
  const e = s.map((v) => Math.exp(v - m));
  const z = e.reduce((a, b) => a + b, 0);
  const out = new Float64Array(q.length);
  values.forEach((v, j) => {
    for (let d = 0; d < q.length; d++) out[d] += (e[j]! / z) * v[d]!;
  });
  return out;
}

/** erf in f64 (Taylor series below 3, continued fraction above). */
export function erf(x: number): number {
  const z = Math.abs(x);
  let r: number;
  if (z < 3) {
    let term = z, sum = z;
    for (let n = 1; n < 80; n++) {
      term *= -z * z / n;
      sum += term / (2 * n + 1);
    }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    let f = 0;
    for (let n = 60; n >= 1; n--) f = (n / 2) / (z + f);
    r = 1 - Math.exp(-z * z) / Math.sqrt(Math.PI) / (z + f);
  }
  return x < 0 ? -r : r;
}

/** The MLP nonlinearities by the glu kernel's ACT index. */
export const ACTIVATIONS: ((x: number) => number)[] = [
  (x) => x / (1 + Math.exp(-x)),
  (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
  (x) =>
    0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))),
  (x) => Math.max(x, 0),
];
