"""CellStack: stacked G2-LSTM cells advanced one time step at a time.

An attention decoder with input feeding cannot run a layer over all steps at once:
step t's first-layer input holds the attention output of step t-1. The stack is the
decoder's recurrence; the attention and the vocabulary projection stay in the model.

The first layer's input is ``[x_t ; feed_t]`` (``nn.LSTMCell`` column order, as in
fairseq's ``lstm``). ``x_t`` is known for every step in advance (teacher forcing, or the
current token when generating), so its share of the projection is one matrix product
for all steps (:meth:`CellStack.project_inputs`); a step only adds the feed and
recurrent products.

:meth:`CellStack.stepper` picks the step for one forward pass. At inference with soft
gates, when no one reads the gates, each layer is exactly a standard LSTM cell (the
sharpened temperature folded into the weights), so a step is torch's own LSTM cell
(:meth:`CellStack.native_step`): the whole cell in one call, without Python per op.
Generation runs one forward per step, so the folded weights are made once and kept
(:meth:`CellStack.native_weights`) until the weights change or the stack trains.
"""
import math
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, _VF, nn

from ..cuda import cuda_cell_step
from ..gates import NUM_GATES, NUM_NOISY_GATES, GateConfig, GateSpec, prescale_weight, sample_gate_noise
from .cell import cell_step, fused_cell_step
from .sequence import native_kernel_applies

StepWeights = List[Tuple[Optional[Tensor], Tensor, Optional[Tensor]]]
CellWeights = List[Tuple[Tensor, Tensor, Tensor, Tensor]]
Stepper = Callable[[int, Optional[Tensor], List[Tensor], List[Tensor]],
                   Tuple[List[Tensor], List[Tensor], Optional[List[Tensor]]]]


