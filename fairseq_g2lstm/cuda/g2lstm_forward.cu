// Forward of the fused G2-LSTM kernel on CUDA: one pointwise kernel per time step.
//
// Per step (g2lstm_sequence.h runs the loop): the recurrent product h_{t-1} W_hh^T into a
// [B,4H] scratch through torch (cuBLAS), then forward_step_kernel, which for each
// (row, unit) adds the input projection and the recurrent product, draws the i/f noise
// (or reads the explicit noise), applies tau and the activations, and writes the gates,
// c_t and h_t (and h_n, c_n for rows whose last step it is).
//
// Noise: Philox4x32-10 from the device's default CUDA generator. The host reserves
// 4 words per subsequence per step for the whole sequence at once through
// philox_cuda_state, as ATen's fused dropout does, so torch.manual_seed controls the
// draws and CUDA graph capture works; the kernel unpacks the state on the device.
// Under torch.distributed the Python side passes a per-rank seed instead (offset 0).
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/PhiloxUtils.cuh>

#include <mutex>
#include <tuple>

#include "g2lstm_cuda_launch.cuh"
#include "g2lstm_sequence.h"

namespace g2lstm {
namespace {

template <typename scalar_t, typename acc_t, bool HARD, NoiseKind NOISE, int VEC>
__global__ void __launch_bounds__(cuda_launch::kThreads)
    forward_step_kernel(const ForwardStep<scalar_t, acc_t> step, const at::PhiloxCudaState philox,
                        const int64_t threads) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= threads) {
    return;
  }
  uint64_t seed = 0, offset = 0;
  if (NOISE == NoiseKind::kPhilox) {
    const auto seeds = at::cuda::philox::unpack(philox);
    seed = std::get<0>(seeds);
    offset = std::get<1>(seeds);
  }
  forward_step_thread<scalar_t, acc_t, HARD, NOISE, VEC>(index, step, seed, offset);
}

struct CudaForwardLaunch {
  using Guard = cuda_launch::Guard;
  using Philox = at::PhiloxCudaState;

  static void check_device(const at::Tensor& t, const char* name) {
    cuda_launch::check_device(t, name);
  }

  // Reserve `words` draws per subsequence from the default generator of like's device.
  static Philox reserve_philox(const at::Tensor& like, uint64_t words) {
    auto* gen = at::check_generator<at::CUDAGeneratorImpl>(
        at::cuda::detail::getDefaultCUDAGenerator(like.device().index()));
    // See ATen's Note [Acquire lock when using random generators].
    std::lock_guard<std::mutex> lock(gen->mutex_);
    return gen->philox_cuda_state(words);
  }

  static Philox fixed_philox(uint64_t seed) { return Philox(seed, 0); }

  template <typename scalar_t, typename acc_t, bool HARD, NoiseKind NOISE, int VEC>
  static void forward(const ForwardStep<scalar_t, acc_t>& step, int64_t threads, const Philox& philox) {
    if (threads == 0) {
      return;
    }
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    forward_step_kernel<scalar_t, acc_t, HARD, NOISE, VEC>
        <<<cuda_launch::grid_for(threads), cuda_launch::kThreads, 0, stream>>>(step, philox, threads);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace

std::vector<at::Tensor> sequence_forward(const at::Tensor& x_proj, const at::Tensor& w_hh,
                                         const at::Tensor& h0, const at::Tensor& c0,
                                         const std::vector<int64_t>& batch_sizes, double inv_tau,
                                         double noise_prob, double eps, bool hard,
                                         const std::optional<at::Tensor>& noise,
                                         std::optional<int64_t> seed, bool poison) {
  return detail::sequence_forward<CudaForwardLaunch>(x_proj, w_hh, h0, c0, batch_sizes, inv_tau,
                                                     noise_prob, eps, hard, noise, seed, poison);
}

std::vector<at::Tensor> cell_forward(const at::Tensor& preact, const at::Tensor& c_prev,
                                     double inv_tau, double noise_prob, double eps, bool hard,
                                     const std::optional<at::Tensor>& noise,
                                     std::optional<int64_t> seed, bool poison) {
  return detail::cell_forward<CudaForwardLaunch>(preact, c_prev, inv_tau, noise_prob, eps, hard,
                                                 noise, seed, poison);
}

}  // namespace g2lstm
