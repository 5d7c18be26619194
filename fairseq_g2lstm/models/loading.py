"""Loading a trained g2lstm model, and the named hooks through which the tools extend it.

fairseq loads a model the same way in fairseq-generate, fairseq-interactive,
fairseq-eval-lm and the hub: it builds the model from the saved arguments, then calls
its ``load_state_dict``, which runs ``upgrade_state_dict_named`` on the weights first;
the hub starts at the model class's ``from_pretrained``. :class:`HookedLoading`, a base
of both g2lstm models, runs at those three places what the rooms above the models
register here by name (the package's ``__init__`` does, when it is imported), so that
the models know nothing of those tools:

* :data:`STATE_DICT_UPGRADES`: ``fn(state_dict, prefix)`` rewrites the weights in place
  before they are loaded (``g2lstm-compress --pack``: packed gate weights are expanded);
* :data:`LOADED_MODEL_HOOKS`: ``fn(model)`` changes the model once its weights are
  loaded (``--quantize``);
* :data:`FOLDER_LOADERS`: ``(recognizes(path), load(path, **overrides))``: in
  ``from_pretrained``, a folder of that kind (a ``g2lstm-export`` model folder) is opened
  by ``load``, where fairseq's loader would want a checkpoint and its data-bin.

``--quantize`` is a model flag (so that ``--model-overrides`` and a model folder's saved
arguments set it): its values and checks are here, what ``int8`` does is
:mod:`fairseq_g2lstm.quantize`'s.
"""
from typing import Any, Callable, Dict, MutableMapping, Tuple

from torch import Tensor, nn

STATE_DICT_UPGRADES: Dict[str, Callable[[MutableMapping[str, Tensor], str], Any]] = {}
LOADED_MODEL_HOOKS: Dict[str, Callable[[nn.Module], Any]] = {}
FOLDER_LOADERS: Dict[str, Tuple[Callable[[Any], bool], Callable[..., Any]]] = {}

QUANTIZE_CHOICES = ("none", "int8")


def check_quantize(value: str) -> str:
    """The ``--quantize`` value, or ValueError with the one-line message the CLIs print."""
    if value not in QUANTIZE_CHOICES:
        raise ValueError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}; got {value!r}")
    return value


def check_not_training(method: str, training: bool) -> None:
    """A quantized model is for inference: quantizing one that is being trained would
    silently train rounded weights (and torchao's int8 weights have no gradient)."""
    if training and method != "none":
        raise ValueError(f"--quantize {method} is for inference (fairseq-generate, fairseq-interactive, "
                         "the hub); train without it and quantize the trained model")


def add_quantize_arg(parser) -> None:
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES,
                        help="inference only: quantize the loaded weights for CPU (int8: torchao's dynamic int8; "
                             "docs/performance.md); also --model-overrides \"{'quantize': 'int8'}\"")


def quantize_from_args(args) -> str:
    """The checked ``--quantize`` of a model's arguments (``none`` where they have none)."""
    return check_quantize(getattr(args, "quantize", None) or "none")


class HookedLoading:
    """The loading of a g2lstm fairseq model, as a base placed before fairseq's model
    class: runs the hooks above, and refuses to train a model built with ``--quantize``
    (fairseq-train calls ``train()`` before its first step). ``quantize``: the model's
    ``--quantize`` value."""

    quantize: str = "none"

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        """Load, then run :data:`LOADED_MODEL_HOOKS` (quantize)."""
        result = super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)
        for hook in LOADED_MODEL_HOOKS.values():
            hook(self)
        return result

    def upgrade_state_dict_named(self, state_dict, name):
        """:data:`STATE_DICT_UPGRADES` (expand packed weights), then fairseq's own upgrades."""
        for upgrade in STATE_DICT_UPGRADES.values():
            upgrade(state_dict, f"{name}." if name else "")
        super().upgrade_state_dict_named(state_dict, name)

    def train(self, mode: bool = True):
        check_not_training(self.quantize, mode)
        return super().train(mode)

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="model.pt", data_name_or_path=".", **kwargs):
        """fairseq's hub loader; a folder that a :data:`FOLDER_LOADERS` entry recognizes (a
        ``g2lstm-export`` model folder) loads from itself alone."""
        for recognizes, load in FOLDER_LOADERS.values():
            if recognizes(model_name_or_path):
                return load(model_name_or_path, **kwargs)
        return super().from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path, **kwargs)
