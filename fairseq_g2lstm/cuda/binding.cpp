// Python binding of the fused G2-LSTM ops (g2lstm.h): the CUDA extension
// (with g2lstm_forward.cu and g2lstm_backward.cu) or, built with
// -DG2LSTM_HOST_EMULATION=1, the host emulation (with host_emulation.cpp).
#include <torch/extension.h>

#include "g2lstm.h"
#include "g2lstm_gates.cuh"

#ifndef G2LSTM_HOST_EMULATION
#define G2LSTM_HOST_EMULATION 0
#endif

namespace {

// The Philox4x32-10 block of (counter, key), from the kernels' own code, for the tests.
std::vector<int64_t> philox4x32_10(int64_t c0, int64_t c1, int64_t c2, int64_t c3, int64_t k0, int64_t k1) {
  const auto w = [](int64_t v) { return static_cast<uint32_t>(v); };
  const g2lstm::U32x4 r = g2lstm::philox4x32_10(g2lstm::U32x4{w(c0), w(c1), w(c2), w(c3)}, w(k0), w(k1));
  return {r.x, r.y, r.z, r.w};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.doc() = "Fused G2-LSTM gate kernel (fairseq_g2lstm.cuda); shapes in g2lstm.h";
  m.attr("backend") = G2LSTM_HOST_EMULATION ? "host-emulation" : "cuda";
  m.def("sequence_forward", &g2lstm::sequence_forward,
        "x_proj [T,B,4H], w_hh [4H,H], h0 [B,H], c0 [B,H], batch_sizes [T] -> "
        "(out [T,B,H], h_n, c_n [B,H], gates [T,B,4H], hs, cs [T+1,B,H])",
        py::arg("x_proj"), py::arg("w_hh"), py::arg("h0"), py::arg("c0"), py::arg("batch_sizes"),
        py::arg("inv_tau"), py::arg("noise_prob"), py::arg("eps"), py::arg("hard"),
        py::arg("noise") = py::none(), py::arg("seed") = py::none(), py::arg("poison") = false);
  m.def("sequence_backward", &g2lstm::sequence_backward,
        "grad_out [T,B,H], grad_h_n, grad_c_n [B,H], w_hh, hs, cs, gates, batch_sizes -> "
        "(grad_x_proj [T,B,4H], grad_w_hh [4H,H], grad_h0, grad_c0 [B,H])",
        py::arg("grad_out"), py::arg("grad_h_n"), py::arg("grad_c_n"), py::arg("w_hh"), py::arg("hs"),
        py::arg("cs"), py::arg("gates"), py::arg("batch_sizes"), py::arg("inv_tau"), py::arg("hard"),
        py::arg("poison") = false);
  m.def("cell_forward", &g2lstm::cell_forward,
        "preact [N,4H], c_prev [N,H] -> (h [N,H], c [N,H], gates [N,4H])", py::arg("preact"),
        py::arg("c_prev"), py::arg("inv_tau"), py::arg("noise_prob"), py::arg("eps"), py::arg("hard"),
        py::arg("noise") = py::none(), py::arg("seed") = py::none(), py::arg("poison") = false);
  m.def("cell_backward", &g2lstm::cell_backward,
        "grad_h, grad_c [N,H], gates [N,4H], c_prev, c [N,H] -> (grad_preact [N,4H], grad_c_prev [N,H])",
        py::arg("grad_h"), py::arg("grad_c"), py::arg("gates"), py::arg("c_prev"), py::arg("c"),
        py::arg("inv_tau"), py::arg("hard"), py::arg("poison") = false);
  m.def("philox4x32_10", &philox4x32_10, "Philox4x32-10 of counter (c0..c3) and key (k0, k1)",
        py::arg("c0"), py::arg("c1"), py::arg("c2"), py::arg("c3"), py::arg("k0"), py::arg("k1"));
}
