"""Compress a g2lstm state dict or checkpoint, and report what was done.

:func:`compress_state_dict` is the state-dict level (tests and the sweep call it);
:func:`compress_checkpoint` reads a checkpoint file, compresses it, records what was
done in it (``state["compression"]``) and writes a new checkpoint that fairseq's CLIs
and the hub load unchanged. Only the blocks of
:func:`~fairseq_g2lstm.compress.blocks.find_gate_blocks` change; every other tensor
(and every other row and column of a compressed weight) is kept bit for bit.
"""
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from g2lstm_runtime.folder import file_sha256

from ..checkpoints.io import PathLike, check_output, load_checkpoint, save_checkpoint
from .blocks import GateBlock, blocks_by_param, check_rank, find_gate_blocks
from .methods import CompressionConfig, CompressionError, code_bits, relative_error, round_codes, svd_factors
from .packing import EncodedBlock, expanded, pack_weight, packed_params

TOOL = "g2lstm-compress"
SHA_PREFIX = 8  # hex digits of the source's sha256 in a signature


@dataclass
class BlockReport:
    """What happened to one gate block."""

    param: str
    gate: str
    kind: str
    rows: Tuple[int, int]
    cols: Tuple[int, int]
    shape: Tuple[int, int]
    relative_error: float  # ||W' - W||_F / ||W||_F
    distinct_values: Optional[int]  # round methods
    bits: int  # what the compressed block takes packed: its codes or SVD factors, or float_bits if those are not smaller
    float_bits: int  # the block stored in its dtype (float32: 32 per value)
    parameters: int  # stored numbers: m n for codes or floats, k (m + n) for svd factors
    dtype: str = "float32"
    encoding: str = "codes"  # how --pack stores it: "codes", "factors", or "float" when those would not be smaller
    encoded_bits: int = 0  # what the codes or factors alone would take

    def where(self) -> str:
        return f"{self.gate} rows {self.rows[0]}:{self.rows[1]}, cols {self.cols[0]}:{self.cols[1]}"


