"""Int8 inference on CPU: ``--quantize int8`` (a model flag, so also
``--model-overrides "{'quantize': 'int8'}"`` and an exported model's saved args).

The quantization is torchao's (``torchao.quantization``), applied to a trained model
right after its weights are loaded (:func:`quantize_on_load`, the models' load hook:
:mod:`fairseq_g2lstm.models.loading`, which also holds the flag's values and refuses to
train a quantized model). What ``int8`` does to each kind of weight:

* every ``nn.Linear`` (attention, encoder-to-decoder bridges, output projections):
  torchao's dynamic int8 (``Int8DynamicActivationInt8WeightConfig``: int8 weights,
  one scale per output row; activations quantized per token at every call). The
  weights are stored as int8 and the products run on int8 data.
* the recurrent layers' gate weights (``weight_ih*`` / ``weight_hh*`` of
  :class:`~fairseq_g2lstm.rnn.G2LSTM` and :class:`~fairseq_g2lstm.rnn.CellStack`):
  rounded to the same per-row int8 grid (torchao's ``Int8Tensor``) and kept as the
  float values of that grid. torchao's quantized weights dispatch through
  ``F.linear`` only, while the recurrent loops multiply by pre-transposed weights
  with ``addmm`` (and the eval path may hand them to torch's fused LSTM kernel);
  rounding keeps every such path working and gives the model exactly the weights an
  int8 deployment holds, so translation quality is measured as it will be. (The same
  holds for the Luong attention's key projection, which is applied with ``matmul``.)
  Biases, embeddings and the gate math stay in float32.

Whether int8 pays off depends on the CPU and the sizes: ``benchmarks/quantize.py``
measures it against float32 (docs/performance.md).

There is no 4-bit option: torchao 0.18's 4-bit weight-only layouts
(``Int4WeightOnlyConfig``) have no CPU implementation, and its CPU-capable
``IntxWeightOnlyConfig(torch.int4)`` keeps each 4-bit value in a byte and
dequantizes at every product, so it saves neither memory nor time.
"""
from typing import Iterator, Set, Tuple

import torch
from torch import Tensor, nn

from .models.attention import LuongAttention
from .models.loading import check_quantize
from .rnn import CellStack, G2LSTM

RECURRENT_WEIGHT_PREFIXES = ("weight_ih", "weight_hh")


def rounded_weights(model: nn.Module) -> Iterator[Tuple[str, nn.Parameter]]:
    """The weights that are rounded to int8 values rather than stored as int8: the gate
    weight matrices of every recurrent layer (G2LSTM, CellStack), and the Luong
    attention's ``input_proj``, whose weight is multiplied directly (``matmul``), not
    through ``F.linear``."""
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, (G2LSTM, CellStack)):
            for name, param in module.named_parameters(recurse=False):
                if name.startswith(RECURRENT_WEIGHT_PREFIXES):
                    yield prefix + name, param
        elif isinstance(module, LuongAttention):
            yield prefix + "input_proj.weight", module.input_proj.weight


def stored_as_int8(module: nn.Module, name: str, rounded: Set[str]) -> bool:
    """torchao's filter: a plain ``nn.Linear`` whose weight is not in ``rounded``."""
    return type(module) is nn.Linear and f"{name}.weight" not in rounded


def round_to_int8_rows(weight: Tensor) -> Tensor:
    """weight [N,K] -> the float values of its int8 quantization, one scale per row
    (symmetric, as torchao's dynamic int8 stores a linear weight)."""
    from torchao.quantization import Int8Tensor, PerRow

    return Int8Tensor.from_hp(weight.detach(), granularity=PerRow()).dequantize()


def quantize_model(model: nn.Module, method: str) -> nn.Module:
    """Quantize a trained ``model`` in place for CPU inference; returns it.

    ``method``: one of :data:`~fairseq_g2lstm.models.loading.QUANTIZE_CHOICES` (``none``
    leaves the model as it is).
    """
    check_quantize(method)
    if method == "none":
        return model
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    rounded = set()
    with torch.no_grad():
        for name, weight in rounded_weights(model):
            weight.copy_(round_to_int8_rows(weight))
            rounded.add(name)
    quantize_(model, Int8DynamicActivationInt8WeightConfig(),
              filter_fn=lambda module, name: stored_as_int8(module, name, rounded))
    return model


def quantize_on_load(model: nn.Module) -> nn.Module:
    """The load hook (:data:`~fairseq_g2lstm.models.loading.LOADED_MODEL_HOOKS`): quantize a
    g2lstm model by its own ``--quantize``, once its weights are loaded."""
    return quantize_model(model, model.quantize)
