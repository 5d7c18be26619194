// One time step of the fused kernel, per thread: what the CUDA kernels run for each
// thread index and what the host emulation runs in a serial loop.
//
// A thread owns VEC consecutive hidden units j .. j+VEC-1 of one row b:
//   index = b * (H / VEC) + j / VEC,   index in [0, B * H / VEC).
// VEC > 1 only when H % VEC == 0 and every pointer is aligned to the vector width
// (the host code checks), so each load and store is one 16-byte access.
//
// Variable lengths: rows are sorted by decreasing length, so at step t the rows
// b < active (= batch_sizes[t]) are real and the rest are padding. The kernels still
// visit the padding rows and write zeros there (output, gates, cells, gradients), so
// no element of any buffer is left unwritten.
#pragma once

#include <cstdint>

#include "g2lstm_gates.cuh"

namespace g2lstm {

// How a step gets the i/f noise: none, an explicit [B,2H] tensor (the debug hook that
// lets the torch reference see the same draws), or Philox draws in the kernel.
enum class NoiseKind : int { kNone = 0, kExplicit = 1, kPhilox = 2 };

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <int N, typename T>
G2_HD Vec<T, N> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T, N>*>(p);
}

template <int N, typename T>
G2_HD void store_vec(T* p, const Vec<T, N>& value) {
  *reinterpret_cast<Vec<T, N>*>(p) = value;
}

template <int N, typename T>
G2_HD void store_zeros(T* p) {
  Vec<T, N> zero;
  G2_UNROLL
  for (int k = 0; k < N; ++k) {
    zero.v[k] = static_cast<T>(0.0f);
  }
  store_vec<N>(p, zero);
}

// Arguments of one forward step. Row-major buffers; B rows each.
template <typename scalar_t, typename acc_t>
struct ForwardStep {
  int64_t batch;        // B
  int64_t hidden;       // H
  int64_t active;       // rows real at this step (batch_sizes[t]); the rest are padding
  int64_t active_next;  // rows real at the next step (0 after the last): rows in
                        // [active_next, active) take their last step here
  uint64_t step;        // t, this step's position in the reserved Philox stream
  acc_t inv_tau;        // 1 / temperature for i and f
  acc_t noise_prob;     // p of the Bernoulli noise mask (NoiseKind::kPhilox)
  acc_t eps;            // the logistic noise's eps (gates.LOGISTIC_EPS)
  const scalar_t* x_proj;  // [B,4H] input projection of this step, both biases in
  const scalar_t* rh;      // [active,4H] h_{t-1} W_hh^T, or null when x_proj is the whole
                           // pre-activation (the single-step op)
  const scalar_t* c_prev;  // [B,H] c_{t-1}
  const scalar_t* noise;   // [B,2H] explicit B*L for i|f (NoiseKind::kExplicit)
  scalar_t* gates;         // [B,4H] out: activated i, f, g, o
  scalar_t* c;             // [B,H] out: c_t
  scalar_t* h;             // [B,H] out: h_t (zero at padding rows)
  scalar_t* h_n;           // [B,H] out or null: h of the rows whose last step this is
  scalar_t* c_n;           // [B,H] out or null: c of the same rows
};

