// sample.wgsl: picks the next token from a logits row on the device, so a
// decode step reads back 4 bytes instead of the row.
//
// temperature 0: argmax, the lowest id among equal maxima. Otherwise, in the
// order "larger logit first, lower id first among equals": e_i =
// exp((l_i − max) / T); keep the first topK (0 = all); keep the shortest
// prefix of those whose mass reaches topP of the whole softmax (Σ e); pick
// the first token whose running mass exceeds u · (the kept mass). These are
// the host sampler's steps (src/models/sampler.ts); its sums run in f64 and
// these in f32, so a u within ~1e-6 of a boundary may pick the neighbour.
// No sort: a prefix of that order is a boundary (key, id) — a token is in it
// when its key is larger, or equal with an id no larger — and each boundary
// is found by bisection, first over the 32-bit order key of the logit, then
// over the ids sharing that key, each step one pass over the row (e_i is
// computed once into scratch). With top-k ≤ 256 the k kept tokens are then
// gathered into workgroup memory and the top-p and final searches run over
// them alone: one value per thread per step instead of a pass over the row.
// Layout: logits [V] f32; scratch [V] f32; params
// (temperature, topK, topP, u); out [0] = id, [1] = 1 if a logit was NaN.
// Workgroup 256 (one workgroup), threads striding over the row; grid (1).

struct Params { temperature: f32, top_k: u32, top_p: f32, u: f32 }

override V: u32;

@group(0) @binding(0) var<uniform> sp: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const ALL_IDS = 0xffffffffu;

var<workgroup> part: array<f32, 256>;
var<workgroup> part_id: array<u32, 256>;
var<workgroup> total: f32;
var<workgroup> winner: u32;
// The top-k candidates (when they fit): order key, id, e_i.
var<workgroup> cand_key: array<u32, 256>;
var<workgroup> cand_id: array<u32, 256>;
var<workgroup> cand_e: array<f32, 256>;
var<workgroup> cand_count: atomic<u32>;
var<workgroup> cand_n: u32;

// Order key: larger logits give larger keys (−0 counts as +0).
fn key(i: u32) -> u32 {
  var b = bitcast<u32>(logits[i]);
  if (b == 0x80000000u) {
    b = 0u;
  }
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// Σ over the prefix (kb, ib) of e_i (or of 1 when count), over the whole row
// or over the nc candidates: every thread returns the same value.
fn prefix(t: u32, kb: u32, ib: u32, count: bool, nc: u32) -> f32 {
  var s = 0.0;
  if (nc > 0u) {
    if (t < nc) {
      let k = cand_key[t];
      if (k > kb || (k == kb && cand_id[t] <= ib)) {
        s = select(cand_e[t], 1.0, count);
      }
    }
  } else {
    for (var i = t; i < V; i += 256u) {
      let k = key(i);
      if (k > kb || (k == kb && i <= ib)) {
        s += select(scratch[i], 1.0, count);
      }
    }
  }
  part[t] = s;
  workgroupBarrier();
  for (var w = 128u; w > 0u; w >>= 1u) {
    if (t < w) {
      part[t] += part[t + w];
    }
    workgroupBarrier();
  }
  if (t == 0u) {
    total = part[0];
  }
  return workgroupUniformLoad(&total);
}

fn reached(f: f32, goal: f32, strict: bool) -> bool {
  return select(f >= goal, f > goal, strict);
}

// The shortest prefix whose sum reaches `goal` (exceeds it when strict).
fn boundary(
  t: u32,
  goal: f32,
  count: bool,
  strict: bool,
  nc: u32,
) -> vec2<u32> {
  var lo = 0u;
  var hi = 0xffffffffu;
  for (var it = 0u; it < 32u; it++) {
    let mid = lo + (hi - lo) / 2u + (hi - lo) % 2u;
    if (lo < hi) {
      if (reached(prefix(t, mid, ALL_IDS, count, nc), goal, strict)) {
        lo = mid;
      } else {
        hi = mid - 1u;
      }
    }
  }
  let kb = lo;
  var ilo = 0u;
  var ihi = V - 1u;
  for (var it = 0u; it < 32u; it++) {
    let mid = ilo + (ihi - ilo) / 2u;
    if (ilo < ihi) {
      if (reached(prefix(t, kb, mid, count, nc), goal, strict)) {
        ihi = mid;
      } else {
        ilo = mid + 1u;
      }
    }
  }
  return vec2<u32>(kb, ilo);
}

// The earlier of two boundaries in the order.
fn first(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
  if (a.x > b.x || (a.x == b.x && a.y <= b.y)) {
    return a;
  }
  return b;
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  // Argmax with the lowest id on ties, and NaN detection.
  var best = 0u;
  var best_id = ALL_IDS;
  var nan = 0.0;
  for (var i = t; i < V; i += 256u) {
    // By bits: a compiler may assume `l != l` is false.
    if ((bitcast<u32>(logits[i]) & 0x7fffffffu) > 0x7f800000u) {
      nan = 1.0;
    }
    let k = key(i);
    if (best_id == ALL_IDS || k > best) {
      best = k;
      best_id = i;
    }
  }
  part[t] = nan;
  part_id[t] = best_id;
  workgroupBarrier();
  for (var w = 128u; w > 0u; w >>= 1u) {
    if (t < w) {
      let a = part_id[t];
      let b = part_id[t + w];
      if (b != ALL_IDS && (a == ALL_IDS || key(b) > key(a) ||
          (key(b) == key(a) && b < a))) {
        part_id[t] = b;
      }
      part[t] = max(part[t], part[t + w]);
    }
    workgroupBarrier();
  }
  if (t == 0u) {
    winner = part_id[0];
    out[1] = select(0u, 1u, part[0] > 0.0);
  }
  let arg = workgroupUniformLoad(&winner);
  if (sp.temperature <= 0.0) {
    if (t == 0u) {
      out[0] = arg;
    }
    return;
  }
  let inv_t = 1.0 / sp.temperature;
  let mx = logits[arg];
  for (var i = t; i < V; i += 256u) {
    scratch[i] = exp((logits[i] - mx) * inv_t);
  }
  storageBarrier();
  workgroupBarrier();
  var kept = vec2<u32>(0u, ALL_IDS);
  var nc = 0u; // candidates in workgroup memory (0: search the row)
  if (sp.top_k > 0u && sp.top_k < V) {
    kept = boundary(t, f32(sp.top_k), true, false, 0u);
    if (sp.top_k <= 256u) {
      for (var i = t; i < V; i += 256u) {
        let k = key(i);
        if (k > kept.x || (k == kept.x && i <= kept.y)) {
          let slot = atomicAdd(&cand_count, 1u);
          if (slot < 256u) {
            cand_key[slot] = k;
            cand_id[slot] = i;
            cand_e[slot] = scratch[i];
          }
        }
      }
      workgroupBarrier();
      if (t == 0u) {
        cand_n = atomicLoad(&cand_count);
      }
      nc = workgroupUniformLoad(&cand_n);
      if (nc > 256u) {
        nc = 0u;
      }
    }
  }
  if (sp.top_p < 1.0) {
    let all = prefix(t, 0u, ALL_IDS, false, 0u);
    kept = first(kept, boundary(t, sp.top_p * all, false, false, nc));
  }
  let mass = prefix(t, kept.x, kept.y, false, nc);
  // first(): a u that rounds to the whole mass still picks a kept token.
  let pick = first(boundary(t, sp.u * mass, false, true, nc), kept);
  if (t == 0u) {
    out[0] = pick.y;
  }
}
