// glu.wgsl: the MLP's activation, gated (gate · up fused into one pass) or
// plain.
//
// out[i, c] = ACT(g[i·LDG + G_OFF + c]) · (GATED ? u[i·LDU + U_OFF + c] : 1)
// for c < DIM, with ACT 0 SiLU x·σ(x), 1 GELU x·Φ(x) (erf), 2 GELU-tanh
// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), computed as x·σ(2·inner),
// which is the same function without the cancellation of 1 + tanh near −1,
// 3 ReLU. g and u may be one buffer (a fused gate_up projection: the two
// halves of each row).
// Layout: g, u f32 rows of the projections; out [n, LDO] f32, columns
// [DIM, LDO) zeroed. Workgroup 256, one thread per column;
// grid (ceil(LDO / 256), n).

struct Step { pos: u32, n: u32, rows: u32, pad: u32 }

override ACT: u32;
override GATED: bool;
override DIM: u32;
override LDG: u32;
override LDU: u32;
override LDO: u32;
override G_OFF: u32 = 0u;
override U_OFF: u32 = 0u;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// erf through erfc(z) ≈ t·exp(−z² + P(t)), t = 1 / (1 + z/2): Chebyshev
// fit, relative error < 1.2e-7 everywhere.
fn erf(x: f32) -> f32 {
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.5 * z);
  let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
    t * (-0.82215223 + t * 0.17087277))))))));
  let r = 1.0 - t * exp(-z * z + poly);
  return select(-r, r, x >= 0.0);
}

fn act(x: f32) -> f32 {
  switch ACT {
    case 0u: {
      return x / (1.0 + exp(min(-x, 80.0)));
    }
    case 1u: {
      return 0.5 * x * (1.0 + erf(x * 0.70710678118654752));
    }
    case 2u: {
      let inner = 0.7978845608028654 * (x + 0.044715 * x * x * x);
      return x / (1.0 + exp(min(-2.0 * inner, 80.0)));
    }
    default: {
      return max(x, 0.0);
    }
  }
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  let i = gid.y;
  if (c >= LDO || i >= step.n) {
    return;
  }
  var o = 0.0;
  if (c < DIM) {
    o = act(g[i * LDG + G_OFF + c]);
    if (GATED) {
      o *= u[i * LDU + U_OFF + c];
    }
  }
  out[i * LDO + c] = o;
}
