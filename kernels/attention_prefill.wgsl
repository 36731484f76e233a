// attention_prefill.wgsl: causal attention for a prefill, tiled over queries
// and keys so that each key/value row is read once per 16 queries.
//
// Computes what attention.wgsl does — for query head h of token i at
// position p = step.pos + i, KV head g = h / (NQ / NKV), keys j in [lo, p]
// (lo = p + 1 − WINDOW with a window), s_j = SCALE · q·k_j (CAP · tanh(s_j /
// CAP) where CAP > 0), out = Σ softmax(s)_j · v_j — for a tile of 16 queries
// of one head at a time. Tiles of 8 keys and their values are staged in
// workgroup memory and shared by the 16 queries; the softmax runs online
// over the key tiles.
// Layout: qr [n, NQ·HD]; kc, vc [NKV, CTX, HD]; out [n, LDO], columns
// [NQ·HD, LDO) zeroed. HD a multiple of 4, at most 128.
// Workgroup 64: query q = t / 4 of the tile, lane l = t % 4 owning the head
// dimensions l, l + 4, … (its part of q·k, reduced over the 4 lanes in
// workgroup memory, and of the output). Grid (NQ, ceil(n / 16)).

struct Step { pos: u32, n: u32, rows: u32, pad: u32 }

override NQ: u32;
override NKV: u32;
override HD: u32;
override CTX: u32;
override LDO: u32;
override SCALE: f32;
override CAP: f32 = 0.0;
override WINDOW: u32 = 0u;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> qr: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<f32>;
@group(0) @binding(3) var<storage, read> vc: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const QB = 16u; // queries per workgroup
const TK = 8u; // keys per tile
const PER = 32u; // head dimensions per lane, at most (HD ≤ 128)
const NONE = -1e30; // a score below every real one; WGSL may assume no ±Inf

var<workgroup> kt: array<f32, 1024>; // [TK][HD]
var<workgroup> vt: array<f32, 1024>;
var<workgroup> partial: array<f32, 512>; // [QB][TK][4]

// First key position any query of the tile sees (its first query's window).
fn first_key(p: u32) -> u32 {
  if (WINDOW > 0u && p + 1u > WINDOW) {
    return p + 1u - WINDOW;
  }
  return 0u;
}

@compute @workgroup_size(64)
fn main(
  @builtin(local_invocation_index) t: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let h = wid.x;
  let g = h / (NQ / NKV);
  let qi = t / 4u;
  let l = t % 4u;
  let i0 = wid.y * QB;
  let i = i0 + qi;
  let live = i < step.n;
  let p = step.pos + i;
  let lo = first_key(p);
  let dims = HD / 4u;
  var q: array<f32, PER>;
  var acc: array<f32, PER>;
  for (var m = 0u; m < dims; m++) {
    if (live) {
      q[m] = qr[(i * NQ + h) * HD + l + 4u * m];
    }
  }
  var mx = NONE;
  var sum = 0.0;
  let last = min(i0 + QB, step.n) - 1u;
  let j_end = step.pos + last; // the tile's last query sees keys up to here
  for (var j0 = first_key(step.pos + i0); j0 <= j_end; j0 += TK) {
    // Stage keys and values [j0, j0 + TK) of KV head g.
    for (var e = t; e < TK * HD; e += 64u) {
      let j = j0 + e / HD;
      var kv = vec2<f32>();
      if (j <= j_end) {
        let at = (g * CTX + j) * HD + e % HD;
        kv = vec2<f32>(kc[at], vc[at]);
      }
      kt[e] = kv.x;
      vt[e] = kv.y;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      var s = 0.0;
      for (var m = 0u; m < dims; m++) {
        s += q[m] * kt[kk * HD + l + 4u * m];
      }
      partial[(qi * TK + kk) * 4u + l] = s;
    }
    workgroupBarrier();
    // Scores of this query's keys in the tile; every lane gets the same.
    var sc: array<f32, TK>;
    var tile_max = NONE;
    for (var kk = 0u; kk < TK; kk++) {
      let j = j0 + kk;
      let b = (qi * TK + kk) * 4u;
      var s = NONE;
      if (live && j >= lo && j <= p) {
        s = ((partial[b] + partial[b + 1u]) + (partial[b + 2u] + partial[b + 3u])) *
          SCALE;
        if (CAP > 0.0) {
          s = CAP * tanh(s / CAP);
        }
      }
      sc[kk] = s;
      tile_max = max(tile_max, s);
    }
    let mn = max(mx, tile_max);
    let corr = exp(mx - mn);
    var tile_sum = 0.0;
    for (var kk = 0u; kk < TK; kk++) {
      var e = 0.0;
      if (sc[kk] > NONE) {
        e = exp(sc[kk] - mn);
      }
      sc[kk] = e;
      tile_sum += e;
    }
    sum = sum * corr + tile_sum;
    for (var m = 0u; m < dims; m++) {
      var a = acc[m] * corr;
      for (var kk = 0u; kk < TK; kk++) {
        a += sc[kk] * vt[kk * HD + l + 4u * m];
      }
      acc[m] = a;
    }
    mx = mn;
    workgroupBarrier();
  }
  if (live) {
    for (var m = 0u; m < dims; m++) {
      out[i * LDO + h * HD + l + 4u * m] = acc[m] / sum;
    }
    if (h == NQ - 1u) {
      for (var c = NQ * HD + l; c < LDO; c += 4u) {
        out[i * LDO + c] = 0.0;
      }
    }
  }
}
