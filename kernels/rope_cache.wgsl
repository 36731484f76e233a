// rope_cache.wgsl: rotary position embedding of q and k, and the KV-cache
// append, in one pass.
//
// For token i at position p = step.pos + i: each query head's first ROT
// dimensions are rotated by the angles of p (the rest copied) into qr; each
// key head is rotated the same way and written, with its value row, to the
// cache at position p. ROT = 0 (learned positions) only copies.
// Rotation of a pair (a, b) with (c, s) = cs[p, j]: (a·c − b·s, b·c + a·s),
// as Hugging Face's `q·cos + rotate_half(q)·sin`. NEOX pairs dimension j with
// j + ROT/2 (Llama and most families); otherwise 2j with 2j + 1 (GPT-J style).
// The table cs holds (cos, sin) per position and frequency, computed on the
// host from the inverse-frequency table, so llama3 / linear scaling is just
// another table.
// Layout: q, k, v rows of the projections, read at q[i·LDQ + Q_OFF + h·HD + d]
// (likewise k, v: the three may be one fused qkv buffer); qr [n, NQ·HD];
// kc, vc [NKV, CTX, HD]; cs [positions, ROT / 2] vec2<f32>.
// Workgroup 64, threads striding over a head's pairs; grid (NQ + NKV, n).

struct Step { pos: u32, n: u32, rows: u32, pad: u32 }

override NQ: u32;
override NKV: u32;
override HD: u32;
override ROT: u32;
override NEOX: bool = true;
override CTX: u32;
override LDQ: u32;
override LDK: u32;
override LDV: u32;
override Q_OFF: u32 = 0u;
override K_OFF: u32 = 0u;
override V_OFF: u32 = 0u;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> qr: array<f32>;
@group(0) @binding(5) var<storage, read_write> kc: array<f32>;
@group(0) @binding(6) var<storage, read_write> vc: array<f32>;
@group(0) @binding(7) var<storage, read> cs: array<vec2<f32>>;

// Indices of the pair j in a head.
fn pair(j: u32) -> vec2<u32> {
  if (NEOX) {
    return vec2<u32>(j, j + ROT / 2u);
  }
  return vec2<u32>(2u * j, 2u * j + 1u);
}

@compute @workgroup_size(64)
fn main(
  @builtin(local_invocation_index) t: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let i = wid.y;
  let p = step.pos + i;
  let is_q = wid.x < NQ;
  var src = 0u;
  var dst = 0u;
  if (is_q) {
    src = i * LDQ + Q_OFF + wid.x * HD;
    dst = (i * NQ + wid.x) * HD;
  } else {
    let g = wid.x - NQ;
    src = i * LDK + K_OFF + g * HD;
    dst = (g * CTX + p) * HD;
    let vs = i * LDV + V_OFF + g * HD;
    for (var e = t; e < HD; e += 64u) {
      vc[dst + e] = v[vs + e];
    }
  }
  for (var j = t; j < ROT / 2u; j += 64u) {
    let at = pair(j);
    let c = cs[p * (ROT / 2u) + j];
    var a = 0.0;
    var b = 0.0;
    if (is_q) {
      a = q[src + at.x];
      b = q[src + at.y];
    } else {
      a = k[src + at.x];
      b = k[src + at.y];
    }
    let ra = a * c.x - b * c.y;
    let rb = b * c.x + a * c.y;
    if (is_q) {
      qr[dst + at.x] = ra;
      qr[dst + at.y] = rb;
    } else {
      kc[dst + at.x] = ra;
      kc[dst + at.y] = rb;
    }
  }
  for (var e = ROT + t; e < HD; e += 64u) {
    if (is_q) {
      qr[dst + e] = q[src + e];
    } else {
      kc[dst + e] = k[src + e];
    }
  }
}
