// embedding.wgsl: gathers embedding rows into the residual stream, widened to
// f32 and scaled; also adds learned position rows (GPT-2, OPT).
//
// Computes h[i, c] = (ACC ? h[i, c] : 0) + f32(table[row − ROW0, c]) · SCALE
// for the n rows of the step, where row = tok[i] (POSITIONS false) or
// step.pos + i + OFFSET (POSITIONS true); rows outside [ROW0, ROW0 + ROWS)
// are left alone, so a table split across bindings runs one dispatch per
// chunk, each writing the rows it holds.
// Layout: table is [ROWS, DIM] row-major in DTYPE (0 f32, 1 f16, 2 bf16),
// read as u32 words (element e of a half table is half e % 2 of word e / 2,
// the low half first); tok [n] u32; h [n, LDH] f32.
// Workgroup 256, one thread per column; grid (ceil(DIM / 256), n).

struct Step { pos: u32, n: u32, rows: u32, pad: u32 }

override DTYPE: u32;
override DIM: u32;
override LDH: u32;
override ROW0: u32 = 0u;
override ROWS: u32;
override SCALE: f32 = 1.0;
override POSITIONS: bool = false;
override OFFSET: u32 = 0u;
override ACC: bool = false;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> tok: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> h: array<f32>;

fn value(e: u32) -> f32 {
  if (DTYPE == 0u) {
    return bitcast<f32>(table[e]);
  }
  let word = table[e / 2u];
  let half = select(word & 0xffffu, word >> 16u, (e & 1u) == 1u);
  if (DTYPE == 1u) {
    return unpack2x16float(half).x;
  }
  return bitcast<f32>(half << 16u);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  let i = gid.y;
  if (c >= DIM || i >= step.n) {
    return;
  }
  var row = tok[i];
  if (POSITIONS) {
    row = step.pos + i + OFFSET;
  }
  if (row < ROW0 || row - ROW0 >= ROWS) {
    return;
  }
  let v = value((row - ROW0) * DIM + c) * SCALE;
  let at = i * LDH + c;
  if (ACC) {
    h[at] += v;
  } else {
    h[at] = v;
  }
}
