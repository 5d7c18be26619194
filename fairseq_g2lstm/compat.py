"""Make fairseq's checkpoints load under torch >= 2.6.

torch 2.6 turned ``torch.load``'s ``weights_only`` on by default, and fairseq calls it
without the flag. A fairseq checkpoint pickles its training arguments as an
``argparse.Namespace``, which the safe unpickler refuses ("Unsupported global:
GLOBAL argparse.Namespace"). Allow-listing that one class is enough: everything else
in a checkpoint is tensors, dicts, lists and numbers. Importing the plugin does it,
and fairseq imports ``--user-dir`` modules before it loads any checkpoint.
"""
import argparse

import torch


def allow_fairseq_checkpoints() -> None:
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:  # torch < 2.4 loads everything anyway
        add_safe_globals([argparse.Namespace])
