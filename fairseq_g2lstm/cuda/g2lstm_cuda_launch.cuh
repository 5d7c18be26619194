// What the CUDA forward and backward files share: the device guard, the device check and
// the launch shape. Each step's threads cover B * H / VEC (row, unit-vector) pairs.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace g2lstm {
namespace cuda_launch {

// Threads per block: 8 warps, enough loads in flight per SM for a memory-bound step.
constexpr int kThreads = 256;

inline dim3 grid_for(int64_t threads) {
  return dim3(static_cast<unsigned int>((threads + kThreads - 1) / kThreads));
}

struct Guard {
  explicit Guard(const at::Tensor& t) : guard(t.device()) {}
  c10::cuda::CUDAGuard guard;
};

inline void check_device(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "g2lstm CUDA kernel: ", name, " must be a CUDA tensor; got ", t.device());
}

}  // namespace cuda_launch
}  // namespace g2lstm
