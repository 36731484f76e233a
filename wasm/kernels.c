// TinyQ CPU kernels: WebAssembly SIMD128, built by `deno task build:wasm`
// (clang --target=wasm32 -msimd128, memory imported and shared so that every
// worker's instance sees the same weights).
//
// Layout contract with src/backend/_cpu_pool.ts:
// - matrices are row-major; weight rows and activation rows have a padded
//   stride `kp` (a multiple of 16) whose pad is zero, so no kernel needs a
//   k tail;
// - the output y is [m, n] with stride n; a call computes the output columns
//   [j0, j1) for every row, so threads split the work by weight rows and
//   never write the same element;
// - no function uses the C stack or static data: all instances share one
//   memory but each has its own stack pointer, which would otherwise collide.
//
// Numerics: sums are f32, in a lane-blocked order (not the reference's
// sequential order); per output `y = f32(acc * scale) + bias` as in the
// reference; zero points are subtracted in exact integer arithmetic before
// the conversion to f32. Quantization is bit-identical to the reference
// (src/quant/quantize_rows.ts): f32 absmax and division, clamp to
// [-128, 127], round half to even (see quantize_f32x4).
//
// Kernels: m = 1 streams the int8 weights once, four rows per pass
// (gemv_i8_impl); m ≤ GEMV_MAX_ROWS converts each weight row once in
// registers for up to four activation rows (gemv_rows_i8_impl); larger m
// converts NB × KC weight tiles to f32 in a per-thread buffer and runs a
// 4 × 2 register-tiled product over all activation rows (gemm_i8_impl). The
// f32 weights take the same paths without the conversion.
//
// Low-bit schemes (issue 8), at the end of the file, on the same three
// shapes of work: W8A8 (linear_w8a8) quantizes activations per token into
// i16 lanes (quantize_tokens, bit-identical to quantizeActivationsPerToken)
// and sums exactly in int32 with i32x4.dot_i16x8_s, so its results equal
// referenceLinearW8A8 bit for bit; W4A16 (linear_i4) unpacks 4-bit codes in
// registers with one swizzle per four codes, sums f32 per group and scales
// once per group.

#include <stddef.h>
#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))
#define INLINE static inline __attribute__((always_inline))

// K block of the matrix-matrix kernels: the converted weight tile (NB rows of
// KC floats = 16 KiB) and four activation rows (8 KiB) stay in a 32 KiB L1.
#define KC 512
#define NB 8
#ifndef GEMV_MAX_ROWS
#define GEMV_MAX_ROWS 16
#endif

// ---------------------------------------------------------------- helpers

// An optimisation barrier. Without it clang 14 fuses "sign-extend i16 lanes
// to i32, convert to f32" into one i16 → f32 conversion, which wasm lacks,
// and scalarises it (four extract/convert/replace per vector).
INLINE v128_t opaque(v128_t v) {
  __asm__("" : "+r"(v));
  return v;
}

// i16 lanes [4·half, 4·half + 4) to f32.
INLINE v128_t i16_to_f32(v128_t v, int half) {
  v128_t w = half ? wasm_i32x4_extend_high_i16x8(v) : wasm_i32x4_extend_low_i16x8(v);
  return wasm_f32x4_convert_i32x4(opaque(w));
}

INLINE float hsum(v128_t v) {
  v = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
  v = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
  return wasm_f32x4_extract_lane(v, 0);
}

// f16 bits (one per u32 lane) to f32, exact for every input: normals and
// subnormals by moving the bits into f32 position and multiplying by 2^112,
// Inf/NaN by forcing the f32 exponent to all ones.
INLINE v128_t f16_to_f32(v128_t h) {
  v128_t sign = wasm_i32x4_shl(wasm_v128_and(h, wasm_i32x4_splat(0x8000)), 16);
  v128_t em = wasm_v128_and(h, wasm_i32x4_splat(0x7fff));
  v128_t shifted = wasm_i32x4_shl(em, 13);
  v128_t finite = wasm_f32x4_mul(shifted, wasm_f32x4_splat(0x1p112f));
  v128_t special = wasm_v128_or(shifted, wasm_i32x4_splat(0x7f800000));
  v128_t is_special = wasm_i32x4_gt(em, wasm_i32x4_splat(0x7bff));
  return wasm_v128_or(wasm_v128_bitselect(special, finite, is_special), sign);
}

// bf16 lanes 0-3 (4-7) to f32: the bits go to the high half of each lane,
// one interleave with zero (cheaper than extend + shift).
INLINE v128_t bf16_lo(v128_t v) {
  return wasm_i16x8_shuffle(wasm_i16x8_splat(0), v, 0, 8, 1, 9, 2, 10, 3, 11);
}

INLINE v128_t bf16_hi(v128_t v) {
  return wasm_i16x8_shuffle(wasm_i16x8_splat(0), v, 4, 12, 5, 13, 6, 14, 7, 15);
}

// f16 bits in the high half of each lane (see bf16_lo) to f32, for finite
// values only (the quantizer has checked): exact, as f16_to_f32.
INLINE v128_t finite_f16_to_f32(v128_t hi_bits) {
  v128_t sign = wasm_v128_and(hi_bits, wasm_i32x4_splat((int32_t)0x80000000));
  v128_t em = wasm_u32x4_shr(wasm_v128_and(hi_bits, wasm_i32x4_splat(0x7fff0000)), 3);
  return wasm_v128_or(wasm_f32x4_mul(em, wasm_f32x4_splat(0x1p112f)), sign);
}

INLINE float f16_to_f32_scalar(uint32_t h) {
  return wasm_f32x4_extract_lane(f16_to_f32(wasm_i32x4_splat((int32_t)h)), 0);
}

INLINE float bf16_to_f32_scalar(uint32_t h) {
  return wasm_f32x4_extract_lane(wasm_i32x4_splat((int32_t)(h << 16)), 0);
}

// Relaxed SIMD (the relaxed build, -DTINYQ_RELAXED). clang 14 has no
// builtins for the final relaxed opcodes, so the kernels call these marker
// functions and tools/build_wasm.ts rewrites every call into the instruction
// (f32x4.relaxed_madd: a·b + c, fused or not, the CPU's choice). The plain
// build uses a multiply and an add. Float results differ by rounding only,
// within the kernels' tolerance; the integer kernels use neither.
#ifdef TINYQ_RELAXED
__attribute__((noinline, export_name("relaxed_madd")))
v128_t relaxed_madd(v128_t a, v128_t b, v128_t c) {
  return wasm_f32x4_add(wasm_f32x4_mul(a, b), c);
}
#define MADD(a, b, c) relaxed_madd(a, b, c)
#else
#define MADD(a, b, c) wasm_f32x4_add(wasm_f32x4_mul(a, b), c)
#endif

// ------------------------------------------------------------ activations

// 1 when every |x| ≤ 2^64 (so no NaN or ±Inf either): then no sum of
// x · q · 2^24 over fewer than 2^32 terms can overflow, and the decode
// kernels may carry int8 codes as q · 2^24 (one shift fewer per four
// weights); else 0, and they convert exactly.
EXPORT(fits_scaled)
int fits_scaled(const float *x, size_t count) {
  const uint32_t *bits = (const uint32_t *)x;
  v128_t mx = wasm_i32x4_splat(0);
  const v128_t mask = wasm_i32x4_splat(0x7fffffff);
  size_t c = 0;
  for (; c + 4 <= count; c += 4)
    mx = wasm_u32x4_max(mx, wasm_v128_and(wasm_v128_load(bits + c), mask));
  mx = wasm_u32x4_max(mx, wasm_i32x4_shuffle(mx, mx, 2, 3, 0, 1));
  mx = wasm_u32x4_max(mx, wasm_i32x4_shuffle(mx, mx, 1, 0, 3, 2));
  uint32_t m = (uint32_t)wasm_i32x4_extract_lane(mx, 0);
  for (; c < count; c++) {
    uint32_t a = bits[c] & 0x7fffffff;
    m = a > m ? a : m;
  }
  return m <= 0x5f800000u;  // 2^64
}

// Widens `rows` rows of `cols` f16 (kind 1) or bf16 (kind 2) values to f32
// rows of stride `stride`, zero-filling the pad.
EXPORT(widen_rows)
int widen_rows(const uint16_t *src, int kind, int rows, int cols, float *dst,
               int stride) {
  for (int r = 0; r < rows; r++) {
    const uint16_t *s = src + (size_t)r * cols;
    float *d = dst + (size_t)r * stride;
    int c = 0;
    for (; c + 8 <= cols; c += 8) {
      v128_t v = wasm_v128_load(s + c);
      v128_t lo, hi;
      if (kind == 1) {
        lo = f16_to_f32(wasm_u32x4_extend_low_u16x8(v));
        hi = f16_to_f32(wasm_u32x4_extend_high_u16x8(v));
      } else {
        lo = bf16_lo(v);
        hi = bf16_hi(v);
      }
      wasm_v128_store(d + c, lo);
      wasm_v128_store(d + c + 4, hi);
    }
    for (; c < cols; c++) {
      d[c] = kind == 1 ? f16_to_f32_scalar(s[c]) : bf16_to_f32_scalar(s[c]);
    }
    for (; c < stride; c++) d[c] = 0.0f;
  }
  return fits_scaled(dst, (size_t)rows * stride);
}