class CellStack(nn.Module):
    """L stacked LSTM cells of H units.

    Args:
        input_size: E, the part of the first layer's input known in advance.
        hidden_size: H.
        num_layers: L.
        feed_size: F, the part fed back step by step (0: none).
        dropout: dropout on each layer's output before the next layer (non-recurrent).
        gate: the gate flags.
        kernel: ``reference`` for the plain autograd step (tests); anything else uses the
            fused step with a hand-written backward.

    Parameters use ``nn.LSTMCell``'s names per layer: ``weight_ih_l{k}`` [4H, in_k],
    ``weight_hh_l{k}`` [4H, H], ``bias_ih_l{k}`` and ``bias_hh_l{k}`` [4H].
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, feed_size: int = 0,
                 dropout: float = 0.0, gate: GateConfig = GateConfig(), kernel: str = "auto"):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.feed_size, self.dropout, self.gate, self.kernel = feed_size, dropout, gate, kernel
        self._folded: Optional[Tuple[tuple, CellWeights]] = None  # (key, weights): see native_weights
        h4 = NUM_GATES * hidden_size
        for layer in range(num_layers):
            layer_input = input_size + feed_size if layer == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(h4, layer_input)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(h4, hidden_size)))
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(h4)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(h4)))
        self.reset_parameters()

    def reset_parameters(self):
        """``nn.LSTMCell``'s initialisation: uniform in +-1/sqrt(H)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def layer_params(self, layer: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        return tuple(getattr(self, f"{kind}_l{layer}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"feed_size={self.feed_size}, dropout={self.dropout}, gate={self.gate}")

    def project_inputs(self, x: Tensor) -> Tensor:
        """x [T,B,E] -> the first layer's input share with both biases, [T,B,4H]."""
        w_ih, _, b_ih, b_hh = self.layer_params(0)
        return F.linear(x, w_ih[:, : self.input_size], b_ih + b_hh)

    def step_weights(self) -> StepWeights:
        """Per layer ``(w_in^T, w_hh^T, bias)``: layer 0's ``w_in`` is its feed columns
        (None without feed) and its biases are in :meth:`project_inputs`. Computed once
        per forward so that steps do not re-slice and re-transpose the weights."""
        weights: StepWeights = []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.layer_params(layer)
            if layer == 0:
                w_feed = w_ih[:, self.input_size:].t() if self.feed_size else None
                weights.append((w_feed, w_hh.t(), None))
            else:
                weights.append((w_ih.t(), w_hh.t(), b_ih + b_hh))
        return weights

    def sample_noise(self, steps: int, batch: int, spec: GateSpec, like: Tensor) -> Optional[Tensor]:
        """Fresh i/f noise for every step and layer, [T,L,B,2H], or None when ``spec`` has none."""
        if not spec.noisy:
            return None
        shape = (steps, self.num_layers, batch, NUM_NOISY_GATES * self.hidden_size)
        return sample_gate_noise(shape, spec.noise_prob, device=like.device, dtype=like.dtype)

    def step(
        self,
        x_proj: Tensor,
        feed: Optional[Tensor],
        hiddens: List[Tensor],
        cells: List[Tensor],
        weights: StepWeights,
        spec: GateSpec,
        noise: Optional[Tensor] = None,
    ) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """Advance every layer by one step.

        x_proj: [B,4H] this step's row of :meth:`project_inputs`;  feed: [B,F] or None;
        hiddens, cells: L tensors [B,H];  noise: [L,B,2H] or None.
        Returns the new hiddens and cells (L tensors [B,H] each; the top hidden is the
        output) and each layer's activated gates (L tensors [B,4H], no gradient).
        """
        step = cell_step if self.kernel == "reference" else (cuda_cell_step(self.kernel, x_proj) or fused_cell_step)
        new_h, new_c, gates = [], [], []
        inp = None
        for layer, (w_in_t, w_hh_t, bias) in enumerate(weights):
            if layer == 0:
                preact = x_proj if w_in_t is None else torch.addmm(x_proj, feed, w_in_t)
            else:
                preact = torch.addmm(bias, inp, w_in_t)
            preact = torch.addmm(preact, hiddens[layer], w_hh_t)
            h, c, g = step(preact, cells[layer], spec, None if noise is None else noise[layer])
            new_h.append(h)
            new_c.append(c)
            gates.append(g)
            inp = F.dropout(h, self.dropout, self.training) if self.dropout > 0 else h
        return new_h, new_c, gates

    def uses_native_cell(self, spec: GateSpec, gates_unobserved: bool) -> bool:
        """Whether a forward with ``spec`` steps through torch's LSTM cell: eval mode,
        soft gates without noise, the ``auto`` or ``torch`` kernel, dense weights, gates
        unobserved."""
        return native_kernel_applies(self, spec, gates_unobserved)

    def native_weights(self, spec: GateSpec) -> CellWeights:
        """Per layer ``(w_ih, w_hh, b_ih, b_hh)`` with the temperature folded in
        (:func:`prescale_weight`). A sharpened model's fold copies every weight, so the
        result is kept while the parameters are the same tensors at the same version
        (an in-place update, ``load_state_dict`` or a new tensor changes the key) and
        while no gradient is recorded; :meth:`train` drops it."""
        params = list(self.parameters())
        key = (spec.inv_temperature, tuple((id(p), p.data_ptr(), p._version) for p in params))
        if self._folded is not None and self._folded[0] == key:
            return self._folded[1]
        weights = [tuple(prescale_weight(w, spec) for w in self.layer_params(layer)) for layer in range(self.num_layers)]
        keep = spec.inv_temperature != 1.0 and not (torch.is_grad_enabled() and any(p.requires_grad for p in params))
        self._folded = (key, weights) if keep else None
        return weights

    def train(self, mode: bool = True):
        self._folded = None
        return super().train(mode)

    def native_step(self, x: Tensor, feed: Optional[Tensor], hiddens: List[Tensor], cells: List[Tensor],
                    weights: CellWeights) -> Tuple[List[Tensor], List[Tensor]]:
        """One step of every layer through torch's LSTM cell, without gates.

        x: [B,E] this step's input;  feed: [B,F] or None;  hiddens, cells: L tensors [B,H];
        weights: per layer ``(w_ih, w_hh, b_ih, b_hh)``, prescaled for the gate spec.
        Returns the new hiddens and cells.
        """
        inp = x if feed is None else torch.cat((x, feed), dim=1)  # [B,E+F], nn.LSTMCell's column order
        new_h, new_c = [], []
        for layer, params in enumerate(weights):
            h, c = _VF.lstm_cell(inp, (hiddens[layer], cells[layer]), *params)
            new_h.append(h)
            new_c.append(c)
            inp = F.dropout(h, self.dropout, self.training) if self.dropout > 0 else h
        return new_h, new_c

    def stepper(self, x: Tensor, spec: GateSpec, gates_unobserved: bool) -> Stepper:
        """The step function of one forward pass over x [T,B,E].

        Returns ``step(t, feed, hiddens, cells) -> (hiddens, cells, gates)`` (see
        :meth:`step`; ``gates`` is None on the native path). What a pass shares is done
        here once: the input projection, the weights' layout and the noise of all steps.
        """
        if self.uses_native_cell(spec, gates_unobserved):
            weights = self.native_weights(spec)
            inputs = x.unbind(0)

            def native(t, feed, hiddens, cells):
                return (*self.native_step(inputs[t], feed, hiddens, cells, weights), None)

            return native
        x_proj = self.project_inputs(x).unbind(0)  # T x [B,4H]; unbind, not x_proj[t]: one backward node
        weights = self.step_weights()
        noise = self.sample_noise(x.shape[0], x.shape[1], spec, x)

        def fused(t, feed, hiddens, cells):
            return self.step(x_proj[t], feed, hiddens, cells, weights, spec, None if noise is None else noise[t])

        return fused
