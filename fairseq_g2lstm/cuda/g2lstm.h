// The ops of the fused G2-LSTM kernel, as binding.cpp exposes them to Python.
//
// Shapes: T steps, B batch rows, H hidden units. Every tensor of one call has the same
// dtype (float64, float32, float16 or bfloat16; the math runs in float32, or float64
// for float64) and lives on the same device: CUDA in the CUDA build
// (g2lstm_forward.cu, g2lstm_backward.cu), the CPU in the host emulation
// (host_emulation.cpp) that runs the same step code in a serial loop for the tests.
//
// Gate arguments, from a gates.GateSpec: inv_tau (1 / temperature for i and f),
// noise_prob (p; 0 for none), eps (gates.LOGISTIC_EPS) and hard (i, f = 1[a >= 0]).
// Noise: an explicit `noise` tensor when given (the debug hook), else Philox draws in
// the kernel when noise_prob > 0, else none. Hard gates take no noise. The Philox seed
// and offset come from the device's default generator (seeded by torch.manual_seed;
// 4 words reserved per step), or, when `seed` is given, are (seed, 0): the Python side
// passes one under torch.distributed so that each rank draws its own noise.
//
// poison: fill every output and work buffer with NaN first, so that a test sees any
// element the kernels leave unwritten.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace g2lstm {

// One direction of a layer over a padded batch, after its input projection.
//   x_proj:      [T,B,4H] input projection with both biases, gate blocks i, f, g, o
//   w_hh:        [4H,H] recurrent weight
//   h0, c0:      [B,H] initial state
//   batch_sizes: T ints, rows real at each step: rows are sorted by decreasing length,
//                so batch_sizes is non-increasing (row b is real at step t iff
//                b < batch_sizes[t])
//   noise:       [T,B,2H] explicit i|f noise B*L, or None
// Returns {out [T,B,H] (zero at padding; a view of hs), h_n [B,H], c_n [B,H],
//          gates [T,B,4H] activated, hs [T+1,B,H] = h0 then out, cs [T+1,B,H] = c0 then c}.
// h_n, c_n: each row's state after its last real step (h0, c0 for an empty row).
std::vector<at::Tensor> sequence_forward(const at::Tensor& x_proj, const at::Tensor& w_hh,
                                         const at::Tensor& h0, const at::Tensor& c0,
                                         const std::vector<int64_t>& batch_sizes, double inv_tau,
                                         double noise_prob, double eps, bool hard,
                                         const std::optional<at::Tensor>& noise,
                                         std::optional<int64_t> seed, bool poison);

// Backward of sequence_forward, from what it saved.
//   grad_out: [T,B,H];  grad_h_n, grad_c_n: [B,H]
//   w_hh: [4H,H];  hs, cs: [T+1,B,H];  gates: [T,B,4H];  batch_sizes as in forward
// Returns {grad_x_proj [T,B,4H], grad_w_hh [4H,H], grad_h0 [B,H], grad_c0 [B,H]}.
std::vector<at::Tensor> sequence_backward(const at::Tensor& grad_out, const at::Tensor& grad_h_n,
                                          const at::Tensor& grad_c_n, const at::Tensor& w_hh,
                                          const at::Tensor& hs, const at::Tensor& cs,
                                          const at::Tensor& gates,
                                          const std::vector<int64_t>& batch_sizes, double inv_tau,
                                          bool hard, bool poison);

// One step after the matrix products (the decoder's step, rnn.cell.fused_cell_step).
//   preact: [N,4H] pre-activations;  c_prev: [N,H];  noise: [N,2H] or None
// Returns {h [N,H], c [N,H], gates [N,4H]}.
std::vector<at::Tensor> cell_forward(const at::Tensor& preact, const at::Tensor& c_prev,
                                     double inv_tau, double noise_prob, double eps, bool hard,
                                     const std::optional<at::Tensor>& noise,
                                     std::optional<int64_t> seed, bool poison);

// Backward of cell_forward.
//   grad_h, grad_c: [N,H];  gates: [N,4H];  c_prev, c: [N,H]
// Returns {grad_preact [N,4H], grad_c_prev [N,H]}.
std::vector<at::Tensor> cell_backward(const at::Tensor& grad_h, const at::Tensor& grad_c,
                                      const at::Tensor& gates, const at::Tensor& c_prev,
                                      const at::Tensor& c, double inv_tau, bool hard, bool poison);

}  // namespace g2lstm