// ------------------------------------------------- int8 weights, one row

// Σ over 16 columns of x · (q − zp) as one f32x4 of partial sums.
INLINE v128_t dot16_i8(v128_t b, v128_t z, const float *x, int with_zp) {
  v128_t lo = wasm_i16x8_extend_low_i8x16(b);
  v128_t hi = wasm_i16x8_extend_high_i8x16(b);
  if (with_zp) {
    lo = wasm_i16x8_sub(lo, z);
    hi = wasm_i16x8_sub(hi, z);
  }
  v128_t f0 = i16_to_f32(lo, 0), f1 = i16_to_f32(lo, 1);
  v128_t f2 = i16_to_f32(hi, 0), f3 = i16_to_f32(hi, 1);
  v128_t p01 = wasm_f32x4_add(wasm_f32x4_mul(f0, wasm_v128_load(x)),
                              wasm_f32x4_mul(f1, wasm_v128_load(x + 4)));
  v128_t p23 = wasm_f32x4_add(wasm_f32x4_mul(f2, wasm_v128_load(x + 8)),
                              wasm_f32x4_mul(f3, wasm_v128_load(x + 12)));
  return wasm_f32x4_add(p01, p23);
}

INLINE float finish(float acc, const float *scales, const float *bias, int j) {
  float scaled = acc * scales[j];
  return bias ? scaled + bias[j] : scaled;
}

// Bytes 4s..4s+3 of b (int8 codes) as f32: one swizzle moves each into the
// top byte of an i32 lane, whose conversion gives q · 2^24 exactly (no
// sign-extension chain: 2 operations per four weights against ~4), or q
// itself after an arithmetic shift when `exact`.
INLINE v128_t byte_f32(v128_t b, int s, int exact) {
  int8_t o = (int8_t)(4 * s), z = -128;
  v128_t t = wasm_i8x16_swizzle(
      b, wasm_i8x16_make(z, z, z, o, z, z, z, (int8_t)(o + 1), z, z, z,
                         (int8_t)(o + 2), z, z, z, (int8_t)(o + 3)));
  if (exact) t = wasm_i32x4_shr(t, 24);
  return wasm_f32x4_convert_i32x4(t);
}

// Matrix-vector product for one activation row: four weight rows per pass so
// each activation load serves four rows; the weights stream once, as bytes.
// In the relaxed build, without zero points, the codes are converted by
// byte_f32 and summed with fused multiply-adds in two chains per row (twice
// the speed of dot16_i8 there; in the plain build, without the fused
// multiply-add, it measured slower, so that build keeps dot16_i8); `exact`
// as fits_scaled says (the 2^24 factor is removed exactly at the end, a power
// of two). With zero points, q − zp is formed in exact i16 arithmetic first.
#ifdef TINYQ_RELAXED
#define SWIZZLE_GEMV 1
#else
#define SWIZZLE_GEMV 0
#endif
INLINE void gemv_i8_impl(const float *x, int kp, const int8_t *q,
                         const int8_t *zp, const float *scales,
                         const float *bias, float *y, int j0, int j1,
                         int with_zp, int exact) {
  int j = j0;
  const float unit = exact ? 1.0f : 0x1p-24f;  // for the byte_f32 path only
  v128_t z0 = wasm_i16x8_splat(0), z1 = z0, z2 = z0, z3 = z0;
  for (; j + 4 <= j1; j += 4) {
    const int8_t *q0 = q + (size_t)j * kp;
    const int8_t *q1 = q0 + kp, *q2 = q1 + kp, *q3 = q2 + kp;
    v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
    if (with_zp || !SWIZZLE_GEMV) {
      if (with_zp) {
        z0 = wasm_i16x8_splat(zp[j]);
        z1 = wasm_i16x8_splat(zp[j + 1]);
        z2 = wasm_i16x8_splat(zp[j + 2]);
        z3 = wasm_i16x8_splat(zp[j + 3]);
      }
      for (int t = 0; t < kp; t += 16) {
        a0 = wasm_f32x4_add(a0, dot16_i8(wasm_v128_load(q0 + t), z0, x + t, with_zp));
        a1 = wasm_f32x4_add(a1, dot16_i8(wasm_v128_load(q1 + t), z1, x + t, with_zp));
        a2 = wasm_f32x4_add(a2, dot16_i8(wasm_v128_load(q2 + t), z2, x + t, with_zp));
        a3 = wasm_f32x4_add(a3, dot16_i8(wasm_v128_load(q3 + t), z3, x + t, with_zp));
      }
      y[j] = finish(hsum(a0), scales, bias, j);
      y[j + 1] = finish(hsum(a1), scales, bias, j + 1);
      y[j + 2] = finish(hsum(a2), scales, bias, j + 2);
      y[j + 3] = finish(hsum(a3), scales, bias, j + 3);
      continue;
    }
    v128_t b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int t = 0; t < kp; t += 16) {
      v128_t x0 = wasm_v128_load(x + t), x1 = wasm_v128_load(x + t + 4);
      v128_t x2 = wasm_v128_load(x + t + 8), x3 = wasm_v128_load(x + t + 12);
      v128_t w0 = wasm_v128_load(q0 + t), w1 = wasm_v128_load(q1 + t);
      v128_t w2 = wasm_v128_load(q2 + t), w3 = wasm_v128_load(q3 + t);
      a0 = MADD(byte_f32(w0, 0, exact), x0, a0);
      b0 = MADD(byte_f32(w0, 1, exact), x1, b0);
      a1 = MADD(byte_f32(w1, 0, exact), x0, a1);
      b1 = MADD(byte_f32(w1, 1, exact), x1, b1);
      a2 = MADD(byte_f32(w2, 0, exact), x0, a2);
      b2 = MADD(byte_f32(w2, 1, exact), x1, b2);
      a3 = MADD(byte_f32(w3, 0, exact), x0, a3);
      b3 = MADD(byte_f32(w3, 1, exact), x1, b3);
      a0 = MADD(byte_f32(w0, 2, exact), x2, a0);
      b0 = MADD(byte_f32(w0, 3, exact), x3, b0);
      a1 = MADD(byte_f32(w1, 2, exact), x2, a1);
      b1 = MADD(byte_f32(w1, 3, exact), x3, b1);
      a2 = MADD(byte_f32(w2, 2, exact), x2, a2);
      b2 = MADD(byte_f32(w2, 3, exact), x3, b2);
      a3 = MADD(byte_f32(w3, 2, exact), x2, a3);
      b3 = MADD(byte_f32(w3, 3, exact), x3, b3);
    }
    y[j] = finish(hsum(wasm_f32x4_add(a0, b0)) * unit, scales, bias, j);
    y[j + 1] = finish(hsum(wasm_f32x4_add(a1, b1)) * unit, scales, bias, j + 1);
    y[j + 2] = finish(hsum(wasm_f32x4_add(a2, b2)) * unit, scales, bias, j + 2);
    y[j + 3] = finish(hsum(wasm_f32x4_add(a3, b3)) * unit, scales, bias, j + 3);
  }
  for (; j < j1; j++) {
    const int8_t *q0 = q + (size_t)j * kp;
    v128_t a0 = wasm_f32x4_splat(0);
    if (with_zp || !SWIZZLE_GEMV) {
      if (with_zp) z0 = wasm_i16x8_splat(zp[j]);
      for (int t = 0; t < kp; t += 16)
        a0 = wasm_f32x4_add(a0, dot16_i8(wasm_v128_load(q0 + t), z0, x + t, with_zp));
      y[j] = finish(hsum(a0), scales, bias, j);
      continue;
    }
    for (int t = 0; t < kp; t += 16) {
      v128_t w0 = wasm_v128_load(q0 + t);
      for (int s4 = 0; s4 < 4; s4++)
        a0 = MADD(byte_f32(w0, s4, exact), wasm_v128_load(x + t + 4 * s4), a0);
    }
    y[j] = finish(hsum(a0) * unit, scales, bias, j);
  }
}

