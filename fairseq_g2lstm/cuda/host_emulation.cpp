// Host emulation of the fused kernel: the CUDA build's ops for CPU tensors, running
// g2lstm_sequence.h's loops and g2lstm_steps.cuh's per-thread step code as they are,
// with each "launch" a serial loop over the thread indices.
//
// It exists so that the CPU tests can check, without a GPU, everything in the kernel
// but the launch itself: the gate math, the indexing (vectorised and not), variable
// lengths, the final states, the Philox draws, the backward loop and the products.
// Built with -DG2LSTM_HOST_EMULATION=1 together with binding.cpp
// (fairseq_g2lstm.cuda.build.load_host_emulation); never part of the CUDA extension.
//
// Philox state: each call takes a fresh seed from the default CPU generator (so
// torch.manual_seed fixes the draws) and offset 0, or the seed it is given.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>

#include <mutex>

#include "g2lstm_sequence.h"

namespace g2lstm {
namespace {

struct HostLaunch {
  struct Guard {
    explicit Guard(const at::Tensor&) {}
  };
  struct Philox {
    uint64_t seed = 0;
    uint64_t offset = 0;
  };

  static void check_device(const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.device().is_cpu(), "g2lstm host emulation: ", name, " must be a CPU tensor; got ",
                t.device());
  }

  static Philox reserve_philox(const at::Tensor&, uint64_t) {
    auto* gen = at::check_generator<at::CPUGeneratorImpl>(at::detail::getDefaultCPUGenerator());
    std::lock_guard<std::mutex> lock(gen->mutex_);
    return Philox{gen->random64(), 0};
  }

  static Philox fixed_philox(uint64_t seed) { return Philox{seed, 0}; }

  template <typename scalar_t, typename acc_t, bool HARD, NoiseKind NOISE, int VEC>
  static void forward(const ForwardStep<scalar_t, acc_t>& step, int64_t threads, const Philox& philox) {
    for (int64_t index = 0; index < threads; ++index) {
      forward_step_thread<scalar_t, acc_t, HARD, NOISE, VEC>(index, step, philox.seed, philox.offset);
    }
  }

  template <typename scalar_t, typename acc_t, bool HARD, int VEC>
  static void backward(const BackwardStep<scalar_t, acc_t>& step, int64_t threads) {
    for (int64_t index = 0; index < threads; ++index) {
      backward_step_thread<scalar_t, acc_t, HARD, VEC>(index, step);
    }
  }
};

}  // namespace

std::vector<at::Tensor> sequence_forward(const at::Tensor& x_proj, const at::Tensor& w_hh,
                                         const at::Tensor& h0, const at::Tensor& c0,
                                         const std::vector<int64_t>& batch_sizes, double inv_tau,
                                         double noise_prob, double eps, bool hard,
                                         const std::optional<at::Tensor>& noise,
                                         std::optional<int64_t> seed, bool poison) {
  return detail::sequence_forward<HostLaunch>(x_proj, w_hh, h0, c0, batch_sizes, inv_tau, noise_prob,
                                              eps, hard, noise, seed, poison);
}

std::vector<at::Tensor> sequence_backward(const at::Tensor& grad_out, const at::Tensor& grad_h_n,
                                          const at::Tensor& grad_c_n, const at::Tensor& w_hh,
                                          const at::Tensor& hs, const at::Tensor& cs,
                                          const at::Tensor& gates,
                                          const std::vector<int64_t>& batch_sizes, double inv_tau,
                                          bool hard, bool poison) {
  return detail::sequence_backward<HostLaunch>(grad_out, grad_h_n, grad_c_n, w_hh, hs, cs, gates,
                                               batch_sizes, inv_tau, hard, poison);
}

std::vector<at::Tensor> cell_forward(const at::Tensor& preact, const at::Tensor& c_prev,
                                     double inv_tau, double noise_prob, double eps, bool hard,
                                     const std::optional<at::Tensor>& noise,
                                     std::optional<int64_t> seed, bool poison) {
  return detail::cell_forward<HostLaunch>(preact, c_prev, inv_tau, noise_prob, eps, hard, noise,
                                          seed, poison);
}

std::vector<at::Tensor> cell_backward(const at::Tensor& grad_h, const at::Tensor& grad_c,
                                      const at::Tensor& gates, const at::Tensor& c_prev,
                                      const at::Tensor& c, double inv_tau, bool hard, bool poison) {
  return detail::cell_backward<HostLaunch>(grad_h, grad_c, gates, c_prev, c, inv_tau, hard, poison);
}

}  // namespace g2lstm
