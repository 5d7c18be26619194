"""G2LSTM: a multi-layer, optionally bidirectional LSTM with G2 gates.

It mirrors ``torch.nn.LSTM`` (sequence-first, same parameter names and layouts, the
same ``[layers * directions, B, H]`` state layout), so ``load_state_dict`` moves weights
between the two; in plain mode it computes what ``nn.LSTM`` computes. Two additions:

* ``lengths``: padding-aware. Inputs are right-padded; a sentence's outputs and final
  state do not depend on the padding around it.
* per-layer bidirectionality (``bidirectional=[True, False]``): the paper's encoder has
  a bidirectional first layer under unidirectional ones.

Dropout applies between layers only (non-recurrent connections), as in ``nn.LSTM``.
``weight_drop`` adds AWD-LSTM's DropConnect on the recurrent weights (off by default).

Inference fast path: in eval mode with soft gates (every mode but ``--gate-eval hard``)
a G2 layer is a standard LSTM (sharpened gates with their temperature folded into the
weights), so unless a caller asks for the gates (``gate_recorder``) or passes its own
noise, each direction runs through torch's fused LSTM kernel
(:func:`~fairseq_g2lstm.rnn.sequence.sequence_native`). ``kernel="reference"`` and
``kernel="cuda"`` keep their own paths.
"""
import math
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import cuda as cuda_kernel
from ..gates import NUM_GATES, NUM_NOISY_GATES, GateConfig, GateSpec, sample_gate_noise
from .sequence import native_kernel_applies, sequence_fused, sequence_native, sequence_reference

KERNELS = ("auto", "cuda", "torch", "reference")

GateRecorder = Callable[[int, int, Tensor, Tensor], None]
"""``(layer, direction, gates [T,B,4H], lengths [B]) -> None``: see :meth:`G2LSTM.forward`."""


def check_weight_drop(value: float) -> float:
    """The DropConnect probability of :class:`G2LSTM` (``--weight-drop``): in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"--weight-drop must be in [0, 1); got {value}")
    return value


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's first ``lengths[b]`` steps; padding stays in place.

    x: [T,B,C]; lengths: [B]. Applying it twice gives ``x`` back.
    """
    steps = x.shape[0]
    lengths = lengths.to(x.device)
    if bool((lengths == steps).all()):
        return x.flip(0)
    t = torch.arange(steps, device=x.device).unsqueeze(1)  # [T,1]
    index = torch.where(t < lengths, lengths - 1 - t, t)  # [T,B]
    return x.gather(0, index.unsqueeze(2).expand_as(x))