// Matrix-vector products for MR = 2..4 activation rows at once: each weight
// row is converted once, in registers, and used for every activation row.
// Up to GEMV_MAX_ROWS rows (a pass over the weights per 4 rows) this beats
// the tiled kernel below, whose per-tile conversion pays off only over many
// rows (measured: m = 4, 12, 16 at 21-22 GFLOP/s against 14, 14, 21).
INLINE void gemv_rows_i8_impl(int MR, const float *x, int kp, const int8_t *q,
                              const int8_t *zp, const float *scales,
                              const float *bias, float *y, int n, int j0,
                              int j1, int with_zp, int exact) {
  const int swizzle = SWIZZLE_GEMV && !with_zp;
  const float unit = swizzle && !exact ? 0x1p-24f : 1.0f;
  for (int j = j0; j < j1; j++) {
    const int8_t *qr = q + (size_t)j * kp;
    v128_t z = wasm_i16x8_splat(with_zp ? zp[j] : 0);
    v128_t acc[4], acc2[4];
    for (int i = 0; i < MR; i++) acc[i] = acc2[i] = wasm_f32x4_splat(0);
    for (int t = 0; t < kp; t += 16) {
      v128_t b = wasm_v128_load(qr + t);
      v128_t f0, f1, f2, f3;
      if (!swizzle) {
        v128_t lo = wasm_i16x8_sub(wasm_i16x8_extend_low_i8x16(b), z);
        v128_t hi = wasm_i16x8_sub(wasm_i16x8_extend_high_i8x16(b), z);
        f0 = i16_to_f32(lo, 0), f1 = i16_to_f32(lo, 1);
        f2 = i16_to_f32(hi, 0), f3 = i16_to_f32(hi, 1);
      } else {
        f0 = byte_f32(b, 0, exact), f1 = byte_f32(b, 1, exact);
        f2 = byte_f32(b, 2, exact), f3 = byte_f32(b, 3, exact);
      }
      for (int i = 0; i < MR; i++) {
        const float *xi = x + (size_t)i * kp + t;
        v128_t p = MADD(f0, wasm_v128_load(xi), acc[i]);
        v128_t p2 = MADD(f1, wasm_v128_load(xi + 4), acc2[i]);
        acc[i] = MADD(f2, wasm_v128_load(xi + 8), p);
        acc2[i] = MADD(f3, wasm_v128_load(xi + 12), p2);
      }
    }
    for (int i = 0; i < MR; i++)
      y[(size_t)i * n + j] =
          finish(hsum(wasm_f32x4_add(acc[i], acc2[i])) * unit, scales, bias, j);
  }
}

INLINE void gemv_rows_i8(int MR, const float *x, int kp, const int8_t *q,
                         const int8_t *zp, const float *scales,
                         const float *bias, float *y, int n, int j0, int j1,
                         int exact) {
  if (zp) gemv_rows_i8_impl(MR, x, kp, q, zp, scales, bias, y, n, j0, j1, 1, 1);
  else if (exact) gemv_rows_i8_impl(MR, x, kp, q, zp, scales, bias, y, n, j0, j1, 0, 1);
  else gemv_rows_i8_impl(MR, x, kp, q, zp, scales, bias, y, n, j0, j1, 0, 0);
}

// Activation rows of the float register tile (see micro): 6 × 2 with fused
// multiply-adds (12 accumulators hide their latency: measured 14% faster
// than 4 × 2 at m = 128), 4 × 2 in the plain build, where the separate
// multiply needs a register more and 6 × 2 spills (23% slower).
#ifndef FMR
#ifdef TINYQ_RELAXED
#define FMR 6
#else
#define FMR 4
#endif
#endif

// ------------------------------------------------------ f32 weights, one row

INLINE v128_t dot16_f32(const float *w, const float *x) {
  v128_t p01 = wasm_f32x4_add(
      wasm_f32x4_mul(wasm_v128_load(w), wasm_v128_load(x)),
      wasm_f32x4_mul(wasm_v128_load(w + 4), wasm_v128_load(x + 4)));
  v128_t p23 = wasm_f32x4_add(
      wasm_f32x4_mul(wasm_v128_load(w + 8), wasm_v128_load(x + 8)),
      wasm_f32x4_mul(wasm_v128_load(w + 12), wasm_v128_load(x + 12)));
  return wasm_f32x4_add(p01, p23);
}

static void gemv_f32(const float *x, int kp, const float *w, const float *bias,
                     float *y, int j0, int j1) {
  int j = j0;
  for (; j + 4 <= j1; j += 4) {
    const float *w0 = w + (size_t)j * kp;
    const float *w1 = w0 + kp, *w2 = w1 + kp, *w3 = w2 + kp;
    v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
    for (int t = 0; t < kp; t += 16) {
      a0 = wasm_f32x4_add(a0, dot16_f32(w0 + t, x + t));
      a1 = wasm_f32x4_add(a1, dot16_f32(w1 + t, x + t));
      a2 = wasm_f32x4_add(a2, dot16_f32(w2 + t, x + t));
      a3 = wasm_f32x4_add(a3, dot16_f32(w3 + t, x + t));
    }
    float s[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};
    for (int r = 0; r < 4; r++) y[j + r] = bias ? s[r] + bias[j + r] : s[r];
  }
  for (; j < j1; j++) {
    const float *w0 = w + (size_t)j * kp;
    v128_t a0 = wasm_f32x4_splat(0);
    for (int t = 0; t < kp; t += 16) a0 = wasm_f32x4_add(a0, dot16_f32(w0 + t, x + t));
    float s = hsum(a0);
    y[j] = bias ? s + bias[j] : s;
  }
}

// --------------------------------------------------- matrix-matrix products

// Register tile: MR activation rows × NR weight rows over kc columns, one
// f32x4 accumulator per pair (MR ≤ FMR, NR ≤ 2; in the plain build 4×2
// measured best against 2×4, 3×3, 4×3, 5×2, 6×2 and an outer-product
// layout). `first` says whether y holds a partial sum.
INLINE void micro(int MR, int NR, const float *x, int xs, const float *w,
                  int ws, int kc, float *y, int n, int first) {
  v128_t acc[FMR][2];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) acc[i][r] = wasm_f32x4_splat(0);
  // Unrolled twice: V8 issues one instruction per wasm op here, so loop
  // overhead shows (measured ~15% faster than no unrolling).
#pragma clang loop unroll_count(2)
  for (int t = 0; t < kc; t += 4) {
    v128_t wv[2];
    for (int r = 0; r < NR; r++) wv[r] = wasm_v128_load(w + (size_t)r * ws + t);
    for (int i = 0; i < MR; i++) {
      v128_t xv = wasm_v128_load(x + (size_t)i * xs + t);
      for (int r = 0; r < NR; r++) acc[i][r] = MADD(xv, wv[r], acc[i][r]);
    }
  }
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) {
      float s = hsum(acc[i][r]);
      float *out = y + (size_t)i * n + r;
      *out = first ? s : *out + s;
    }
}

// All activation rows against NB (or fewer) weight rows held as f32 with row
// stride ws, over one K block of kc columns starting at column k0 of x.
INLINE void tile_rows(const float *x, int m, int kp, int k0, const float *w,
                      int ws, int nb, int kc, float *y, int n, int jt,
                      int first) {
  int i = 0;
  for (; i + FMR <= m; i += FMR) {
    const float *xi = x + (size_t)i * kp + k0;
    float *yi = y + (size_t)i * n + jt;
    int r = 0;
    for (; r + 2 <= nb; r += 2)
      micro(FMR, 2, xi, kp, w + (size_t)r * ws, ws, kc, yi + r, n, first);
    if (r < nb) micro(FMR, 1, xi, kp, w + (size_t)r * ws, ws, kc, yi + r, n, first);
  }
  for (; i < m; i++) {
    const float *xi = x + (size_t)i * kp + k0;
    float *yi = y + (size_t)i * n + jt;
    int r = 0;
    for (; r + 2 <= nb; r += 2)
      micro(1, 2, xi, kp, w + (size_t)r * ws, ws, kc, yi + r, n, first);
    if (r < nb) micro(1, 1, xi, kp, w + (size_t)r * ws, ws, kc, yi + r, n, first);
  }
}

// Converts weight rows [jt, jt + nb), columns [k0, k0 + kc) to f32 (minus the
// zero point, in exact integer arithmetic) into buf, row stride kc.
INLINE void convert_tile(const int8_t *q, const int8_t *zp, int kp, int jt,
                         int nb, int k0, int kc, float *buf, int with_zp) {
  for (int r = 0; r < nb; r++) {
    const int8_t *src = q + (size_t)(jt + r) * kp + k0;
    float *dst = buf + (size_t)r * kc;
    v128_t z = wasm_i16x8_splat(with_zp ? zp[jt + r] : 0);
    for (int t = 0; t < kc; t += 16) {
      v128_t b = wasm_v128_load(src + t);
      v128_t lo = wasm_i16x8_extend_low_i8x16(b);
      v128_t hi = wasm_i16x8_extend_high_i8x16(b);
      if (with_zp) {
        lo = wasm_i16x8_sub(lo, z);
        hi = wasm_i16x8_sub(hi, z);
      }
      wasm_v128_store(dst + t, i16_to_f32(lo, 0));
      wasm_v128_store(dst + t + 4, i16_to_f32(lo, 1));
      wasm_v128_store(dst + t + 8, i16_to_f32(hi, 0));
      wasm_v128_store(dst + t + 12, i16_to_f32(hi, 1));
    }
  }
}

