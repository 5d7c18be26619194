// The host side of the fused G2-LSTM ops: checks, buffers, the step loops and the
// matrix products. Templated on a Launch policy that runs one step's threads:
//
//   CUDA (g2lstm_forward.cu, g2lstm_backward.cu): one kernel launch per step on the
//   current stream; the i/f noise comes from the CUDA generator's Philox state.
//   Host emulation (host_emulation.cpp): a serial loop over the same thread indices,
//   so the CPU tests run this file and g2lstm_steps.cuh as they are.
//
// A Launch provides:
//   Guard(tensor)                       device guard for the call
//   check_device(tensor, name)          the tensor is on this backend's device
//   Philox reserve_philox(like, words)  reserve `words` 32-bit draws per subsequence
//   Philox fixed_philox(seed)           the stream (seed, offset 0)
//   forward<scalar_t, acc_t, HARD, NOISE, VEC>(ForwardStep, threads, Philox)
//   backward<scalar_t, acc_t, HARD, VEC>(BackwardStep, threads)
//
// The design is haste's and ATen's fused LSTM cell's: the input projection of all steps
// is one product done by the caller (x_proj); per step, one recurrent product through
// torch (cuBLAS on CUDA) and one fused pointwise step; backward runs the pointwise
// backward in a reverse loop with one recurrent product per step, then the recurrent
// weight gradient as one product over all steps.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "g2lstm.h"
#include "g2lstm_steps.cuh"

