// attention.wgsl: causal scaled-dot-product attention of the step's queries
// against the KV cache (grouped-query heads, sliding window, soft-capping).
//
// For query head h of token i at position p = step.pos + i, with KV head
// g = h / (NQ / NKV) and keys j in [lo, p] (lo = p + 1 − WINDOW when a window
// is set, else 0):
//   s_j = SCALE · q·k_j, then CAP · tanh(s_j / CAP) where CAP > 0;
//   out[i, h·HD + d] = Σ_j softmax(s)_j · v_j[d].
// The softmax runs online over chunks of 64 keys (running max and sum, the
// partial output rescaled when the max grows), so the cache length is bounded
// only by CTX, not by workgroup memory. Every query row is its own
// workgroup: the decode kernel (and the prefill one for short steps or head
// dims over 128; attention_prefill.wgsl tiles longer prefills).
// With ROPE (a decode step, n = 1) the kernel also does rope_cache.wgsl's
// work, one dispatch fewer: q and the new key are read from the projections
// and rotated here (same pairs, same table, same arithmetic), the new key and
// value are used from workgroup memory for position p, and the first query
// head of each KV group appends them to the cache (the other heads read
// only positions < p from it, so nobody waits for that write).
// Layout: qr [n, NQ·HD] (rotated queries), or with ROPE the q, k (binding 5)
// and v (6) projection rows at i·LD* + *_OFF + head·HD, cs (7) [positions,
// ROT / 2] (cos, sin); kc, vc [NKV, CTX, HD]; out [n, LDO] f32 with columns
// [NQ·HD, LDO) zeroed. HD ≤ 256.
// Workgroup 64: thread t scores key j0 + t of a chunk, then owns output
// dimensions t, t + 64, …; grid (NQ, n).

struct Step { pos: u32, n: u32, rows: u32, pad: u32 }

override NQ: u32;
override NKV: u32;
override HD: u32;
override CTX: u32;
override LDO: u32;
override SCALE: f32;
override CAP: f32 = 0.0;
override WINDOW: u32 = 0u;
override ROPE: bool = false;
override ROT: u32 = 0u;
override NEOX: bool = true;
override LDQ: u32 = 0u;
override LDK: u32 = 0u;
override LDV: u32 = 0u;
override Q_OFF: u32 = 0u;
override K_OFF: u32 = 0u;
override V_OFF: u32 = 0u;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> qr: array<f32>;
@group(0) @binding(2) var<storage, read_write> kc: array<f32>;
@group(0) @binding(3) var<storage, read_write> vc: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> kp: array<f32>;
@group(0) @binding(6) var<storage, read> vp: array<f32>;
@group(0) @binding(7) var<storage, read> cs: array<vec2<f32>>;

const NONE = -1e30; // a score below every real one; WGSL may assume no ±Inf

var<workgroup> qs: array<f32, 256>;
var<workgroup> kcur: array<f32, 256>; // ROPE: the new key and value
var<workgroup> vcur: array<f32, 256>;
var<workgroup> pj: array<f32, 64>;
var<workgroup> red: array<f32, 64>;

fn reduce(t: u32, v: f32, is_max: bool) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (t < s) {
      if (is_max) {
        red[t] = max(red[t], red[t + s]);
      } else {
        red[t] += red[t + s];
      }
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(64)
fn main(
  @builtin(local_invocation_index) t: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let h = wid.x;
  let i = wid.y;
  let p = step.pos + i;
  let g = h / (NQ / NKV);
  if (ROPE) {
    let q0 = i * LDQ + Q_OFF + h * HD;
    let k0 = i * LDK + K_OFF + g * HD;
    let v0 = i * LDV + V_OFF + g * HD;
    for (var e = t; e < HD; e += 64u) {
      qs[e] = qr[q0 + e];
      kcur[e] = kp[k0 + e];
      vcur[e] = vp[v0 + e];
    }
    workgroupBarrier();
    for (var j = t; j < ROT / 2u; j += 64u) {
      var at = vec2<u32>(2u * j, 2u * j + 1u);
      if (NEOX) {
        at = vec2<u32>(j, j + ROT / 2u);
      }
      let c = cs[p * (ROT / 2u) + j];
      let a = qs[at.x];
      let b = qs[at.y];
      qs[at.x] = a * c.x - b * c.y;
      qs[at.y] = b * c.x + a * c.y;
      let ka = kcur[at.x];
      let kb = kcur[at.y];
      kcur[at.x] = ka * c.x - kb * c.y;
      kcur[at.y] = kb * c.x + ka * c.y;
    }
    workgroupBarrier();
    if (h % (NQ / NKV) == 0u) {
      for (var e = t; e < HD; e += 64u) {
        kc[(g * CTX + p) * HD + e] = kcur[e];
        vc[(g * CTX + p) * HD + e] = vcur[e];
      }
    }
  } else {
    for (var e = t; e < HD; e += 64u) {
      qs[e] = qr[(i * NQ + h) * HD + e];
    }
    workgroupBarrier();
  }
  var lo = 0u;
  if (WINDOW > 0u && p + 1u > WINDOW) {
    lo = p + 1u - WINDOW;
  }
  var m = NONE;
  var l = 0.0;
  var acc = vec4<f32>();
  for (var j0 = lo; j0 <= p; j0 += 64u) {
    let j = j0 + t;
    var s = NONE;
    if (j <= p) {
      let kr = (g * CTX + j) * HD;
      var dot = 0.0;
      if (ROPE && j == p) {
        for (var e = 0u; e < HD; e++) {
          dot += qs[e] * kcur[e];
        }
      } else {
        for (var e = 0u; e < HD; e++) {
          dot += qs[e] * kc[kr + e];
        }
      }
      s = dot * SCALE;
      if (CAP > 0.0) {
        s = CAP * tanh(s / CAP);
      }
    }
    let mn = max(m, reduce(t, s, true));
    var e_t = 0.0;
    if (j <= p) {
      e_t = exp(s - mn);
    }
    pj[t] = e_t;
    let corr = exp(m - mn);
    l = l * corr + reduce(t, e_t, false);
    let count = min(64u, p + 1u - j0);
    for (var a = 0u; a < 4u; a++) {
      let d = t + 64u * a;
      if (d < HD) {
        var sum = 0.0;
        for (var jj = 0u; jj < count; jj++) {
          var v = 0.0;
          if (ROPE && j0 + jj == p) {
            v = vcur[d];
          } else {
            v = vc[(g * CTX + j0 + jj) * HD + d];
          }
          sum += pj[jj] * v;
        }
        acc[a] = acc[a] * corr + sum;
      }
    }
    m = mn;
    workgroupBarrier();
  }
  for (var a = 0u; a < 4u; a++) {
    let d = t + 64u * a;
    if (d < HD) {
      out[i * LDO + h * HD + d] = acc[a] / l;
    }
  }
  if (h == NQ - 1u) {
    for (var c = NQ * HD + t; c < LDO; c += 64u) {
      out[i * LDO + c] = 0.0;
    }
  }
}