INLINE void gemm_i8_impl(const float *x, int m, int kp, const int8_t *q,
                         const int8_t *zp, const float *scales,
                         const float *bias, float *y, int n, int j0, int j1,
                         float *buf, int with_zp) {
  for (int k0 = 0; k0 < kp; k0 += KC) {
    int kc = kp - k0 < KC ? kp - k0 : KC;
    for (int jt = j0; jt < j1; jt += NB) {
      int nb = j1 - jt < NB ? j1 - jt : NB;
      convert_tile(q, zp, kp, jt, nb, k0, kc, buf, with_zp);
      tile_rows(x, m, kp, k0, buf, kc, nb, kc, y, n, jt, k0 == 0);
    }
  }
  for (int i = 0; i < m; i++) {
    float *yi = y + (size_t)i * n;
    for (int j = j0; j < j1; j++) yi[j] = finish(yi[j], scales, bias, j);
  }
}

// ---------------------------------------------------------------- exports

// y[:, j0:j1] = x · (q − zp)ᵀ · scale + bias for x [m, kp] f32, q [n, kp]
// int8; `zp` and `bias` may be 0 (null). `buf` is NB·KC floats of per-thread
// scratch, used when m > GEMV_MAX_ROWS; `exact` is 1 unless fits_scaled(x).
EXPORT(linear_i8)
void linear_i8(const float *x, int m, int kp, const int8_t *q,
               const int8_t *zp, const float *scales, const float *bias,
               float *y, int n, int j0, int j1, float *buf, int exact) {
  if (m == 1) {
    if (zp) gemv_i8_impl(x, kp, q, zp, scales, bias, y, j0, j1, 1, 1);
    else if (exact) gemv_i8_impl(x, kp, q, zp, scales, bias, y, j0, j1, 0, 1);
    else gemv_i8_impl(x, kp, q, zp, scales, bias, y, j0, j1, 0, 0);
  } else if (m <= GEMV_MAX_ROWS) {
    for (int i = 0; i < m; i += 4) {
      const float *xi = x + (size_t)i * kp;
      float *yi = y + (size_t)i * n;
      switch (m - i < 4 ? m - i : 4) {
        case 1: gemv_rows_i8(1, xi, kp, q, zp, scales, bias, yi, n, j0, j1, exact); break;
        case 2: gemv_rows_i8(2, xi, kp, q, zp, scales, bias, yi, n, j0, j1, exact); break;
        case 3: gemv_rows_i8(3, xi, kp, q, zp, scales, bias, yi, n, j0, j1, exact); break;
        default: gemv_rows_i8(4, xi, kp, q, zp, scales, bias, yi, n, j0, j1, exact); break;
      }
    }
  } else {
    if (zp) gemm_i8_impl(x, m, kp, q, zp, scales, bias, y, n, j0, j1, buf, 1);
    else gemm_i8_impl(x, m, kp, q, zp, scales, bias, y, n, j0, j1, buf, 0);
  }
}

// y[:, j0:j1] = x · wᵀ + bias for x [m, kp] and w [n, kp], both f32.
EXPORT(linear_f32)
void linear_f32(const float *x, int m, int kp, const float *w,
                const float *bias, float *y, int n, int j0, int j1) {
  if (m == 1) {
    gemv_f32(x, kp, w, bias, y, j0, j1);
    return;
  }
  for (int k0 = 0; k0 < kp; k0 += KC) {
    int kc = kp - k0 < KC ? kp - k0 : KC;
    for (int jt = j0; jt < j1; jt += NB) {
      int nb = j1 - jt < NB ? j1 - jt : NB;
      tile_rows(x, m, kp, k0, w + (size_t)jt * kp + k0, kp, nb, kc, y, n, jt,
                k0 == 0);
    }
  }
  if (bias) {
    for (int i = 0; i < m; i++) {
      float *yi = y + (size_t)i * n;
      for (int j = j0; j < j1; j++) yi[j] += bias[j];
    }
  }
}

// ------------------------------------------------------------ quantization

// Quantizes one row of f32 values given its (nonzero) scale.
// w / scale is finite and at most ~191 in magnitude (|w| ≤ absmax, and
// scale = f32(absmax / 127) loses at most about a third of absmax/127 to
// subnormal rounding), so after clamping to [-128, 127], adding 1.5·2^23
// rounds to the nearest integer, ties to even, exactly as f32x4.nearest, and
// leaves it in the low byte of the bits: cheaper than nearest + trunc_sat
// (which V8 expands into several instructions for NaN and overflow).
// Clamping before rounding is the same as after: the bounds are integers.
INLINE v128_t quantize_f32x4(v128_t v, v128_t vs) {
  v128_t q = wasm_f32x4_div(v, vs);
  q = wasm_f32x4_pmax(wasm_f32x4_splat(-128.0f), q);
  q = wasm_f32x4_pmin(wasm_f32x4_splat(127.0f), q);
  q = wasm_f32x4_add(q, wasm_f32x4_splat(12582912.0f));
  return wasm_v128_and(q, wasm_i32x4_splat(0xff));
}

INLINE void quantize_f32x16(v128_t a, v128_t b, v128_t c, v128_t d,
                            v128_t vs, int8_t *dst) {
  v128_t lo = wasm_u16x8_narrow_i32x4(quantize_f32x4(a, vs), quantize_f32x4(b, vs));
  v128_t hi = wasm_u16x8_narrow_i32x4(quantize_f32x4(c, vs), quantize_f32x4(d, vs));
  wasm_v128_store(dst, wasm_u8x16_narrow_i16x8(lo, hi));
}

INLINE int8_t quantize_scalar(float v, float scale) {
  float r = wasm_f32x4_extract_lane(
      wasm_f32x4_nearest(wasm_f32x4_splat(v / scale)), 0);
  return (int8_t)(r > 127.0f ? 127 : r < -128.0f ? -128 : (int)r);
}

// Symmetric per-row int8 of `rows` rows of `cols` values (kind 0 f32, 1 f16,
// 2 bf16): writes q and one scale per row. Returns -1, or the index of the
// first row that holds NaN or ±Inf (rows before it are done, it and the rest
// are not), so the caller can name the element.
EXPORT(quantize_rows)
int quantize_rows(const void *src, int kind, int rows, int cols, int8_t *q,
                  float *scales) {
  for (int r = 0; r < rows; r++) {
    int8_t *dst = q + (size_t)r * cols;
    float absmax;
    int c = 0;
    if (kind == 0) {
      // Non-negative finite floats order as their bit patterns do.
      const uint32_t *s = (const uint32_t *)src + (size_t)r * cols;
      v128_t mx = wasm_i32x4_splat(0), bad = mx;
      v128_t mask = wasm_i32x4_splat(0x7fffffff), inf = wasm_i32x4_splat(0x7f800000);
      for (; c + 4 <= cols; c += 4) {
        v128_t a = wasm_v128_and(wasm_v128_load(s + c), mask);
        bad = wasm_v128_or(bad, wasm_u32x4_ge(a, inf));
        mx = wasm_u32x4_max(mx, a);
      }
      uint32_t m = 0;
      for (int l = 0; l < 4; l++) {
        uint32_t v = (uint32_t)wasm_i32x4_extract_lane(mx, 0);
        m = v > m ? v : m;
        mx = wasm_i32x4_shuffle(mx, mx, 1, 2, 3, 0);
      }
      int any_bad = wasm_v128_any_true(bad);
      for (; c < cols; c++) {
        uint32_t a = s[c] & 0x7fffffff;
        any_bad |= a >= 0x7f800000;
        m = a > m ? a : m;
      }
      if (any_bad) return r;
      absmax = wasm_f32x4_extract_lane(wasm_i32x4_splat((int32_t)m), 0);
    } else {
      const uint16_t *s = (const uint16_t *)src + (size_t)r * cols;
      uint16_t special = kind == 1 ? 0x7c00 : 0x7f80;
      v128_t mx = wasm_i16x8_splat(0), bad = mx;
      v128_t mask = wasm_i16x8_splat(0x7fff), inf = wasm_i16x8_splat(special);
      for (; c + 8 <= cols; c += 8) {
        v128_t a = wasm_v128_and(wasm_v128_load(s + c), mask);
        bad = wasm_v128_or(bad, wasm_u16x8_ge(a, inf));
        mx = wasm_u16x8_max(mx, a);
      }
      uint32_t m = 0;
      for (int l = 0; l < 8; l++) {
        uint32_t v = wasm_u16x8_extract_lane(mx, 0);
        m = v > m ? v : m;
        mx = wasm_i16x8_shuffle(mx, mx, 1, 2, 3, 4, 5, 6, 7, 0);
      }
      int any_bad = wasm_v128_any_true(bad);
      for (; c < cols; c++) {
        uint32_t a = s[c] & 0x7fff;
        any_bad |= a >= special;
        m = a > m ? a : m;
      }
      if (any_bad) return r;
      absmax = kind == 1 ? f16_to_f32_scalar(m) : bf16_to_f32_scalar(m);
    }
    float scale = absmax / 127.0f;
    if (scale == 0.0f) {
      scales[r] = 1.0f;
      for (c = 0; c < cols; c++) dst[c] = 0;
      continue;
    }
    scales[r] = scale;
    v128_t vs = wasm_f32x4_splat(scale);
    c = 0;
    if (kind == 0) {
      const float *s = (const float *)src + (size_t)r * cols;
      for (; c + 16 <= cols; c += 16) {
        quantize_f32x16(wasm_v128_load(s + c), wasm_v128_load(s + c + 4),
                        wasm_v128_load(s + c + 8), wasm_v128_load(s + c + 12),
                        vs, dst + c);
      }
      for (; c < cols; c++) dst[c] = quantize_scalar(s[c], scale);
    } else {
      const uint16_t *s = (const uint16_t *)src + (size_t)r * cols;
      for (; c + 16 <= cols; c += 16) {
        v128_t v0 = wasm_v128_load(s + c), v1 = wasm_v128_load(s + c + 8);
        v128_t a, b, cc, d;
        if (kind == 1) {
          a = finite_f16_to_f32(bf16_lo(v0));
          b = finite_f16_to_f32(bf16_hi(v0));
          cc = finite_f16_to_f32(bf16_lo(v1));
          d = finite_f16_to_f32(bf16_hi(v1));
        } else {
          a = bf16_lo(v0);
          b = bf16_hi(v0);
          cc = bf16_lo(v1);
          d = bf16_hi(v1);
        }
        quantize_f32x16(a, b, cc, d, vs, dst + c);
      }
      for (; c < cols; c++) {
        float v = kind == 1 ? f16_to_f32_scalar(s[c]) : bf16_to_f32_scalar(s[c]);
        dst[c] = quantize_scalar(v, scale);
      }
    }
  }
  return -1;
}