namespace g2lstm {
namespace detail {

constexpr int kVectorBytes = 16;
// Philox words reserved per step: one 128-bit block, of which i and f use two words.
constexpr uint64_t kPhiloxWordsPerStep = 4;

// Widest vector of T in one 16-byte access.
template <typename T>
constexpr int max_vec() {
  return sizeof(T) >= kVectorBytes ? 1 : static_cast<int>(kVectorBytes / sizeof(T));
}

struct Span {
  const void* ptr;
  int64_t element_bytes;
};

// 16-byte accesses need H % VEC == 0 and every base pointer aligned to its vector width
// (rows then start aligned too). Null pointers (unused buffers) do not count.
template <int VEC>
bool can_vectorize(int64_t hidden, std::initializer_list<Span> spans) {
  if (VEC == 1 || hidden % VEC != 0) {
    return VEC == 1;
  }
  for (const Span& s : spans) {
    const auto address = reinterpret_cast<uintptr_t>(s.ptr);
    if (s.ptr != nullptr && address % static_cast<uintptr_t>(s.element_bytes * VEC) != 0) {
      return false;
    }
  }
  return true;
}

inline void poison(std::initializer_list<at::Tensor> tensors) {
  for (const at::Tensor& t : tensors) {
    t.fill_(std::numeric_limits<double>::quiet_NaN());
  }
}

inline void check_like(const at::Tensor& ref, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "g2lstm: ", name, " has dtype ", t.scalar_type(),
              ", expected ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), "g2lstm: ", name, " is on ", t.device(), ", expected ",
              ref.device());
}

inline void check_shape(const at::Tensor& t, at::IntArrayRef shape, const char* name) {
  TORCH_CHECK(t.sizes() == shape, "g2lstm: ", name, " has shape ", t.sizes(), ", expected ", shape);
}

inline void check_batch_sizes(const std::vector<int64_t>& batch_sizes, int64_t steps, int64_t batch) {
  TORCH_CHECK(static_cast<int64_t>(batch_sizes.size()) == steps, "g2lstm: batch_sizes has ",
              batch_sizes.size(), " entries for ", steps, " steps");
  for (int64_t t = 0; t < steps; ++t) {
    TORCH_CHECK(batch_sizes[t] >= 0 && batch_sizes[t] <= batch, "g2lstm: batch_sizes[", t,
                "] = ", batch_sizes[t], " is outside [0, ", batch, "]");
    TORCH_CHECK(t == 0 || batch_sizes[t] <= batch_sizes[t - 1],
                "g2lstm: batch_sizes must not increase (rows sorted by decreasing length)");
  }
}

inline NoiseKind noise_kind(bool hard, double noise_prob, const std::optional<at::Tensor>& noise) {
  TORCH_CHECK(noise_prob >= 0.0 && noise_prob <= 1.0, "g2lstm: noise_prob must be in [0, 1]; got ",
              noise_prob);
  const bool has_noise = noise.has_value() && noise->defined();
  TORCH_CHECK(!hard || (!has_noise && noise_prob == 0.0),
              "g2lstm: hard gates take no noise (hard is the eval mode)");
  if (has_noise) {
    return NoiseKind::kExplicit;
  }
  return noise_prob > 0.0 ? NoiseKind::kPhilox : NoiseKind::kNone;
}

// The explicit noise (the debug hook), checked against `like` and `shape` and made
// contiguous; an undefined tensor for the other noise kinds.
inline at::Tensor explicit_noise(NoiseKind kind, const std::optional<at::Tensor>& noise_in,
                                 const at::Tensor& like, at::IntArrayRef shape) {
  if (kind != NoiseKind::kExplicit) {
    return at::Tensor();
  }
  check_like(like, *noise_in, "noise");
  check_shape(*noise_in, shape, "noise");
  return noise_in->contiguous();
}

template <NoiseKind K>
using NoiseConstant = std::integral_constant<NoiseKind, K>;

// Calls f(hard, noise, vec) with compile-time constants for the run-time flags, so each
// variant is its own kernel with no branch on the mode.
template <typename scalar_t, typename F>
void dispatch_forward(bool hard, NoiseKind noise, bool vectorize, F&& f) {
  constexpr int kVec = max_vec<scalar_t>();
  auto with_vec = [&](auto hard_c, auto noise_c) {
    if (vectorize) {
      f(hard_c, noise_c, std::integral_constant<int, kVec>{});
    } else {
      f(hard_c, noise_c, std::integral_constant<int, 1>{});
    }
  };
  if (hard) {
    with_vec(std::true_type{}, NoiseConstant<NoiseKind::kNone>{});
    return;
  }
  switch (noise) {
    case NoiseKind::kNone:
      with_vec(std::false_type{}, NoiseConstant<NoiseKind::kNone>{});
      break;
    case NoiseKind::kExplicit:
      with_vec(std::false_type{}, NoiseConstant<NoiseKind::kExplicit>{});
      break;
    case NoiseKind::kPhilox:
      with_vec(std::false_type{}, NoiseConstant<NoiseKind::kPhilox>{});
      break;
  }
}

template <typename scalar_t, typename F>
void dispatch_backward(bool hard, bool vectorize, F&& f) {
  constexpr int kVec = max_vec<scalar_t>();
  auto with_vec = [&](auto hard_c) {
    if (vectorize) {
      f(hard_c, std::integral_constant<int, kVec>{});
    } else {
      f(hard_c, std::integral_constant<int, 1>{});
    }
  };
  if (hard) {
    with_vec(std::true_type{});
  } else {
    with_vec(std::false_type{});
  }
}

// --- sequence forward ----------------------------------------------------------------
template <class Launch>
std::vector<at::Tensor> sequence_forward(const at::Tensor& x_proj_in, const at::Tensor& w_hh_in,
                                         const at::Tensor& h0, const at::Tensor& c0,
                                         const std::vector<int64_t>& batch_sizes, double inv_tau,
                                         double noise_prob, double eps, bool hard,
                                         const std::optional<at::Tensor>& noise_in,
                                         std::optional<int64_t> seed, bool fill_nan) {
  TORCH_CHECK(x_proj_in.dim() == 3 && x_proj_in.size(2) % kNumGates == 0,
              "g2lstm: x_proj must be [T,B,4H]; got ", x_proj_in.sizes());
  const int64_t T = x_proj_in.size(0), B = x_proj_in.size(1), H = x_proj_in.size(2) / kNumGates;
  Launch::check_device(x_proj_in, "x_proj");
  check_like(x_proj_in, w_hh_in, "w_hh");
  check_like(x_proj_in, h0, "h0");
  check_like(x_proj_in, c0, "c0");
  check_shape(w_hh_in, {kNumGates * H, H}, "w_hh");
  check_shape(h0, {B, H}, "h0");
  check_shape(c0, {B, H}, "c0");
  check_batch_sizes(batch_sizes, T, B);
  const NoiseKind kind = noise_kind(hard, noise_prob, noise_in);
  const at::Tensor noise = explicit_noise(kind, noise_in, x_proj_in, {T, B, kNumNoisyGates * H});
  typename Launch::Guard guard(x_proj_in);
  const at::NoGradGuard no_grad;  // the ops are differentiated by their Python Functions

  const at::Tensor x_proj = x_proj_in.contiguous();
  const at::Tensor w_hh = w_hh_in.contiguous();
  const auto options = x_proj.options();
  at::Tensor hs = at::empty({T + 1, B, H}, options);  // h0, then the output of every step
  at::Tensor cs = at::empty({T + 1, B, H}, options);  // c0, then c of every step
  at::Tensor gates = at::empty({T, B, kNumGates * H}, options);
  at::Tensor h_n = at::empty({B, H}, options);
  at::Tensor c_n = at::empty({B, H}, options);
  at::Tensor rh = at::empty({B, kNumGates * H}, options);  // h_{t-1} W_hh^T of one step
  if (fill_nan) {
    poison({hs, cs, gates, h_n, c_n, rh});
  }
  hs[0].copy_(h0);
  cs[0].copy_(c0);
  const int64_t first = T > 0 ? batch_sizes[0] : 0;
  if (first < B) {  // rows with no real step keep their initial state
    h_n.narrow(0, first, B - first).copy_(h0.narrow(0, first, B - first));
    c_n.narrow(0, first, B - first).copy_(c0.narrow(0, first, B - first));
  }
  if (T == 0 || B * H == 0) {
    return {hs.narrow(0, 1, T), h_n, c_n, gates, hs, cs};
  }
  typename Launch::Philox philox{};
  if (kind == NoiseKind::kPhilox) {
    philox = seed.has_value()
                 ? Launch::fixed_philox(static_cast<uint64_t>(*seed))
                 : Launch::reserve_philox(x_proj, kPhiloxWordsPerStep * static_cast<uint64_t>(T));
  }
  const at::Tensor w_hh_t = w_hh.t();  // [H,4H]

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_proj.scalar_type(), "g2lstm_sequence_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kVec = max_vec<scalar_t>();
    const int64_t bytes = sizeof(scalar_t);
    const bool vectorize = can_vectorize<kVec>(
        H, {{x_proj.data_ptr(), bytes}, {rh.data_ptr(), bytes}, {hs.data_ptr(), bytes},
            {cs.data_ptr(), bytes}, {gates.data_ptr(), bytes}, {h_n.data_ptr(), bytes},
            {c_n.data_ptr(), bytes}, {noise.defined() ? noise.data_ptr() : nullptr, bytes}});
    dispatch_forward<scalar_t>(hard, kind, vectorize, [&](auto hard_c, auto noise_c, auto vec_c) {
      constexpr bool HARD = decltype(hard_c)::value;
      constexpr NoiseKind NOISE = decltype(noise_c)::value;
      constexpr int VEC = decltype(vec_c)::value;
      scalar_t* hs_p = hs.data_ptr<scalar_t>();
      scalar_t* cs_p = cs.data_ptr<scalar_t>();
      ForwardStep<scalar_t, acc_t> s{};
      s.batch = B;
      s.hidden = H;
      s.inv_tau = static_cast<acc_t>(inv_tau);
      s.noise_prob = static_cast<acc_t>(noise_prob);
      s.eps = static_cast<acc_t>(eps);
      s.rh = rh.data_ptr<scalar_t>();
      s.h_n = h_n.data_ptr<scalar_t>();
      s.c_n = c_n.data_ptr<scalar_t>();
      for (int64_t t = 0; t < T; ++t) {
        const int64_t active = batch_sizes[t];
        if (active > 0) {
          at::Tensor rh_rows = rh.narrow(0, 0, active);
          at::mm_out(rh_rows, hs[t].narrow(0, 0, active), w_hh_t);
        }
        s.active = active;
        s.active_next = t + 1 < T ? batch_sizes[t + 1] : 0;
        s.step = static_cast<uint64_t>(t);
        s.x_proj = x_proj.data_ptr<scalar_t>() + t * B * kNumGates * H;
        s.c_prev = cs_p + t * B * H;
        s.noise = NOISE == NoiseKind::kExplicit ? noise.data_ptr<scalar_t>() + t * B * kNumNoisyGates * H
                                                : nullptr;
        s.gates = gates.data_ptr<scalar_t>() + t * B * kNumGates * H;
        s.c = cs_p + (t + 1) * B * H;
        s.h = hs_p + (t + 1) * B * H;
        Launch::template forward<scalar_t, acc_t, HARD, NOISE, VEC>(s, B * H / VEC, philox);
      }
    });
  });
  return {hs.narrow(0, 1, T), h_n, c_n, gates, hs, cs};
}