template <typename scalar_t, typename acc_t, bool HARD, NoiseKind NOISE, int VEC>
G2_HD void forward_step_thread(int64_t index, const ForwardStep<scalar_t, acc_t>& s,
                               uint64_t philox_seed, uint64_t philox_offset) {
  const int64_t H = s.hidden;
  const int64_t per_row = H / VEC;
  const int64_t b = index / per_row;
  const int64_t j = (index - b * per_row) * VEC;
  scalar_t* gates = s.gates + b * kNumGates * H + j;
  scalar_t* c_out = s.c + b * H + j;
  scalar_t* h_out = s.h + b * H + j;
  if (b >= s.active) {  // padding: zeros everywhere
    G2_UNROLL
    for (int k = 0; k < kNumGates; ++k) {
      store_zeros<VEC>(gates + k * H);
    }
    store_zeros<VEC>(c_out);
    store_zeros<VEC>(h_out);
    return;
  }

  acc_t pre[kNumGates][VEC];
  const scalar_t* xp = s.x_proj + b * kNumGates * H + j;
  G2_UNROLL
  for (int k = 0; k < kNumGates; ++k) {
    const Vec<scalar_t, VEC> x = load_vec<VEC>(xp + k * H);
    G2_UNROLL
    for (int v = 0; v < VEC; ++v) {
      pre[k][v] = static_cast<acc_t>(x.v[v]);
    }
  }
  if (s.rh != nullptr) {
    const scalar_t* rh = s.rh + b * kNumGates * H + j;
    G2_UNROLL
    for (int k = 0; k < kNumGates; ++k) {
      const Vec<scalar_t, VEC> r = load_vec<VEC>(rh + k * H);
      G2_UNROLL
      for (int v = 0; v < VEC; ++v) {
        pre[k][v] += static_cast<acc_t>(r.v[v]);
      }
    }
  }

  acc_t n_i[VEC], n_f[VEC];
  if (NOISE == NoiseKind::kExplicit) {
    const scalar_t* noise = s.noise + b * kNumNoisyGates * H + j;
    const Vec<scalar_t, VEC> ni = load_vec<VEC>(noise);
    const Vec<scalar_t, VEC> nf = load_vec<VEC>(noise + H);
    G2_UNROLL
    for (int v = 0; v < VEC; ++v) {
      n_i[v] = static_cast<acc_t>(ni.v[v]);
      n_f[v] = static_cast<acc_t>(nf.v[v]);
    }
  } else if (NOISE == NoiseKind::kPhilox) {
    G2_UNROLL
    for (int v = 0; v < VEC; ++v) {
      const U32x4 words = philox_words(philox_seed, philox_offset, s.step,
                                       static_cast<uint64_t>(b * H + j + v));
      n_i[v] = gate_noise_from_uniform(uniform_from_word<acc_t>(words.x), s.noise_prob, s.eps);
      n_f[v] = gate_noise_from_uniform(uniform_from_word<acc_t>(words.y), s.noise_prob, s.eps);
    }
  } else {
    G2_UNROLL
    for (int v = 0; v < VEC; ++v) {
      n_i[v] = acc_t(0);
      n_f[v] = acc_t(0);
    }
  }

  const Vec<scalar_t, VEC> c_prev = load_vec<VEC>(s.c_prev + b * H + j);
  Vec<scalar_t, VEC> out[kNumGates], c_new, h_new;
  G2_UNROLL
  for (int v = 0; v < VEC; ++v) {
    const UnitState<acc_t> u = unit_forward<HARD>(pre[0][v], pre[1][v], pre[2][v], pre[3][v],
                                                  n_i[v], n_f[v],
                                                  static_cast<acc_t>(c_prev.v[v]), s.inv_tau);
    out[0].v[v] = static_cast<scalar_t>(u.i);
    out[1].v[v] = static_cast<scalar_t>(u.f);
    out[2].v[v] = static_cast<scalar_t>(u.g);
    out[3].v[v] = static_cast<scalar_t>(u.o);
    c_new.v[v] = static_cast<scalar_t>(u.c);
    h_new.v[v] = static_cast<scalar_t>(u.h);
  }
  G2_UNROLL
  for (int k = 0; k < kNumGates; ++k) {
    store_vec<VEC>(gates + k * H, out[k]);
  }
  store_vec<VEC>(c_out, c_new);
  store_vec<VEC>(h_out, h_new);
  if (b >= s.active_next && s.h_n != nullptr) {
    store_vec<VEC>(s.h_n + b * H + j, h_new);
    store_vec<VEC>(s.c_n + b * H + j, c_new);
  }
}