// ------------------------------------------------ W8A8: int8 × int8 → int32

// The int32 view of y, which the W8A8 matrix-matrix kernel uses to carry
// exact partial sums between K blocks before the f32 epilogue; may_alias
// tells the compiler that these accesses and the float ones touch the same
// memory.
typedef int32_t __attribute__((may_alias)) alias_i32;

INLINE int32_t hsum_i32(v128_t v) {
  v = wasm_i32x4_add(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
  v = wasm_i32x4_add(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
  return wasm_i32x4_extract_lane(v, 0);
}

// y = f32(f32(f32(acc) · s_x) · s_w), then f32(y + bias): the order of
// referenceLinearW8A8. acc = Σ qx·q − zp·Σqx is exact in 64 bits; the one
// conversion to f32 rounds to nearest even, as Math.fround of the exact sum.
INLINE float finish_w8a8(int32_t dot, const int8_t *zp, int32_t xsum,
                         float sx, const float *scales, const float *bias,
                         int j) {
  int64_t acc = (int64_t)dot - (zp ? (int64_t)zp[j] * xsum : 0);
  float v = ((float)acc * sx) * scales[j];
  return bias ? v + bias[j] : v;
}

// Σ over 16 columns of qx · q as i32x4 partial sums: the weights widened to
// i16, the activations already i16, i32x4.dot_i16x8_s (pmaddwd) exact.
INLINE v128_t dot16_i8i16(v128_t b, const int16_t *xq) {
  v128_t lo = wasm_i16x8_extend_low_i8x16(b);
  v128_t hi = wasm_i16x8_extend_high_i8x16(b);
  return wasm_i32x4_add(wasm_i32x4_dot_i16x8(lo, wasm_v128_load(xq)),
                        wasm_i32x4_dot_i16x8(hi, wasm_v128_load(xq + 8)));
}

// Up to MR activation rows against weight rows [j0, j1), each weight row
// widened once per 16 columns and used for every activation row (MR = 4,
// j stepping by one), or, for one activation row, four weight rows per pass
// so that each activation load serves four rows.
INLINE void gemv_w8a8_impl(int MR, const int16_t *xq, const float *xs,
                           const int32_t *xsum, int kp, const int8_t *q,
                           const int8_t *zp, const float *scales,
                           const float *bias, float *y, int n, int j0,
                           int j1) {
  int j = j0;
  if (MR == 1) {
    for (; j + 4 <= j1; j += 4) {
      const int8_t *q0 = q + (size_t)j * kp;
      const int8_t *q1 = q0 + kp, *q2 = q1 + kp, *q3 = q2 + kp;
      v128_t a0 = wasm_i32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
      for (int t = 0; t < kp; t += 16) {
        a0 = wasm_i32x4_add(a0, dot16_i8i16(wasm_v128_load(q0 + t), xq + t));
        a1 = wasm_i32x4_add(a1, dot16_i8i16(wasm_v128_load(q1 + t), xq + t));
        a2 = wasm_i32x4_add(a2, dot16_i8i16(wasm_v128_load(q2 + t), xq + t));
        a3 = wasm_i32x4_add(a3, dot16_i8i16(wasm_v128_load(q3 + t), xq + t));
      }
      y[j] = finish_w8a8(hsum_i32(a0), zp, xsum[0], xs[0], scales, bias, j);
      y[j + 1] = finish_w8a8(hsum_i32(a1), zp, xsum[0], xs[0], scales, bias, j + 1);
      y[j + 2] = finish_w8a8(hsum_i32(a2), zp, xsum[0], xs[0], scales, bias, j + 2);
      y[j + 3] = finish_w8a8(hsum_i32(a3), zp, xsum[0], xs[0], scales, bias, j + 3);
    }
  }
  for (; j < j1; j++) {
    const int8_t *qr = q + (size_t)j * kp;
    v128_t acc[4];
    for (int i = 0; i < MR; i++) acc[i] = wasm_i32x4_splat(0);
    for (int t = 0; t < kp; t += 16) {
      v128_t b = wasm_v128_load(qr + t);
      v128_t lo = wasm_i16x8_extend_low_i8x16(b);
      v128_t hi = wasm_i16x8_extend_high_i8x16(b);
      for (int i = 0; i < MR; i++) {
        const int16_t *xi = xq + (size_t)i * kp + t;
        acc[i] = wasm_i32x4_add(
            acc[i], wasm_i32x4_add(wasm_i32x4_dot_i16x8(lo, wasm_v128_load(xi)),
                                   wasm_i32x4_dot_i16x8(hi, wasm_v128_load(xi + 8))));
      }
    }
    for (int i = 0; i < MR; i++)
      y[(size_t)i * n + j] =
          finish_w8a8(hsum_i32(acc[i]), zp, xsum[i], xs[i], scales, bias, j);
  }
}

// Register tile of the W8A8 matrix-matrix product: MR activation rows × NR
// weight rows over kc columns, int32 sums added into the int32 view of y.
INLINE void micro_w8a8(int MR, int NR, const int16_t *x, int xs,
                       const int8_t *w, int ws, int kc, alias_i32 *y, int n,
                       int first) {
  v128_t acc[4][2];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) acc[i][r] = wasm_i32x4_splat(0);
  for (int t = 0; t < kc; t += 16) {
    v128_t lo[2], hi[2];
    for (int r = 0; r < NR; r++) {
      v128_t b = wasm_v128_load(w + (size_t)r * ws + t);
      lo[r] = wasm_i16x8_extend_low_i8x16(b);
      hi[r] = wasm_i16x8_extend_high_i8x16(b);
    }
    for (int i = 0; i < MR; i++) {
      v128_t x0 = wasm_v128_load(x + (size_t)i * xs + t);
      v128_t x1 = wasm_v128_load(x + (size_t)i * xs + t + 8);
      for (int r = 0; r < NR; r++)
        acc[i][r] = wasm_i32x4_add(
            acc[i][r], wasm_i32x4_add(wasm_i32x4_dot_i16x8(lo[r], x0),
                                      wasm_i32x4_dot_i16x8(hi[r], x1)));
    }
  }
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NR; r++) {
      int32_t s = hsum_i32(acc[i][r]);
      alias_i32 *out = y + (size_t)i * n + r;
      *out = first ? s : *out + s;
    }
}

