// The G2 gate math for the fused kernel: the C++ mirror of fairseq_g2lstm/gates.py.
//
// Everything here is a pure host-and-device function of one hidden unit, so the same
// code runs in the CUDA kernels and, compiled by a plain C++ compiler, in the host
// emulation that the CPU tests check against the torch reference.
//
// Block order of the 4H pre-activation axis: i, f, g, o (torch.nn.LSTM's, gates.py's
// GATE_ORDER). i and f are the G2 gates; g = tanh, o = sigmoid stay plain.
//
// Noise (docs/paper.md, section 2), one uniform per element, the same scheme as
// gates.sample_gate_noise:  v ~ U(0,1];  B = 1[v < p];  given B = 1, u = v / p is again
// U(0,1) and independent of B, so  B*L = 1[v < p] * (log(u + eps) - log(1 - u + eps)).
// Every element (t, b, i-or-f, j) gets its own v: fresh at every step, independent for i
// and f.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define G2_HD __host__ __device__ __forceinline__
#else
#define G2_HD inline
#endif

// Fully unroll the short loops over gates and vector lanes, so that the small arrays
// they index stay in registers.
#if defined(__CUDA_ARCH__)
#define G2_UNROLL _Pragma("unroll")
#else
#define G2_UNROLL
#endif

namespace g2lstm {

// Number of gate blocks on the pre-activation axis, and of noisy ones (i, f first).
constexpr int kNumGates = 4;
constexpr int kNumNoisyGates = 2;

// --- precision-generic math ----------------------------------------------------------
// Overloads rather than templates so that float stays on the float functions (expf,
// tanhf, ...) on both the device and the host, as torch's own CUDA kernels do.
G2_HD float g2_exp(float x) { return ::expf(x); }
G2_HD double g2_exp(double x) { return ::exp(x); }
G2_HD float g2_log(float x) { return ::logf(x); }
G2_HD double g2_log(double x) { return ::log(x); }
G2_HD float g2_log1p(float x) { return ::log1pf(x); }
G2_HD double g2_log1p(double x) { return ::log1p(x); }
G2_HD float g2_tanh(float x) { return ::tanhf(x); }
G2_HD double g2_tanh(double x) { return ::tanh(x); }

template <typename acc_t>
G2_HD acc_t sigmoid(acc_t x) {
  return acc_t(1) / (acc_t(1) + g2_exp(-x));
}

// --- Philox4x32-10 ---------------------------------------------------------------------
// The counter-based generator of Salmon et al. (SC'11) that curand's Philox4_32_10 and
// ATen's CUDA generator use. A pure function: (counter, key) -> four 32-bit words.
struct U32x4 {
  uint32_t x, y, z, w;
};

G2_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  hi = __umulhi(a, b);
  lo = a * b;
#else
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
#endif
}

G2_HD U32x4 philox4x32_10(U32x4 ctr, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kMulA = 0xD2511F53u, kMulB = 0xCD9E8D57u;
  constexpr uint32_t kWeylA = 0x9E3779B9u, kWeylB = 0xBB67AE85u;
  G2_UNROLL
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += kWeylA;
      key1 += kWeylB;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(kMulA, ctr.x, hi0, lo0);
    mulhilo32(kMulB, ctr.z, hi1, lo1);
    ctr = U32x4{hi1 ^ ctr.y ^ key0, lo1, hi0 ^ ctr.w ^ key1, lo0};
  }
  return ctr;
}