class G2LSTM(nn.Module):
    """Multi-layer LSTM with G2 gates.

    Args:
        input_size: features of the input, I.
        hidden_size: units per direction, H.
        num_layers: stacked layers, L.
        bidirectional: ``True``/``False`` for every layer, or one bool per layer.
        dropout: dropout on each layer's output except the last.
        gate: the gate flags (mode, temperature, noise probability, eval).
        weight_drop: DropConnect on the recurrent weights (AWD-LSTM, Merity et al. 2018):
            in training, each forward zeroes every element of each ``weight_hh`` with
            this probability and scales the rest by ``1/(1-p)``; one mask per weight
            and forward, shared by all time steps; eval uses the plain weights. 0: off.
        kernel: ``auto`` (the CUDA kernel on CUDA tensors, else the fused torch loop),
            ``cuda``, ``torch`` or ``reference`` (the plain autograd loop, for tests).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: Union[bool, Sequence[bool]] = False,
        dropout: float = 0.0,
        gate: GateConfig = GateConfig(),
        kernel: str = "auto",
        weight_drop: float = 0.0,
    ):
        super().__init__()
        check_weight_drop(weight_drop)
        if isinstance(bidirectional, bool):
            bidirectional = [bidirectional] * num_layers
        if len(bidirectional) != num_layers:
            raise ValueError(f"bidirectional has {len(bidirectional)} entries for {num_layers} layers")
        if kernel not in KERNELS:
            raise ValueError(f"--gate-kernel must be one of {', '.join(KERNELS[:3])}; got {kernel!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = list(bidirectional)
        self.dropout = dropout
        self.weight_drop = weight_drop
        self.gate = gate
        self.kernel = kernel
        self._param_names: List[Tuple[str, str, str, str]] = []
        layer_input = input_size
        for layer, bidir in enumerate(self.bidirectional):
            for suffix in ("", "_reverse")[: 1 + bidir]:
                names = tuple(f"{kind}_l{layer}{suffix}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                shapes = ((NUM_GATES * hidden_size, layer_input), (NUM_GATES * hidden_size, hidden_size),
                          (NUM_GATES * hidden_size,), (NUM_GATES * hidden_size,))
                for name, shape in zip(names, shapes):
                    self.register_parameter(name, nn.Parameter(torch.empty(shape)))
                self._param_names.append(names)
            layer_input = hidden_size * (1 + bidir)
        self.reset_parameters()

    def reset_parameters(self):
        """``nn.LSTM``'s initialisation: uniform in +-1/sqrt(H)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @property
    def output_size(self) -> int:
        return self.hidden_size * (1 + self.bidirectional[-1])

    @property
    def num_directions(self) -> List[int]:
        return [1 + b for b in self.bidirectional]

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, dropout={self.dropout}, gate={self.gate}"
                + (f", weight_drop={self.weight_drop}" if self.weight_drop else ""))

    # --- interop with torch.nn.LSTM -------------------------------------------------
    @classmethod
    def from_native(cls, lstm: nn.LSTM, gate: GateConfig = GateConfig(), **kwargs) -> "G2LSTM":
        """A G2LSTM holding a copy of ``lstm``'s weights."""
        if lstm.batch_first or lstm.proj_size or not lstm.bias:
            raise ValueError("only seq-first nn.LSTM with biases and no projection converts")
        model = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bidirectional,
                    lstm.dropout, gate, **kwargs)
        model.load_state_dict(lstm.state_dict())
        return model.to(next(lstm.parameters()).device)

    def to_native(self) -> nn.LSTM:
        """An ``nn.LSTM`` with a copy of these weights (uniform bidirectionality only)."""
        if len(set(self.bidirectional)) != 1:
            raise ValueError("nn.LSTM has one bidirectional flag for all layers")
        lstm = nn.LSTM(self.input_size, self.hidden_size, self.num_layers,
                       dropout=self.dropout, bidirectional=self.bidirectional[0])
        lstm.load_state_dict(self.state_dict())
        return lstm.to(self.weight_ih_l0.device)

    # --- forward ----------------------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        lengths: Optional[Tensor] = None,
        state: Optional[Tuple[Tensor, Tensor]] = None,
        noise: Optional[Sequence[Optional[Tensor]]] = None,
        gate_recorder: Optional[GateRecorder] = None,
    ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        """
        x:       [T,B,I], right-padded.
        lengths: [B] real steps per row (None: all T).
        state:   (h0, c0), each [D_total,B,H] with D_total = sum of directions over layers.
        noise:   optional explicit i/f noise, one [T,B,2H] tensor per (layer, direction)
                 in parameter order; a debug hook that lets two paths see the same draws.
        gate_recorder: called as ``gate_recorder(layer, direction, gates, lengths)`` for
                 every (layer, direction) with its activated gates [T,B,4H] (zero at
                 padding, in the input's row and time order, no gradient) and lengths [B].
        Returns out [T,B,H*D_last] (zero at padding) and (h_n, c_n), each [D_total,B,H].
        """
        steps, batch, _ = x.shape
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long)
        lengths = lengths.cpu()
        native = self.uses_native_kernel(noise is None and gate_recorder is None)
        order = None
        if self.kernel != "reference" and bool((lengths[:-1] < lengths[1:]).any()):
            order = torch.sort(lengths, descending=True, stable=True).indices
            x, lengths = x.index_select(1, order.to(x.device)), lengths[order]
            if state is not None:
                state = tuple(s.index_select(1, order.to(s.device)) for s in state)
            if noise is not None:
                noise = [n.index_select(1, order.to(n.device)) for n in noise]
        out, h_n, c_n, gates = self._forward_sorted(x, lengths, state, noise, native)
        if order is not None:
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(batch)
            lengths = lengths[inverse]
            inverse = inverse.to(x.device)
            out, h_n, c_n = out.index_select(1, inverse), h_n.index_select(1, inverse), c_n.index_select(1, inverse)
            gates = [g.index_select(1, inverse) for g in gates] if gate_recorder is not None else gates
        if gate_recorder is not None:
            k = 0
            for layer, dirs in enumerate(self.num_directions):
                for direction in range(dirs):
                    g = gates[k] if direction == 0 else reverse_padded(gates[k], lengths)
                    gate_recorder(layer, direction, g, lengths)
                    k += 1
        return out, (h_n, c_n)

    def uses_native_kernel(self, gates_unobserved: bool = True) -> bool:
        """Whether a forward runs through torch's fused LSTM kernel (module docstring):
        eval mode, soft gates, the ``auto`` or ``torch`` kernel, dense weights, and
        ``gates_unobserved`` (no gate recorder, no explicit noise)."""
        return native_kernel_applies(self, self.gate.resolve(self.training), gates_unobserved)

    def _forward_sorted(self, x, lengths, state, noise, native: bool):
        steps, batch, _ = x.shape
        spec = self.gate.resolve(self.training)
        run = None if native else self._sequence_runner(x)
        total_dirs = len(self._param_names)
        if state is None:
            zeros = x.new_zeros(total_dirs, batch, self.hidden_size)
            state = (zeros, zeros)
        # A runner that draws its own noise (the CUDA kernel) gets only explicit noise.
        draws_own = noise is None and getattr(run, "draws_noise", False)
        h_n, c_n, gates, k = [], [], [], 0
        for layer, dirs in enumerate(self.num_directions):
            outs = []
            for direction in range(dirs):
                w_ih, w_hh, b_ih, b_hh = (getattr(self, n) for n in self._param_names[k])
                inp = x if direction == 0 else reverse_padded(x, lengths)
                if native:
                    out, h, c = sequence_native(inp, (w_ih, w_hh, b_ih, b_hh), state[0][k], state[1][k],
                                                lengths, spec)
                    g = None
                else:
                    w_hh = self._drop_connect(w_hh)
                    x_proj = F.linear(inp, w_ih, b_ih + b_hh)  # [T,B,4H], one product for all steps
                    eps = None if draws_own else self._noise(noise, k, spec, steps, batch, x)
                    out, h, c, g = run(x_proj, w_hh, state[0][k], state[1][k], lengths, spec, eps)
                outs.append(out if direction == 0 else reverse_padded(out, lengths))
                h_n.append(h)
                c_n.append(c)
                gates.append(g)
                k += 1
            x = outs[0] if dirs == 1 else torch.cat(outs, dim=2)
            if self.dropout > 0 and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, self.training)
        return x, torch.stack(h_n), torch.stack(c_n), gates

    def _drop_connect(self, w_hh: Tensor) -> Tensor:
        """w_hh [4H,H] with DropConnect in training (one fresh mask per call), else itself.
        Autograd carries the gradient through the mask to the parameter."""
        if not (self.training and self.weight_drop > 0):
            return w_hh
        return F.dropout(w_hh, self.weight_drop, training=True)

    def _noise(self, noise, k: int, spec: GateSpec, steps: int, batch: int, like: Tensor) -> Optional[Tensor]:
        if noise is not None:
            return noise[k]
        if not spec.noisy:
            return None
        shape = (steps, batch, NUM_NOISY_GATES * self.hidden_size)
        return sample_gate_noise(shape, spec.noise_prob, device=like.device, dtype=like.dtype)

    def _sequence_runner(self, x: Tensor):
        if self.kernel == "reference":
            return sequence_reference
        if self.kernel == "cuda" or (self.kernel == "auto" and x.is_cuda):
            runner = cuda_kernel.cuda_sequence_runner(required=self.kernel == "cuda")
            if runner is not None:
                return runner
        return sequence_fused