// Matrix-matrix W8A8: K blocks of KC columns; in each, every activation row
// meets NB weight rows (read as int8 from L1, widened in registers: the
// widening is cheap next to the dot products, so no converted tile). The
// exact int32 partial sums live in y until the epilogue.
INLINE void gemm_w8a8(const int16_t *xq, const float *xs, const int32_t *xsum,
                      int m, int kp, const int8_t *q, const int8_t *zp,
                      const float *scales, const float *bias, float *y, int n,
                      int j0, int j1) {
  alias_i32 *yi = (alias_i32 *)y;
  for (int k0 = 0; k0 < kp; k0 += KC) {
    int kc = kp - k0 < KC ? kp - k0 : KC;
    int first = k0 == 0;
    for (int jt = j0; jt < j1; jt += NB) {
      int nb = j1 - jt < NB ? j1 - jt : NB;
      const int8_t *w = q + (size_t)jt * kp + k0;
      int i = 0;
      for (; i + 4 <= m; i += 4) {
        const int16_t *x = xq + (size_t)i * kp + k0;
        alias_i32 *out = yi + (size_t)i * n + jt;
        int r = 0;
        for (; r + 2 <= nb; r += 2)
          micro_w8a8(4, 2, x, kp, w + (size_t)r * kp, kp, kc, out + r, n, first);
        if (r < nb)
          micro_w8a8(4, 1, x, kp, w + (size_t)r * kp, kp, kc, out + r, n, first);
      }
      for (; i < m; i++) {
        const int16_t *x = xq + (size_t)i * kp + k0;
        alias_i32 *out = yi + (size_t)i * n + jt;
        int r = 0;
        for (; r + 2 <= nb; r += 2)
          micro_w8a8(1, 2, x, kp, w + (size_t)r * kp, kp, kc, out + r, n, first);
        if (r < nb)
          micro_w8a8(1, 1, x, kp, w + (size_t)r * kp, kp, kc, out + r, n, first);
      }
    }
  }
  for (int i = 0; i < m; i++) {
    alias_i32 *src = yi + (size_t)i * n;
    float *dst = y + (size_t)i * n;
    for (int j = j0; j < j1; j++)
      dst[j] = finish_w8a8(src[j], zp, xsum[i], xs[i], scales, bias, j);
  }
}

// y[:, j0:j1] of W8A8 for activations already quantized by quantize_tokens
// (xq i16 [m, kp], scales xs [m], sums xsum [m]) and int8 weights q [n, kp]
// (zp, bias may be 0). Exact while |Σ qx·q| < 2³¹: k ≤ 65536 (the caller's
// limit).
EXPORT(linear_w8a8)
void linear_w8a8(const int16_t *xq, const float *xs, const int32_t *xsum,
                 int m, int kp, const int8_t *q, const int8_t *zp,
                 const float *scales, const float *bias, float *y, int n,
                 int j0, int j1) {
  if (m > GEMV_MAX_ROWS) {
    gemm_w8a8(xq, xs, xsum, m, kp, q, zp, scales, bias, y, n, j0, j1);
    return;
  }
  for (int i = 0; i < m; i += 4) {
    const int16_t *xi = xq + (size_t)i * kp;
    float *yi = y + (size_t)i * n;
    switch (m - i < 4 ? m - i : 4) {
      case 1: gemv_w8a8_impl(1, xi, xs + i, xsum + i, kp, q, zp, scales, bias, yi, n, j0, j1); break;
      case 2: gemv_w8a8_impl(2, xi, xs + i, xsum + i, kp, q, zp, scales, bias, yi, n, j0, j1); break;
      case 3: gemv_w8a8_impl(3, xi, xs + i, xsum + i, kp, q, zp, scales, bias, yi, n, j0, j1); break;
      default: gemv_w8a8_impl(4, xi, xs + i, xsum + i, kp, q, zp, scales, bias, yi, n, j0, j1); break;
    }
  }
}

// Quantizes activations per token exactly as quantizeActivationsPerToken:
// s = f32(absmax(row) / 127) (1 when 0), q = clamp(roundHalfToEven(f32(x / s)),
// −128, 127); a row holding NaN or ±Inf gets s = NaN and zeros. x is f32
// [m, k]; q goes to i16 rows of stride kp (pad zeroed), with the scale and
// the exact Σq of each row (for zero points).
EXPORT(quantize_tokens)
void quantize_tokens(const float *x, int m, int k, int kp, int16_t *xq,
                     float *xs, int32_t *xsum) {
  const v128_t magic = wasm_f32x4_splat(12582912.0f);
  const v128_t magic_bits = wasm_i32x4_splat(0x4b400000);
  for (int i = 0; i < m; i++) {
    const float *src = x + (size_t)i * k;
    const uint32_t *bits = (const uint32_t *)src;
    int16_t *dst = xq + (size_t)i * kp;
    v128_t mx = wasm_i32x4_splat(0);
    v128_t mask = wasm_i32x4_splat(0x7fffffff);
    int c = 0;
    for (; c + 4 <= k; c += 4)
      mx = wasm_u32x4_max(mx, wasm_v128_and(wasm_v128_load(bits + c), mask));
    mx = wasm_u32x4_max(mx, wasm_i32x4_shuffle(mx, mx, 2, 3, 0, 1));
    mx = wasm_u32x4_max(mx, wasm_i32x4_shuffle(mx, mx, 1, 0, 3, 2));
    uint32_t amax = (uint32_t)wasm_i32x4_extract_lane(mx, 0);
    for (; c < k; c++) {
      uint32_t a = bits[c] & 0x7fffffff;
      amax = a > amax ? a : amax;
    }
    if (amax >= 0x7f800000) {  // NaN or ±Inf somewhere in the row
      xs[i] = __builtin_nanf("");
      xsum[i] = 0;
      for (c = 0; c < kp; c++) dst[c] = 0;
      continue;
    }
    float s = wasm_f32x4_extract_lane(wasm_i32x4_splat((int32_t)amax), 0) / 127.0f;
    if (s == 0.0f) s = 1.0f;
    xs[i] = s;
    v128_t vs = wasm_f32x4_splat(s);
    v128_t sum = wasm_i32x4_splat(0);
    c = 0;
    // Clamped, |x / s| ≤ 128, and adding 1.5·2²³ rounds it to an integer,
    // ties to even, leaving 0x4b400000 + q in the bits (see quantize_f32x4).
    for (; c + 8 <= k; c += 8) {
      v128_t q0, q1;
      for (int h = 0; h < 2; h++) {
        v128_t v = wasm_f32x4_div(wasm_v128_load(src + c + 4 * h), vs);
        v = wasm_f32x4_pmax(wasm_f32x4_splat(-128.0f), v);
        v = wasm_f32x4_pmin(wasm_f32x4_splat(127.0f), v);
        v = wasm_i32x4_sub(wasm_f32x4_add(v, magic), magic_bits);
        if (h == 0) q0 = v;
        else q1 = v;
      }
      sum = wasm_i32x4_add(sum, wasm_i32x4_add(q0, q1));
      wasm_v128_store(dst + c, wasm_i16x8_narrow_i32x4(q0, q1));
    }
    int32_t total = hsum_i32(sum);
    for (; c < k; c++) {
      int8_t q = quantize_scalar(src[c], s);
      dst[c] = q;
      total += q;
    }
    for (; c < kp; c++) dst[c] = 0;
    xsum[i] = total;
  }
}

// ---------------------------------------- W4A16: group-wise 4-bit weights
//
// Codes are unsigned nibbles (zero point 8 when symmetric), scales f32
// [n, k/gs], zero points u8 [n, k/gs] or none; k is a multiple of the group
// size gs (32, 64, 128). Per 16 bytes (32 elements) the nibbles are split
// with one and / one shift, the zero point subtracted in i8, and each run of
// four codes moved by one i8x16.swizzle with a constant index vector into
// the top byte of four i32 lanes (measured well ahead of sign-extension
// chains and of i8x16.shuffle with a zero vector, which V8 expands), where
// i32 → f32 conversion gives (code − zp)·2²⁴ exactly. So the low nibbles give the even
// elements and the high ones the odd elements: prepare_int4_x stores each
// 32-column block of x as its 16 even then 16 odd columns, and every kernel
// reads x in that order.
//
// The weight copy is blocked (see interleave_int4): rows in blocks of
// I4_BLOCK, and within a block the 16-byte chunks of its rows interleaved
// (chunk c of the block's row r at c·16·R + 16·r, R its number of rows), so
// that the decode kernel, which reads a block's rows together, reads one
// sequential stream through one pointer (measured ~10% faster than one
// pointer per row, and 8 rows per pass ~5% faster than 4). Per 32 weights
// the decode kernel then spends 8 swizzles, 8 conversions, 8 multiplies and
// 8 adds (+ 5 to split the nibbles), against ~46 operations for int8 codes
// widened through i16: W4A16 decode runs ~0.8× the time of W8A16 here.
#define I4_BLOCK 8
// Activation rows up to which linear_i4 converts codes in registers (passes
// of up to four rows) rather than through dequantized tiles: measured on a
// 4096 × 4096 weight, rows win up to m = 6, tiles from m = 8 (13.4 against
// 14.6 ms at m = 8, 17.4 against 21.6 at m = 12).
#ifndef I4_GEMV_MAX_ROWS
#define I4_GEMV_MAX_ROWS 6
#endif

