// i8_codes.wgsl: the exact arithmetic of per-token int8 activation codes,
// shared by quantize_x_i8.wgsl and rms_norm_i8.wgsl (prepended to them).
//
// div_rn(a, b): the bits of a / b correctly rounded (ties to even) by long
// division in integers, for finite a ≥ 0, b > 0; code(v, s): the code of the
// f32 bits v for the scale bits s before sign and clamp, by the float
// quotient where it is safely away from a rounding boundary, else by div_rn —
// so codes equal the CPU's bit for bit on any GPU.
// No bindings; the kernels that include it fix the workgroup shape.

const NAN = 0x7fc00000u;

// v = m · 2^e with m in [2^23, 2^24), for the bits of a finite f32 v > 0.
fn split(v: u32) -> vec2<i32> {
  let biased = i32(v >> 23u);
  let f = v & 0x7fffffu;
  if (biased == 0) {
    let sh = 23u - firstLeadingBit(f);
    return vec2<i32>(i32(f << sh), -149 - i32(sh));
  }
  return vec2<i32>(i32(f | 0x800000u), biased - 150);
}

// Bits of a / b rounded to the nearest f32, ties to even (subnormal results
// included), for the bits of finite a ≥ 0 and b > 0 with a / b < 2^127: the
// long division yields 24 significant bits, a rounding bit and a sticky bit.
fn div_rn(a: u32, b: u32) -> u32 {
  if (a == 0u) {
    return 0u;
  }
  let sa = split(a);
  let sb = split(b);
  var r = u32(sa.x);
  let d = u32(sb.x);
  var e = sa.y - sb.y;
  if (r < d) {
    r <<= 1u;
    e -= 1;
  }
  var q = 0u;
  for (var i = 0; i < 25; i++) {
    q <<= 1u;
    if (r >= d) {
      r -= d;
      q |= 1u;
    }
    r <<= 1u;
  }
  // a / b = q · 2^(e − 24), q in [2^24, 2^25). Subnormal results keep fewer bits.
  let biased = e + 127;
  var drop = 1u;
  if (biased < 1) {
    drop = u32(min(2 - biased, 26));
  }
  let kept = q >> drop;
  let half = (q >> (drop - 1u)) & 1u;
  let sticky = r != 0u || (q & ((1u << (drop - 1u)) - 1u)) != 0u;
  let mant = kept + select(0u, 1u, half == 1u && (sticky || (kept & 1u) == 1u));
  if (biased < 1) {
    return mant;
  }
  // kept carries the hidden bit, which lifts the exponent field to `biased`.
  return (u32(biased - 1) << 23u) + mant;
}

// The code of x (bits v) for the scale s (bits), before the sign and clamp.
// WGSL's f32 division is within 2.5 ULP (< 4e-5 below 128) for normal
// operands, so a quotient farther than 1e-3 from a half-integer rounds to the
// code the exact quotient gives.
fn code(v: u32, s: u32) -> i32 {
  let a = v & 0x7fffffffu;
  var c = bitcast<f32>(a) / bitcast<f32>(s);
  if (abs(fract(c) - 0.5) < 1e-3 || a < 0x800000u || s < 0x800000u) {
    c = bitcast<f32>(div_rn(a, s));
  }
  return i32(round(c));
}