// --- sequence backward ---------------------------------------------------------------
template <class Launch>
std::vector<at::Tensor> sequence_backward(const at::Tensor& grad_out_in, const at::Tensor& grad_h_n,
                                          const at::Tensor& grad_c_n, const at::Tensor& w_hh_in,
                                          const at::Tensor& hs, const at::Tensor& cs,
                                          const at::Tensor& gates,
                                          const std::vector<int64_t>& batch_sizes, double inv_tau,
                                          bool hard, bool fill_nan) {
  TORCH_CHECK(gates.dim() == 3 && gates.size(2) % kNumGates == 0,
              "g2lstm: gates must be [T,B,4H]; got ", gates.sizes());
  const int64_t T = gates.size(0), B = gates.size(1), H = gates.size(2) / kNumGates;
  Launch::check_device(gates, "gates");
  for (const auto& named : {std::make_pair(&grad_out_in, "grad_out"), std::make_pair(&grad_h_n, "grad_h_n"),
                            std::make_pair(&grad_c_n, "grad_c_n"), std::make_pair(&w_hh_in, "w_hh"),
                            std::make_pair(&hs, "hs"), std::make_pair(&cs, "cs")}) {
    check_like(gates, *named.first, named.second);
  }
  check_shape(grad_out_in, {T, B, H}, "grad_out");
  check_shape(grad_h_n, {B, H}, "grad_h_n");
  check_shape(grad_c_n, {B, H}, "grad_c_n");
  check_shape(w_hh_in, {kNumGates * H, H}, "w_hh");
  check_shape(hs, {T + 1, B, H}, "hs");
  check_shape(cs, {T + 1, B, H}, "cs");
  TORCH_CHECK(hs.is_contiguous() && cs.is_contiguous() && gates.is_contiguous(),
              "g2lstm: hs, cs and gates must be the contiguous buffers sequence_forward saved");
  check_batch_sizes(batch_sizes, T, B);
  typename Launch::Guard guard(gates);
  const at::NoGradGuard no_grad;  // the ops are differentiated by their Python Functions

  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor w_hh = w_hh_in.contiguous();
  const auto options = gates.options();
  at::Tensor grad_preact = at::empty({T, B, kNumGates * H}, options);
  if (fill_nan) {
    poison({grad_preact});
  }
  at::Tensor grad_h = grad_h_n.clone(at::MemoryFormat::Contiguous);  // dL/dh_t, dtype
  at::Tensor grad_c = grad_c_n.to(at::toOpMathType(gates.scalar_type()), /*non_blocking=*/false,
                                  /*copy=*/true, at::MemoryFormat::Contiguous);  // dL/dc_t, acc
  if (T > 0 && B * H > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gates.scalar_type(), "g2lstm_sequence_backward", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      constexpr int kVec = max_vec<scalar_t>();
      const int64_t bytes = sizeof(scalar_t);
      const bool vectorize = can_vectorize<kVec>(
          H, {{grad_out.data_ptr(), bytes}, {grad_h.data_ptr(), bytes},
              {grad_c.data_ptr(), static_cast<int64_t>(sizeof(acc_t))}, {gates.data_ptr(), bytes},
              {cs.data_ptr(), bytes}, {grad_preact.data_ptr(), bytes}});
      dispatch_backward<scalar_t>(hard, vectorize, [&](auto hard_c, auto vec_c) {
        constexpr bool HARD = decltype(hard_c)::value;
        constexpr int VEC = decltype(vec_c)::value;
        const scalar_t* cs_p = cs.data_ptr<scalar_t>();
        BackwardStep<scalar_t, acc_t> s{};
        s.batch = B;
        s.hidden = H;
        s.inv_tau = static_cast<acc_t>(inv_tau);
        s.grad_h = grad_h.data_ptr<scalar_t>();
        s.grad_c = grad_c.data_ptr<acc_t>();
        for (int64_t t = T - 1; t >= 0; --t) {
          const int64_t active = batch_sizes[t];
          s.active = active;
          s.grad_out = grad_out.data_ptr<scalar_t>() + t * B * H;
          s.gates = gates.data_ptr<scalar_t>() + t * B * kNumGates * H;
          s.c_prev = cs_p + t * B * H;
          s.c = cs_p + (t + 1) * B * H;
          s.grad_preact = grad_preact.data_ptr<scalar_t>() + t * B * kNumGates * H;
          Launch::template backward<scalar_t, acc_t, HARD, VEC>(s, B * H / VEC);
          if (active > 0) {  // dL/dh_{t-1} of the real rows: grad_preact_t W_hh
            at::Tensor grad_h_rows = grad_h.narrow(0, 0, active);
            at::mm_out(grad_h_rows, grad_preact[t].narrow(0, 0, active), w_hh);
          }
        }
      });
    });
  }
  // dW_hh = sum_t grad_preact_t^T h_{t-1}: one product over all steps, h_{t-1} = hs[t].
  // Padding rows have zero grad_preact, so they add nothing.
  at::Tensor grad_w_hh =
      T > 0 ? at::mm(grad_preact.view({T * B, kNumGates * H}).t(), hs.narrow(0, 0, T).reshape({T * B, H}))
            : at::zeros({kNumGates * H, H}, options);
  return {grad_preact, grad_w_hh, grad_h, grad_c.to(gates.scalar_type())};
}