// Copies packed codes [n, kb] (kb = k/2 bytes per row, a multiple of 16)
// from src into the blocked layout at dst.
EXPORT(interleave_int4)
void interleave_int4(const uint8_t *src, int n, int kb, uint8_t *dst) {
  for (int b = 0; b < n; b += I4_BLOCK) {
    int rows = n - b < I4_BLOCK ? n - b : I4_BLOCK;
    const uint8_t *s = src + (size_t)b * kb;
    uint8_t *d = dst + (size_t)b * kb;
    for (int c = 0; c < kb; c += 16)
      for (int r = 0; r < rows; r++)
        wasm_v128_store(d + (size_t)c * rows + 16 * r,
                        wasm_v128_load(s + (size_t)r * kb + c));
  }
}

// Row j's first chunk in the blocked layout; *stride is the step from one
// of its chunks to the next.
INLINE const uint8_t *i4_row(const uint8_t *w, int kb, int n, int j,
                             int *stride) {
  int b = j & ~(I4_BLOCK - 1);
  int rows = n - b < I4_BLOCK ? n - b : I4_BLOCK;
  *stride = 16 * rows;
  return w + (size_t)b * kb + 16 * (j - b);
}

// Lanes 4s..4s+3 of v (i8 values) as f32, times 2^24 unless `exact`.
INLINE v128_t nib_f32(v128_t v, int s, int exact) {
  int8_t o = (int8_t)(4 * s), z = -128;
  v128_t t = wasm_i8x16_swizzle(
      v, wasm_i8x16_make(z, z, z, o, z, z, z, (int8_t)(o + 1), z, z, z,
                         (int8_t)(o + 2), z, z, z, (int8_t)(o + 3)));
  if (exact) t = wasm_i32x4_shr(t, 24);
  // No opaque() needed: clang cannot see through the swizzle, so nothing
  // here looks like a narrow integer to convert (and the barrier costs ~5%).
  return wasm_f32x4_convert_i32x4(t);
}

// The low and high nibbles of 16 bytes, minus the zero point, as i8 lanes.
INLINE void nibbles(v128_t b, v128_t z, v128_t *lo, v128_t *hi) {
  v128_t m = wasm_i8x16_splat(15);
  *lo = wasm_i8x16_sub(wasm_v128_and(b, m), z);
  *hi = wasm_i8x16_sub(wasm_v128_and(wasm_u16x8_shr(b, 4), m), z);
}

// acc + Σ over one 32-column block of x · (code − zp) (·2^24 unless exact),
// as f32x4 partial sums in two chains (acc, acc2); xp is the block of x in
// even/odd order.
INLINE void dot32_i4(v128_t b, v128_t z, const float *xp, int exact,
                     v128_t *acc, v128_t *acc2) {
  v128_t lo, hi;
  nibbles(b, z, &lo, &hi);
  v128_t p = *acc, q = *acc2;
  p = MADD(nib_f32(lo, 0, exact), wasm_v128_load(xp), p);
  q = MADD(nib_f32(lo, 1, exact), wasm_v128_load(xp + 4), q);
  p = MADD(nib_f32(lo, 2, exact), wasm_v128_load(xp + 8), p);
  q = MADD(nib_f32(lo, 3, exact), wasm_v128_load(xp + 12), q);
  p = MADD(nib_f32(hi, 0, exact), wasm_v128_load(xp + 16), p);
  q = MADD(nib_f32(hi, 1, exact), wasm_v128_load(xp + 20), q);
  p = MADD(nib_f32(hi, 2, exact), wasm_v128_load(xp + 24), p);
  q = MADD(nib_f32(hi, 3, exact), wasm_v128_load(xp + 28), q);
  *acc = p;
  *acc2 = q;
}

INLINE v128_t zero_point(const uint8_t *zp, size_t at) {
  return wasm_i8x16_splat(zp ? (int8_t)zp[at] : 8);
}

// One activation row (decode). A whole block of I4_BLOCK weight rows per
// pass shares each x load; per group, f32 partial sums of x · (code − zp),
// scaled once, as in referenceLinearInt4. Without `exact` the codes carry a
// factor 2^24 (one shift fewer per four weights, ~15% faster), removed
// exactly per group; the caller chooses `exact` when |x| could overflow with
// it (see prepare_int4_x). j0 is a multiple of I4_BLOCK.
INLINE void gemv_i4_impl(const float *x, int k, const uint8_t *w,
                         const uint8_t *zp, const float *scales, int gs,
                         const float *bias, float *y, int n, int j0, int j1,
                         int exact) {
  const int groups = k / gs, kb = k / 2;
  const v128_t unit = wasm_f32x4_splat(exact ? 1.0f : 0x1p-24f);
  int j = j0;
  for (; j + I4_BLOCK <= j1; j += I4_BLOCK) {
    const uint8_t *wb = w + (size_t)j * kb;
    v128_t a[I4_BLOCK];
    _Pragma("clang loop unroll(full)")
    for (int r = 0; r < I4_BLOCK; r++) a[r] = wasm_f32x4_splat(0);
    for (int g = 0; g < groups; g++) {
      v128_t z[I4_BLOCK], p[I4_BLOCK];
      _Pragma("clang loop unroll(full)")
      for (int r = 0; r < I4_BLOCK; r++) {
        z[r] = zero_point(zp, (size_t)(j + r) * groups + g);
        p[r] = wasm_f32x4_splat(0);
      }
      for (int t = g * gs; t < (g + 1) * gs; t += 32) {
        const uint8_t *c = wb + (size_t)(t >> 5) * (16 * I4_BLOCK);
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < I4_BLOCK; r += 2) {
          v128_t p2 = wasm_f32x4_splat(0), p3 = p2;
          dot32_i4(wasm_v128_load(c + 16 * r), z[r], x + t, exact, &p[r], &p2);
          dot32_i4(wasm_v128_load(c + 16 * r + 16), z[r + 1], x + t, exact,
                   &p[r + 1], &p3);
          p[r] = wasm_f32x4_add(p[r], p2);
          p[r + 1] = wasm_f32x4_add(p[r + 1], p3);
        }
      }
      _Pragma("clang loop unroll(full)")
      for (int r = 0; r < I4_BLOCK; r++)
        a[r] = wasm_f32x4_add(
            a[r], wasm_f32x4_mul(wasm_f32x4_mul(p[r], unit),
                                 wasm_f32x4_splat(scales[(size_t)(j + r) * groups + g])));
    }
    _Pragma("clang loop unroll(full)")
    for (int r = 0; r < I4_BLOCK; r++) {
      float s = hsum(a[r]);
      y[j + r] = bias ? s + bias[j + r] : s;
    }
  }
  for (; j < j1; j++) {  // the rows of a last, partial block
    int stride;
    const uint8_t *wr = i4_row(w, kb, n, j, &stride);
    const size_t s0 = (size_t)j * groups;
    v128_t a0 = wasm_f32x4_splat(0);
    for (int g = 0; g < groups; g++) {
      v128_t z0 = zero_point(zp, s0 + g);
      v128_t p0 = wasm_f32x4_splat(0);
      v128_t p1 = wasm_f32x4_splat(0);
      for (int t = g * gs; t < (g + 1) * gs; t += 32)
        dot32_i4(wasm_v128_load(wr + (size_t)(t >> 5) * stride), z0, x + t,
                 exact, &p0, &p1);
      p0 = wasm_f32x4_add(p0, p1);
      a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(wasm_f32x4_mul(p0, unit),
                                             wasm_f32x4_splat(scales[s0 + g])));
    }
    float s = hsum(a0);
    y[j] = bias ? s + bias[j] : s;
  }
}

// The eight f32x4 of one 32-column block of weight row, dequantized:
// (code − zp) · scale, in the even/odd order of x.
INLINE void dequant32_i4(v128_t b, v128_t z, v128_t sc, v128_t out[8]) {
  v128_t lo, hi;
  nibbles(b, z, &lo, &hi);
  for (int s = 0; s < 4; s++) {
    out[s] = wasm_f32x4_mul(nib_f32(lo, s, 1), sc);
    out[4 + s] = wasm_f32x4_mul(nib_f32(hi, s, 1), sc);
  }
}