// Arguments of one backward step.
template <typename scalar_t, typename acc_t>
struct BackwardStep {
  int64_t batch;   // B
  int64_t hidden;  // H
  int64_t active;  // rows real at this step
  acc_t inv_tau;
  const scalar_t* grad_out;  // [B,H] dL/d out_t, or null (the single-step op)
  const scalar_t* grad_h;    // [B,H] dL/dh_t through step t+1 (or from h_n, or the
                             // single-step op's dL/dh)
  acc_t* grad_c;             // [B,H] in: dL/dc_t through step t+1; out: dL/dc_{t-1}
  const scalar_t* gates;     // [B,4H] saved activated gates of step t
  const scalar_t* c_prev;    // [B,H] c_{t-1}
  const scalar_t* c;         // [B,H] c_t
  scalar_t* grad_preact;     // [B,4H] out: dL/d pre-activations (zero at padding rows)
};

template <typename scalar_t, typename acc_t, bool HARD, int VEC>
G2_HD void backward_step_thread(int64_t index, const BackwardStep<scalar_t, acc_t>& s) {
  const int64_t H = s.hidden;
  const int64_t per_row = H / VEC;
  const int64_t b = index / per_row;
  const int64_t j = (index - b * per_row) * VEC;
  scalar_t* grad_preact = s.grad_preact + b * kNumGates * H + j;
  if (b >= s.active) {  // padding rows pass nothing on; their grad_c stays as it is
    G2_UNROLL
    for (int k = 0; k < kNumGates; ++k) {
      store_zeros<VEC>(grad_preact + k * H);
    }
    return;
  }
  const int64_t row = b * H + j;
  const Vec<scalar_t, VEC> grad_h = load_vec<VEC>(s.grad_h + row);
  Vec<scalar_t, VEC> grad_out;
  if (s.grad_out != nullptr) {
    grad_out = load_vec<VEC>(s.grad_out + row);
  }
  Vec<acc_t, VEC> grad_c = load_vec<VEC>(s.grad_c + row);
  const Vec<scalar_t, VEC> c_prev = load_vec<VEC>(s.c_prev + row);
  const Vec<scalar_t, VEC> c = load_vec<VEC>(s.c + row);
  Vec<scalar_t, VEC> gate[kNumGates];
  const scalar_t* gates = s.gates + b * kNumGates * H + j;
  G2_UNROLL
  for (int k = 0; k < kNumGates; ++k) {
    gate[k] = load_vec<VEC>(gates + k * H);
  }

  Vec<scalar_t, VEC> d[kNumGates];
  G2_UNROLL
  for (int v = 0; v < VEC; ++v) {
    acc_t d_h = static_cast<acc_t>(grad_h.v[v]);
    if (s.grad_out != nullptr) {
      d_h += static_cast<acc_t>(grad_out.v[v]);
    }
    const UnitGrad<acc_t> r = unit_backward<HARD>(
        d_h, grad_c.v[v], static_cast<acc_t>(gate[0].v[v]), static_cast<acc_t>(gate[1].v[v]),
        static_cast<acc_t>(gate[2].v[v]), static_cast<acc_t>(gate[3].v[v]),
        static_cast<acc_t>(c_prev.v[v]), static_cast<acc_t>(c.v[v]), s.inv_tau);
    d[0].v[v] = static_cast<scalar_t>(r.d_i);
    d[1].v[v] = static_cast<scalar_t>(r.d_f);
    d[2].v[v] = static_cast<scalar_t>(r.d_g);
    d[3].v[v] = static_cast<scalar_t>(r.d_o);
    grad_c.v[v] = r.d_c_prev;
  }
  G2_UNROLL
  for (int k = 0; k < kNumGates; ++k) {
    store_vec<VEC>(grad_preact + k * H, d[k]);
  }
  store_vec<VEC>(s.grad_c + row, grad_c);
}

}  // namespace g2lstm