// The two uniforms (for i and f) of element `element` (= b*H + j) at step `step`.
//
// seed, offset: the generator's Philox seed and offset (offset counts 32-bit words per
// subsequence, as ATen's philox_cuda_state does; the caller reserved 4 words per step).
// Counter = (offset/4 + step, element): the subsequence is the element, the position
// in it the step, so the draws do not depend on the launch shape or vector width, and
// equal curand_init(seed, element, offset + 4*step) followed by curand4.
G2_HD U32x4 philox_words(uint64_t seed, uint64_t offset, uint64_t step, uint64_t element) {
  const uint64_t block = offset / 4 + step;
  const U32x4 ctr{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                  static_cast<uint32_t>(element), static_cast<uint32_t>(element >> 32)};
  return philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// curand's mapping of a 32-bit word to a uniform in (0, 1] (x * 2^-32 + 2^-33).
template <typename acc_t>
G2_HD acc_t uniform_from_word(uint32_t word) {
  constexpr acc_t kInv2Pow32 = acc_t(2.3283064365386962890625e-10);
  return static_cast<acc_t>(word) * kInv2Pow32 + kInv2Pow32 / acc_t(2);
}

// --- the gate ------------------------------------------------------------------------
// Logistic noise L = log(u + eps) - log(1 - u + eps) (gates.logistic_noise).
template <typename acc_t>
G2_HD acc_t logistic_noise(acc_t u, acc_t eps) {
  return g2_log(u + eps) - g2_log1p(eps - u);
}

// B*L from one uniform v: zero unless v < p, else L(v / p) (gates.sample_gate_noise).
template <typename acc_t>
G2_HD acc_t gate_noise_from_uniform(acc_t v, acc_t noise_prob, acc_t eps) {
  return v < noise_prob ? logistic_noise(v / noise_prob, eps) : acc_t(0);
}

// An input or forget gate: sigmoid((a + noise) * inv_tau), or the step 1[a >= 0] when
// HARD (hard eval: no noise, no temperature).
template <bool HARD, typename acc_t>
G2_HD acc_t noisy_gate(acc_t a, acc_t noise, acc_t inv_tau) {
  if (HARD) {
    return a >= acc_t(0) ? acc_t(1) : acc_t(0);
  }
  return sigmoid((a + noise) * inv_tau);
}

// dL/da of an input or forget gate from dL/dgate and the gate value s alone:
// d * s (1 - s) * inv_tau, in gates.gate_preact_grad's order; the step passes none.
template <bool HARD, typename acc_t>
G2_HD acc_t noisy_gate_backward(acc_t d, acc_t s, acc_t inv_tau) {
  if (HARD) {
    return acc_t(0);
  }
  return d * (s * (acc_t(1) - s)) * inv_tau;
}

// --- one hidden unit of one step -----------------------------------------------------
template <typename acc_t>
struct UnitState {
  acc_t i, f, g, o;  // activated gates
  acc_t c, h;        // c_t = f c_{t-1} + i g;  h_t = o tanh(c_t)
};

// Forward of one unit: pre-activations a_* (input projection + recurrent product),
// the i/f noise n_i, n_f (zero for none) and c_{t-1}.
template <bool HARD, typename acc_t>
G2_HD UnitState<acc_t> unit_forward(acc_t a_i, acc_t a_f, acc_t a_g, acc_t a_o, acc_t n_i,
                                    acc_t n_f, acc_t c_prev, acc_t inv_tau) {
  UnitState<acc_t> s;
  s.i = noisy_gate<HARD>(a_i, n_i, inv_tau);
  s.f = noisy_gate<HARD>(a_f, n_f, inv_tau);
  s.g = g2_tanh(a_g);
  s.o = sigmoid(a_o);
  s.c = s.f * c_prev + s.i * s.g;
  s.h = s.o * g2_tanh(s.c);
  return s;
}

template <typename acc_t>
struct UnitGrad {
  acc_t d_i, d_f, d_g, d_o;  // dL / d pre-activations
  acc_t d_c_prev;            // dL / d c_{t-1}
};

// Backward of one unit from the saved gates, c_{t-1} and c_t (tanh c_t is recomputed).
// d_h: dL/dh_t (output and recurrent paths together); d_c: dL/dc_t from step t+1.
template <bool HARD, typename acc_t>
G2_HD UnitGrad<acc_t> unit_backward(acc_t d_h, acc_t d_c, acc_t i, acc_t f, acc_t g, acc_t o,
                                    acc_t c_prev, acc_t c, acc_t inv_tau) {
  const acc_t tanh_c = g2_tanh(c);
  const acc_t d_c_total = d_c + d_h * o * (acc_t(1) - tanh_c * tanh_c);
  UnitGrad<acc_t> r;
  r.d_i = noisy_gate_backward<HARD>(d_c_total * g, i, inv_tau);
  r.d_f = noisy_gate_backward<HARD>(d_c_total * c_prev, f, inv_tau);
  r.d_g = d_c_total * i * (acc_t(1) - g * g);
  r.d_o = d_h * tanh_c * (o * (acc_t(1) - o));
  r.d_c_prev = d_c_total * f;
  return r;
}

}  // namespace g2lstm