// --- single step (the decoder's cell) ------------------------------------------------
template <class Launch>
std::vector<at::Tensor> cell_forward(const at::Tensor& preact_in, const at::Tensor& c_prev_in,
                                     double inv_tau, double noise_prob, double eps, bool hard,
                                     const std::optional<at::Tensor>& noise_in,
                                     std::optional<int64_t> seed, bool fill_nan) {
  TORCH_CHECK(preact_in.dim() == 2 && preact_in.size(1) % kNumGates == 0,
              "g2lstm: preact must be [N,4H]; got ", preact_in.sizes());
  const int64_t N = preact_in.size(0), H = preact_in.size(1) / kNumGates;
  Launch::check_device(preact_in, "preact");
  check_like(preact_in, c_prev_in, "c_prev");
  check_shape(c_prev_in, {N, H}, "c_prev");
  const NoiseKind kind = noise_kind(hard, noise_prob, noise_in);
  const at::Tensor noise = explicit_noise(kind, noise_in, preact_in, {N, kNumNoisyGates * H});
  typename Launch::Guard guard(preact_in);
  const at::NoGradGuard no_grad;  // the ops are differentiated by their Python Functions
  const at::Tensor preact = preact_in.contiguous();
  const at::Tensor c_prev = c_prev_in.contiguous();
  const auto options = preact.options();
  at::Tensor h = at::empty({N, H}, options);
  at::Tensor c = at::empty({N, H}, options);
  at::Tensor gates = at::empty({N, kNumGates * H}, options);
  if (fill_nan) {
    poison({h, c, gates});
  }
  if (N * H == 0) {
    return {h, c, gates};
  }
  typename Launch::Philox philox{};
  if (kind == NoiseKind::kPhilox) {
    philox = seed.has_value() ? Launch::fixed_philox(static_cast<uint64_t>(*seed))
                              : Launch::reserve_philox(preact, kPhiloxWordsPerStep);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, preact.scalar_type(), "g2lstm_cell_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kVec = max_vec<scalar_t>();
    const int64_t bytes = sizeof(scalar_t);
    const bool vectorize = can_vectorize<kVec>(
        H, {{preact.data_ptr(), bytes}, {c_prev.data_ptr(), bytes}, {h.data_ptr(), bytes},
            {c.data_ptr(), bytes}, {gates.data_ptr(), bytes},
            {noise.defined() ? noise.data_ptr() : nullptr, bytes}});
    dispatch_forward<scalar_t>(hard, kind, vectorize, [&](auto hard_c, auto noise_c, auto vec_c) {
      constexpr bool HARD = decltype(hard_c)::value;
      constexpr NoiseKind NOISE = decltype(noise_c)::value;
      constexpr int VEC = decltype(vec_c)::value;
      ForwardStep<scalar_t, acc_t> s{};
      s.batch = N;
      s.hidden = H;
      s.active = N;
      s.active_next = N;  // no final-state rows: h_n, c_n stay null
      s.step = 0;
      s.inv_tau = static_cast<acc_t>(inv_tau);
      s.noise_prob = static_cast<acc_t>(noise_prob);
      s.eps = static_cast<acc_t>(eps);
      s.x_proj = preact.data_ptr<scalar_t>();
      s.rh = nullptr;
      s.c_prev = c_prev.data_ptr<scalar_t>();
      s.noise = NOISE == NoiseKind::kExplicit ? noise.data_ptr<scalar_t>() : nullptr;
      s.gates = gates.data_ptr<scalar_t>();
      s.c = c.data_ptr<scalar_t>();
      s.h = h.data_ptr<scalar_t>();
      Launch::template forward<scalar_t, acc_t, HARD, NOISE, VEC>(s, N * H / VEC, philox);
    });
  });
  return {h, c, gates};
}