// MR = 2..4 activation rows: each weight row's codes are converted once, in
// registers, and used for every activation row; per group, f32 partial sums
// scaled once, and the 2^24 factor of the decode kernel unless `exact`.
INLINE void gemv_rows_i4(int MR, const float *x, int k, const uint8_t *w,
                         const uint8_t *zp, const float *scales, int gs,
                         const float *bias, float *y, int n, int j0, int j1,
                         int exact) {
  const int groups = k / gs, kb = k / 2;
  const v128_t unit = wasm_f32x4_splat(exact ? 1.0f : 0x1p-24f);
  for (int j = j0; j < j1; j++) {
    int stride;
    const uint8_t *wr = i4_row(w, kb, n, j, &stride);
    v128_t a[4];
    for (int i = 0; i < MR; i++) a[i] = wasm_f32x4_splat(0);
    for (int g = 0; g < groups; g++) {
      v128_t z = zero_point(zp, (size_t)j * groups + g);
      v128_t p[4];
      for (int i = 0; i < MR; i++) p[i] = wasm_f32x4_splat(0);
      for (int t = g * gs; t < (g + 1) * gs; t += 32) {
        v128_t nib[2];
        nibbles(wasm_v128_load(wr + (size_t)(t >> 5) * stride), z, &nib[0],
                &nib[1]);
        for (int h = 0; h < 2; h++) {
          v128_t w0 = nib_f32(nib[h], 0, exact), w1 = nib_f32(nib[h], 1, exact);
          v128_t w2 = nib_f32(nib[h], 2, exact), w3 = nib_f32(nib[h], 3, exact);
          for (int i = 0; i < MR; i++) {
            const float *xi = x + (size_t)i * k + t + 16 * h;
            v128_t p0 = MADD(w0, wasm_v128_load(xi), p[i]);
            p0 = MADD(w1, wasm_v128_load(xi + 4), p0);
            p0 = MADD(w2, wasm_v128_load(xi + 8), p0);
            p[i] = MADD(w3, wasm_v128_load(xi + 12), p0);
          }
        }
      }
      v128_t sc = wasm_f32x4_splat(scales[(size_t)j * groups + g]);
      for (int i = 0; i < MR; i++)
        a[i] = wasm_f32x4_add(a[i], wasm_f32x4_mul(wasm_f32x4_mul(p[i], unit), sc));
    }
    for (int i = 0; i < MR; i++) {
      float s = hsum(a[i]);
      y[(size_t)i * n + j] = bias ? s + bias[j] : s;
    }
  }
}

// Dequantizes weight rows [jt, jt + nb), columns [k0, k0 + kc) (whole
// groups, in the even/odd order) into buf, row stride kc.
INLINE void convert_tile_i4(const uint8_t *w, const uint8_t *zp,
                            const float *scales, int n, int k, int gs, int jt,
                            int nb, int k0, int kc, float *buf) {
  const int groups = k / gs;
  for (int r = 0; r < nb; r++) {
    const size_t row = (size_t)(jt + r);
    int stride;
    const uint8_t *src = i4_row(w, k / 2, n, jt + r, &stride);
    float *dst = buf + (size_t)r * kc;
    for (int t = 0; t < kc; t += 32) {
      int g = (k0 + t) / gs;
      v128_t wv[8];
      dequant32_i4(wasm_v128_load(src + (size_t)((k0 + t) >> 5) * stride),
                   zero_point(zp, row * groups + g),
                   wasm_f32x4_splat(scales[row * groups + g]), wv);
      for (int s = 0; s < 8; s++) wasm_v128_store(dst + t + 4 * s, wv[s]);
    }
  }
}

// y[:, j0:j1] = x · dequant(w)ᵀ + bias for x [m, k] f32 in the even/odd
// order of prepare_int4_x and w in the blocked layout of interleave_int4;
// j0 is a multiple of I4_BLOCK. `exact` as prepare_int4_x says; buf is NB·KC
// floats of per-thread scratch, used when m > I4_GEMV_MAX_ROWS.
EXPORT(linear_i4)
void linear_i4(const float *x, int m, int k, const uint8_t *w,
               const uint8_t *zp, const float *scales, int gs,
               const float *bias, float *y, int n, int j0, int j1, float *buf,
               int exact) {
  if (m == 1) {
    if (exact) gemv_i4_impl(x, k, w, zp, scales, gs, bias, y, n, j0, j1, 1);
    else gemv_i4_impl(x, k, w, zp, scales, gs, bias, y, n, j0, j1, 0);
  } else if (m <= I4_GEMV_MAX_ROWS) {
    for (int i = 0; i < m; i += 4) {
      const float *xi = x + (size_t)i * k;
      float *yi = y + (size_t)i * n;
      switch ((m - i < 4 ? m - i : 4) + 4 * exact) {
        case 1: gemv_i4_impl(xi, k, w, zp, scales, gs, bias, yi, n, j0, j1, 0); break;
        case 2: gemv_rows_i4(2, xi, k, w, zp, scales, gs, bias, yi, n, j0, j1, 0); break;
        case 3: gemv_rows_i4(3, xi, k, w, zp, scales, gs, bias, yi, n, j0, j1, 0); break;
        case 4: gemv_rows_i4(4, xi, k, w, zp, scales, gs, bias, yi, n, j0, j1, 0); break;
        case 5: gemv_i4_impl(xi, k, w, zp, scales, gs, bias, yi, n, j0, j1, 1); break;
        case 6: gemv_rows_i4(2, xi, k, w, zp, scales, gs, bias, yi, n, j0, j1, 1); break;
        case 7: gemv_rows_i4(3, xi, k, w, zp, scales, gs, bias, yi, n, j0, j1, 1); break;
        default: gemv_rows_i4(4, xi, k, w, zp, scales, gs, bias, yi, n, j0, j1, 1); break;
      }
    }
  } else {
    for (int k0 = 0; k0 < k; k0 += KC) {
      int kc = k - k0 < KC ? k - k0 : KC;
      for (int jt = j0; jt < j1; jt += NB) {
        int nb = j1 - jt < NB ? j1 - jt : NB;
        convert_tile_i4(w, zp, scales, n, k, gs, jt, nb, k0, kc, buf);
        tile_rows(x, m, k, k0, buf, kc, nb, kc, y, n, jt, k0 == 0);
      }
    }
    if (bias) {
      for (int i = 0; i < m; i++) {
        float *yi = y + (size_t)i * n;
        for (int j = j0; j < j1; j++) yi[j] += bias[j];
      }
    }
  }
}

// Eight values of a row of f32 (kind 0), f16 (1) or bf16 (2) as two f32x4.
INLINE void load8(const void *src, int kind, size_t at, v128_t *a, v128_t *b) {
  if (kind == 0) {
    *a = wasm_v128_load((const float *)src + at);
    *b = wasm_v128_load((const float *)src + at + 4);
  } else {
    v128_t v = wasm_v128_load((const uint16_t *)src + at);
    if (kind == 1) {
      *a = f16_to_f32(wasm_u32x4_extend_low_u16x8(v));
      *b = f16_to_f32(wasm_u32x4_extend_high_u16x8(v));
    } else {
      *a = bf16_lo(v);
      *b = bf16_hi(v);
    }
  }
}

// Activations for linear_i4: `m` rows of `k` (a multiple of 32) values of
// kind 0 (f32), 1 (f16) or 2 (bf16) to f32, each 32-column block stored as
// its 16 even then 16 odd columns. Returns 1 when the fast, 2^24-scaled
// decode path is safe: every |x| ≤ 2^90, so no sum of x · (code − zp) · 2^24
// over a group can overflow where the reference's does not; else 0 (large
// values, ±Inf or NaN), and linear_i4 must run with exact = 1.
EXPORT(prepare_int4_x)
int prepare_int4_x(const void *src, int kind, int m, int k, float *dst) {
  v128_t mx = wasm_i32x4_splat(0);
  const v128_t mask = wasm_i32x4_splat(0x7fffffff);
  for (size_t e = 0; e < (size_t)m * k; e += 32) {
    v128_t v[8];
    for (int h = 0; h < 4; h++) load8(src, kind, e + 8 * h, &v[2 * h], &v[2 * h + 1]);
    for (int h = 0; h < 8; h++) mx = wasm_u32x4_max(mx, wasm_v128_and(v[h], mask));
    for (int h = 0; h < 4; h++) {
      wasm_v128_store(dst + e + 4 * h, wasm_i32x4_shuffle(v[2 * h], v[2 * h + 1], 0, 2, 4, 6));
      wasm_v128_store(dst + e + 16 + 4 * h,
                      wasm_i32x4_shuffle(v[2 * h], v[2 * h + 1], 1, 3, 5, 7));
    }
  }
  mx = wasm_u32x4_max(mx, wasm_i32x4_shuffle(mx, mx, 2, 3, 0, 1));
  mx = wasm_u32x4_max(mx, wasm_i32x4_shuffle(mx, mx, 1, 0, 3, 2));
  return (uint32_t)wasm_i32x4_extract_lane(mx, 0) <= 0x6c800000u;  // 2^90
}

// ------------------------------------------------------- bandwidth probe

// Reads `bytes` (a multiple of 64) from src with four independent 16-byte
// load streams and returns a sum of them, so that nothing is optimised away:
// the benchmarks' read-bandwidth probe, run on every thread of the pool.
EXPORT(read_bytes)
int read_bytes(const uint8_t *src, int bytes) {
  v128_t a = wasm_i32x4_splat(0), b = a, c = a, d = a;
  for (int i = 0; i < bytes; i += 64) {
    a = wasm_i32x4_add(a, wasm_v128_load(src + i));
    b = wasm_i32x4_add(b, wasm_v128_load(src + i + 16));
    c = wasm_i32x4_add(c, wasm_v128_load(src + i + 32));
    d = wasm_i32x4_add(d, wasm_v128_load(src + i + 48));
  }
  return hsum_i32(wasm_i32x4_add(wasm_i32x4_add(a, b), wasm_i32x4_add(c, d)));
}