@dataclass
class CompressionSummary:
    """The record of one compression: the settings, the source, every block, the sizes.

    ``to_dict()`` is what :func:`compress_checkpoint` stores in the output checkpoint
    (as ``state["compression"]``) and what the sweep writes to its JSON.
    """

    config: CompressionConfig
    signature: str
    source: Optional[str] = None
    source_sha256: Optional[str] = None
    output: Optional[str] = None
    packed: bool = False
    blocks: List[BlockReport] = field(default_factory=list)
    distinct_values: Optional[List[float]] = None  # round methods: all values of the blocks
    model_bytes_before: int = 0  # the tensors of the model state dict
    model_bytes_after: int = 0
    input_file_bytes: Optional[int] = None
    output_file_bytes: Optional[int] = None
    dropped: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def bits(self) -> int:
        return sum(b.bits for b in self.blocks)

    @property
    def float_bits(self) -> int:
        return sum(b.float_bits for b in self.blocks)

    def to_dict(self) -> Dict[str, Any]:
        """Plain Python values only (safe for ``torch.load(weights_only=True)`` and JSON)."""
        fields = asdict(self)
        del fields["config"]
        fields["blocks"] = [{**asdict(b), "rows": list(b.rows), "cols": list(b.cols), "shape": list(b.shape)}
                            for b in self.blocks]
        return {"tool": TOOL, **self.config.to_dict(), **fields,
                "gate_block_bits": self.bits, "gate_block_float_bits": self.float_bits}

    def format(self) -> str:
        """The summary the command line prints."""
        cfg = self.config
        lines = [f"{TOOL}: {cfg.describe()} of the input/forget-gate blocks, scope {cfg.scope}"]
        if self.source:
            size = f", {self.input_file_bytes:,} bytes" if self.input_file_bytes is not None else ""
            lines.append(f"source: {self.source} (sha256 {self.source_sha256[:16]}...{size})")
        head = ("tensor", "block", "kind", "shape", "rel.err", "distinct", "stored")
        rows = [head]
        for b in self.blocks:
            if b.encoding == "float":
                stored = f"{b.dtype} (the {b.encoded_bits:,}-bit {'codes' if cfg.rounds else 'factors'} are not smaller)"
            elif cfg.rounds:
                stored = f"{b.bits // (b.shape[0] * b.shape[1])} bits/value"
            else:
                stored = f"{b.parameters:,} of {b.shape[0] * b.shape[1]:,} values"
            rows.append((b.param, b.where(), b.kind, f"{b.shape[0]}x{b.shape[1]}", f"{b.relative_error:.4f}",
                         "-" if b.distinct_values is None else str(b.distinct_values), stored))
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        for row in rows:
            lines.append("  " + "  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                                          for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
        values = sum(b.shape[0] * b.shape[1] for b in self.blocks)
        ratio = self.float_bits / self.bits if self.bits else float("inf")
        need = (f"{self.bits:,} bits" if cfg.rounds
                else f"{sum(b.parameters for b in self.blocks):,} values ({self.bits:,} bits)")
        dtype = self.blocks[0].dtype if self.blocks else "float32"
        smaller = f"{ratio:.1f}x smaller" if self.bits < self.float_bits else "no smaller"
        lines.append(f"gate blocks: {len(self.blocks)} blocks, {values:,} values; compressed they need {need}, "
                     f"as {dtype} {self.float_bits:,} bits ({smaller})")
        floats = sum(b.encoding == "float" for b in self.blocks)
        if floats:
            lines.append(f"note: {floats} of {len(self.blocks)} blocks stay {dtype} in a packed checkpoint: "
                         f"their {'codes' if cfg.rounds else 'factors'} would take at least as many bits")
        if self.distinct_values is not None:
            shown = ", ".join(f"{v:g}" for v in self.distinct_values[:12])
            more = f", ... ({len(self.distinct_values)} in all)" if len(self.distinct_values) > 12 else ""
            lines.append(f"distinct values after rounding: {len(self.distinct_values)} ({shown}{more})")
        for note in self.notes:
            lines.append(f"note: {note}")
        if self.output:
            how = ("packed (the model expands it on load)" if self.packed
                   else "not packed (float weights; --pack stores codes/factors)")
            size = f", {self.output_file_bytes:,} bytes" if self.output_file_bytes is not None else ""
            lines.append(f"output: {self.output} ({how}{size})")
            lines.append(f"model tensors: {self.model_bytes_before:,} -> {self.model_bytes_after:,} bytes")
        if self.dropped:
            lines.append(f"dropped: {', '.join(self.dropped)} (a compressed checkpoint is for inference)")
        lines.append(self.signature)
        return "\n".join(lines)


def tensor_bytes(state: Mapping[str, Tensor]) -> int:
    """Bytes of the distinct storages of the tensors in ``state`` (tied tensors once)."""
    seen, total = set(), 0
    for value in state.values():
        storage = value.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def source_tag(path: PathLike, sha256: str) -> str:
    """``checkpoint_best.pt@1a2b3c4d``: the signature's ``src`` field."""
    return f"{Path(path).name}@{sha256[:SHA_PREFIX]}"


def _encode(block: GateBlock, original: Tensor, config: CompressionConfig) -> EncodedBlock:
    if config.rounds:
        return EncodedBlock(block, codes=round_codes(original, config.step, config.clip))
    return EncodedBlock(block, factors=svd_factors(original, config.rank))


def compress_state_dict(
    state: Mapping[str, Tensor], config: CompressionConfig, pack: bool = False
) -> Tuple["OrderedDict[str, Tensor]", CompressionSummary]:
    """Compress the i/f gate blocks of a g2lstm model's state dict.

    Returns a new state dict (the input is not modified; untouched tensors are the same
    objects) and a summary without file details. With ``pack``, each compressed weight
    is stored as in :mod:`.packing`; otherwise it is a float tensor of its usual shape.
    A state dict that is already packed is expanded first.
    """
    if packed_params(state):
        state = expanded(state)
    blocks = find_gate_blocks(state, config.scope)
    if config.method == "svd":
        check_rank(blocks, config.rank)
    grouped = blocks_by_param(blocks)
    summary = CompressionSummary(config=config, signature=config.signature(), packed=pack)
    note = config.clip_note()
    if note:
        summary.notes.append(note)
    values = set()
    out: "OrderedDict[str, Tensor]" = OrderedDict()
    for name, weight in state.items():
        if name not in grouped:
            out[name] = weight
            continue
        compressed = weight.clone()
        encoded = []
        for block in grouped[name]:
            original = weight[block.rows, block.cols]
            item = _encode(block, original, config)
            new = item.decode(config.step, weight.dtype)
            compressed[block.rows, block.cols] = new
            report = _report(block, original, new, item, weight.dtype)
            if report.encoding != "float":  # a block whose codes are no smaller stays in P.g2pack.rest
                encoded.append(item)
            summary.blocks.append(report)
            if item.codes is not None:
                values.update(new.unique().tolist())
        if pack and encoded:
            out.update(pack_weight(name, compressed, encoded, config.step))
        else:
            out[name] = compressed
    if config.rounds:
        summary.distinct_values = sorted(values)
        if summary.distinct_values == [0.0]:
            summary.notes.append(f"every compressed value is 0: all these weights are within +-{config.step / 2:g} "
                                 f"(half the step); a smaller --step keeps some of them")
    summary.model_bytes_before = tensor_bytes(state)
    summary.model_bytes_after = tensor_bytes(out)
    return out, summary


def _report(block: GateBlock, original: Tensor, new: Tensor, item: EncodedBlock, dtype: torch.dtype) -> BlockReport:
    """The block's record; its ``encoding`` is "float" when the codes (wider than the
    dtype) or the factors (rank k with k (m + n) >= m n) would not be smaller than the
    block's own floats, which is then how a packed checkpoint stores it."""
    width = torch.finfo(dtype).bits
    rows, cols = block.shape
    float_bits = width * rows * cols
    if item.codes is not None:
        bits_each, _ = code_bits(item.codes)
        encoding, bits, parameters, distinct = "codes", bits_each * rows * cols, rows * cols, int(new.unique().numel())
    else:
        parameters = item.factors[0].numel() + item.factors[1].numel()
        encoding, bits, distinct = "factors", width * parameters, None
    encoded_bits = bits
    if bits >= float_bits:
        encoding, bits, parameters = "float", float_bits, rows * cols
    return BlockReport(block.param, block.gate, block.kind, (block.row_start, block.row_end),
                       (block.col_start, block.col_end), block.shape, relative_error(original, new), distinct,
                       bits, float_bits, parameters, str(dtype).replace("torch.", ""), encoding, encoded_bits)


def compress_checkpoint(
    source: PathLike, output: PathLike, config: CompressionConfig, pack: bool = False, force: bool = False
) -> CompressionSummary:
    """Read the g2lstm checkpoint ``source``, compress it and write ``output``.

    The output is the source checkpoint with the compressed model, without optimizer
    state (``last_optimizer_state`` is None: the file is for inference, and sizes then
    compare fairly), and with ``compression``: :meth:`CompressionSummary.to_dict`
    (method, step, clip, rank, scope, the source's path and sha256, every block).
    An input that was itself compressed keeps that record as ``compression["previous"]``.

    Raises :class:`~fairseq_g2lstm.checkpoints.io.CheckpointError` (missing, unreadable
    or non-g2lstm source; existing output without ``force``) or
    :class:`~fairseq_g2lstm.compress.methods.CompressionError` (a rank larger than a
    block, a step whose codes would overflow, ``output`` being ``source``) before
    anything is written; the write itself is atomic.
    """
    check_output(output, force)
    if Path(output).exists() and Path(source).exists() and os.path.samefile(source, output):
        raise CompressionError(f"{output} is the input checkpoint; write the compressed model to another file")
    state = load_checkpoint(source)
    sha256 = file_sha256(source)
    model, summary = compress_state_dict(state["model"], config, pack)
    summary.signature = config.signature(source_tag(source, sha256))
    summary.source, summary.source_sha256 = str(source), sha256
    summary.output, summary.input_file_bytes = str(output), os.path.getsize(source)
    summary.dropped = [key for key in ("last_optimizer_state",) if state.get(key) is not None]
    record = summary.to_dict()
    if state.get("compression") is not None:
        record["previous"] = state["compression"]
    new_state = dict(state)
    new_state.update(model=model, last_optimizer_state=None, compression=record)
    save_checkpoint(new_state, output, force=force)
    summary.output_file_bytes = os.path.getsize(output)
    return summary