template <class Launch>
std::vector<at::Tensor> cell_backward(const at::Tensor& grad_h_in, const at::Tensor& grad_c_in,
                                      const at::Tensor& gates_in, const at::Tensor& c_prev_in,
                                      const at::Tensor& c_in, double inv_tau, bool hard,
                                      bool fill_nan) {
  TORCH_CHECK(gates_in.dim() == 2 && gates_in.size(1) % kNumGates == 0,
              "g2lstm: gates must be [N,4H]; got ", gates_in.sizes());
  const int64_t N = gates_in.size(0), H = gates_in.size(1) / kNumGates;
  Launch::check_device(gates_in, "gates");
  for (const auto& named : {std::make_pair(&grad_h_in, "grad_h"), std::make_pair(&grad_c_in, "grad_c"),
                            std::make_pair(&c_prev_in, "c_prev"), std::make_pair(&c_in, "c")}) {
    check_like(gates_in, *named.first, named.second);
    check_shape(*named.first, {N, H}, named.second);
  }
  typename Launch::Guard guard(gates_in);
  const at::NoGradGuard no_grad;  // the ops are differentiated by their Python Functions
  const at::Tensor grad_h = grad_h_in.contiguous();
  const at::Tensor gates = gates_in.contiguous();
  const at::Tensor c_prev = c_prev_in.contiguous();
  const at::Tensor c = c_in.contiguous();
  at::Tensor grad_preact = at::empty({N, kNumGates * H}, gates.options());
  if (fill_nan) {
    poison({grad_preact});
  }
  at::Tensor grad_c = grad_c_in.to(at::toOpMathType(gates.scalar_type()), /*non_blocking=*/false,
                                   /*copy=*/true, at::MemoryFormat::Contiguous);
  if (N * H > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gates.scalar_type(), "g2lstm_cell_backward", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      constexpr int kVec = max_vec<scalar_t>();
      const int64_t bytes = sizeof(scalar_t);
      const bool vectorize = can_vectorize<kVec>(
          H, {{grad_h.data_ptr(), bytes}, {grad_c.data_ptr(), static_cast<int64_t>(sizeof(acc_t))},
              {gates.data_ptr(), bytes}, {c_prev.data_ptr(), bytes}, {c.data_ptr(), bytes},
              {grad_preact.data_ptr(), bytes}});
      dispatch_backward<scalar_t>(hard, vectorize, [&](auto hard_c, auto vec_c) {
        constexpr bool HARD = decltype(hard_c)::value;
        constexpr int VEC = decltype(vec_c)::value;
        BackwardStep<scalar_t, acc_t> s{};
        s.batch = N;
        s.hidden = H;
        s.active = N;
        s.inv_tau = static_cast<acc_t>(inv_tau);
        s.grad_out = nullptr;
        s.grad_h = grad_h.data_ptr<scalar_t>();
        s.grad_c = grad_c.data_ptr<acc_t>();
        s.gates = gates.data_ptr<scalar_t>();
        s.c_prev = c_prev.data_ptr<scalar_t>();
        s.c = c.data_ptr<scalar_t>();
        s.grad_preact = grad_preact.data_ptr<scalar_t>();
        Launch::template backward<scalar_t, acc_t, HARD, VEC>(s, N * H / VEC);
      });
    });
  }
  return {grad_preact, grad_c.to(gates.scalar_type())};
}

}  // namespace detail
}  // namespace g2lstm
