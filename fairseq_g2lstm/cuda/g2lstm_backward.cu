// Backward of the fused G2-LSTM kernel on CUDA: one pointwise kernel per step, in a
// reverse loop (g2lstm_sequence.h), each followed by the recurrent product
// dL/dh_{t-1} = grad_preact_t W_hh through torch (cuBLAS); after the loop, dW_hh is one
// product over all steps. The noise is never needed again: the i/f gate derivative is
// s (1 - s) / tau from the saved gate s (docs/paper.md, section 2).
#include "g2lstm_cuda_launch.cuh"
#include "g2lstm_sequence.h"

namespace g2lstm {
namespace {

template <typename scalar_t, typename acc_t, bool HARD, int VEC>
__global__ void __launch_bounds__(cuda_launch::kThreads)
    backward_step_kernel(const BackwardStep<scalar_t, acc_t> step, const int64_t threads) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= threads) {
    return;
  }
  backward_step_thread<scalar_t, acc_t, HARD, VEC>(index, step);
}

struct CudaBackwardLaunch {
  using Guard = cuda_launch::Guard;

  static void check_device(const at::Tensor& t, const char* name) {
    cuda_launch::check_device(t, name);
  }

  template <typename scalar_t, typename acc_t, bool HARD, int VEC>
  static void backward(const BackwardStep<scalar_t, acc_t>& step, int64_t threads) {
    if (threads == 0) {
      return;
    }
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    backward_step_kernel<scalar_t, acc_t, HARD, VEC>
        <<<cuda_launch::grid_for(threads), cuda_launch::kThreads, 0, stream>>>(step, threads);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace

std::vector<at::Tensor> sequence_backward(const at::Tensor& grad_out, const at::Tensor& grad_h_n,
                                          const at::Tensor& grad_c_n, const at::Tensor& w_hh,
                                          const at::Tensor& hs, const at::Tensor& cs,
                                          const at::Tensor& gates,
                                          const std::vector<int64_t>& batch_sizes, double inv_tau,
                                          bool hard, bool poison) {
  return detail::sequence_backward<CudaBackwardLaunch>(grad_out, grad_h_n, grad_c_n, w_hh, hs, cs,
                                                       gates, batch_sizes, inv_tau, hard, poison);
}

std::vector<at::Tensor> cell_backward(const at::Tensor& grad_h, const at::Tensor& grad_c,
                                      const at::Tensor& gates, const at::Tensor& c_prev,
                                      const at::Tensor& c, double inv_tau, bool hard, bool poison) {
  return detail::cell_backward<CudaBackwardLaunch>(grad_h, grad_c, gates, c_prev, c, inv_tau, hard,
                                                   poison);
}

}  // namespace g2lstm
