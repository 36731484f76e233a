// logit_softcap.wgsl: final-logit soft-capping (Gemma 2), in place.
//
// l ← CAP · tanh(l / CAP) for every logit of the rows computed this step.
// Layout: logits [rows, V] f32, rows = step.rows. Workgroup 256, one thread per
// logit; grid (ceil(V / 256), rows).

struct Step { pos: u32, n: u32, rows: u32, pad: u32 }

override V: u32;
override CAP: f32;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x < V && gid.y < step.rows) {
    let at = gid.y * V + gid.x;
    logits[at] = CAP * tanh(logits[at] / CAP);
  }
}
