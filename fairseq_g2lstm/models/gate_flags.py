"""The gate flags and gate metrics that every g2lstm fairseq model shares.

The translation model (:mod:`.g2lstm`) and the language model (:mod:`.g2lstm_lm`) take
the same ``--gate-*`` flags with the same defaults and checks, and log the same gate
saturation metrics; both import them from here.
"""
import argparse
import logging
import os
import sys

import torch
from fairseq.logging import metrics

from ..gates import GATE_EVAL_MODES, GATE_MODES, GateConfig, check_noise_prob, check_temperature
from ..rnn import GateTallies

GATE_KERNELS = ("auto", "cuda", "torch")
# Log-line position of the gate metrics: after fairseq's loss and ppl (priority 10),
# before its throughput figures (wps and later, 100 and up).
GATE_METRICS_PRIORITY = 50

logger = logging.getLogger(__name__)


def flag_type(check, name):
    """An argparse type that reports a value out of range as one usage error."""

    def parse(text):
        try:
            return check(float(text))
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err) if "--" in str(err) else f"{name}: not a number: {text!r}")

    return parse


def gate_kernel_flag(text: str) -> str:
    """The type of ``--gate-kernel``: ``cuda`` typed on a machine without CUDA stops the
    command while its arguments are parsed, with one ``PROG: error:`` line, instead of a
    traceback at the first forward pass (fairseq's parser would add its usage block to an
    ``ArgumentTypeError``, hence the exit here)."""
    if text == "cuda" and not torch.cuda.is_available():
        prog = os.path.basename(sys.argv[0]) or "fairseq"
        print(f"{prog}: error: --gate-kernel cuda: CUDA is not available on this machine "
              "(torch.cuda.is_available() is False); use --gate-kernel torch or auto", file=sys.stderr)
        sys.exit(2)
    return text


def add_gate_args(parser) -> None:
    """``--gate-mode``, ``--gate-temperature``, ``--gate-noise-prob``, ``--gate-eval``,
    ``--gate-kernel`` and ``--no-gate-metrics``."""
    # fmt: off
    add = parser.add_argument
    add("--gate-mode", choices=GATE_MODES,
        help="gumbel: G2 gates; plain: a standard LSTM; sharpened: sigmoid(a/tau) baseline")
    add("--gate-temperature", type=flag_type(check_temperature, "--gate-temperature"), metavar="TAU",
        help="tau for the input/forget gates (default 0.9 gumbel, 0.2 sharpened)")
    add("--gate-noise-prob", type=flag_type(check_noise_prob, "--gate-noise-prob"), metavar="P",
        help="probability that an input/forget gate element gets logistic noise (default 0.2)")
    add("--gate-eval", choices=GATE_EVAL_MODES,
        help="inference gates: soft sigmoid(a), or hard 1[a >= 0] for input/forget")
    add("--gate-kernel", choices=GATE_KERNELS, type=gate_kernel_flag,
        help="auto: the CUDA kernel on GPU where validated, else the torch loop")
    add("--no-gate-metrics", action="store_true",
        help="do not log the input/forget gate saturation (gate_i_lo, ...) in training and validation")
    # fmt: on


def gate_arch_defaults(args) -> None:
    """The defaults of the gate flags, for an architecture function."""
    args.gate_mode = getattr(args, "gate_mode", "gumbel")
    args.gate_temperature = getattr(args, "gate_temperature", None)
    args.gate_noise_prob = getattr(args, "gate_noise_prob", 0.2)
    args.gate_eval = getattr(args, "gate_eval", "soft")
    args.gate_kernel = getattr(args, "gate_kernel", "auto")
    args.no_gate_metrics = getattr(args, "no_gate_metrics", False)


def usable_gate_kernel(args) -> str:
    """``args.gate_kernel``, or ``torch`` where the saved ``cuda`` cannot run.

    A checkpoint trained with ``--gate-kernel cuda`` stores the flag; loaded by
    fairseq-generate, the hub or ``g2lstm-gates`` on a machine without CUDA, or run with
    ``--cpu``, it falls back to the torch path (the same math) with a logged note
    instead of failing at the first forward pass. Typing ``--gate-kernel cuda`` on such
    a machine is refused earlier, by :func:`gate_kernel_flag`.
    """
    kernel = getattr(args, "gate_kernel", "auto")
    if kernel == "cuda" and (getattr(args, "cpu", False) or not torch.cuda.is_available()):
        why = "CUDA is not available" if not torch.cuda.is_available() else "--cpu"
        logger.warning(f"the model was configured with --gate-kernel cuda, but {why}: "
                       "using the torch path (the same gates), as --gate-kernel torch")
        return "torch"
    return kernel


def gate_config_from_args(args) -> GateConfig:
    """The :class:`GateConfig` of the flags. Also replaces a ``gate_kernel`` that cannot
    run here by ``torch`` (:func:`usable_gate_kernel`): the models call this before they
    read ``args.gate_kernel``."""
    args.gate_kernel = usable_gate_kernel(args)
    return GateConfig(mode=args.gate_mode, temperature=args.gate_temperature,
                      noise_prob=args.gate_noise_prob, eval_mode=args.gate_eval)


def log_gate_metrics(tallies: GateTallies) -> None:
    """The share of input (i) and forget (f) gate values below 0.1 and above 0.9, and their
    mean, over every LSTM layer of the batch: ``gate_i_lo``, ``gate_i_hi``, ``gate_i_mean``
    and the same for ``f``. They appear in the train and valid log lines and in TensorBoard.

    Weighted by the number of gate values, so an epoch's figure is over all its values.
    Each rank logs its own batches (fairseq reduces only the criterion's outputs across
    ranks); the gates' shares are the same quantity on every rank.
    """
    for gate, tally in tallies.per_gate().items():
        if not tally.count:
            continue
        for suffix, value in (("lo", tally.below), ("hi", tally.above), ("mean", tally.total)):
            metrics.log_scalar(f"gate_{gate[0]}_{suffix}", value / tally.count, tally.count,
                               priority=GATE_METRICS_PRIORITY, round=3)
