"""The compression math of the paper's Table 4 (section 4; see docs/paper.md), on one gate block matrix.

Every method is split into an *encode* step that turns a block ``W [m,n]`` into what a
packed checkpoint stores, and a *decode* step that turns that back into the compressed
block. The compressed weights are always the decode of the encode, whether or not the
checkpoint is packed, so that expanding a packed checkpoint gives bit-identical weights.

- round:       ``q = round(W / r)`` (int64 codes), decoded as ``q * r``;
- round-clip:  ``q = round(clip(W, -c, c) / r)``, decoded the same way;
- svd:         the top-k singular triplets, ``U_k S_k [m,k]`` and ``V_k^T [k,n]``, stored in
               the weight's dtype and decoded as their product.

Rounding works in float64 and casts the decoded value to the weight's dtype once, so a
code ``q`` always decodes to the float nearest ``q * r``. ``torch.round`` rounds halves to
even. The low-rank product is accumulated in float64 one rank-1 term at a time: the
product of two float32 numbers is exact in float64 and the additions happen in a fixed
order, so the decode is the same on every machine and thread count (a BLAS matmul
need not be).
"""
import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

METHODS = ("round", "round-clip", "svd")
# The parameters each method takes; giving another one is an error.
METHOD_PARAMS = {"round": ("step",), "round-clip": ("step", "clip"), "svd": ("rank",)}
SCOPES = ("recurrent", "all")

# The paper's translation setting (section 4): values in {0, +-0.5, +-1}; k = 32 and 16.
PAPER_STEP = 0.5
PAPER_CLIP = 1.0
PAPER_RANKS = (32, 16)


class CompressionError(ValueError):
    """A compression request that cannot be carried out; ``str()`` is one line."""


@dataclass(frozen=True)
class CompressionConfig:
    """What to compress and how.

    method: ``round``, ``round-clip`` or ``svd``.
    step:   r of round and round-clip (> 0).
    clip:   c of round-clip (> 0).
    rank:   k of svd (>= 1; at most the smaller dimension of every block, checked
            against the model by :func:`~fairseq_g2lstm.compress.blocks.check_rank`).
    scope:  ``recurrent`` (hidden-to-gate and input-feeding weights, the paper's
            translation setting) or ``all`` (also the input-to-gate weights).

    Each method takes exactly its own parameters; anything else is an error, so that a
    signature never names a number that played no part.
    """

    method: str
    step: Optional[float] = None
    clip: Optional[float] = None
    rank: Optional[int] = None
    scope: str = "recurrent"

    def __post_init__(self):
        if self.method not in METHODS:
            raise CompressionError(f"--method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.scope not in SCOPES:
            raise CompressionError(f"--scope must be one of {', '.join(SCOPES)}; got {self.scope!r}")
        for name in ("step", "clip", "rank"):
            value = getattr(self, name)
            if name in METHOD_PARAMS[self.method] and value is None:
                raise CompressionError(f"--method {self.method} needs --{name}")
            if name not in METHOD_PARAMS[self.method] and value is not None:
                users = " and ".join(m for m in METHODS if name in METHOD_PARAMS[m])
                raise CompressionError(f"--{name} applies to --method {users} only, not {self.method}")
        for name in ("step", "clip"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise CompressionError(f"--{name} must be a positive number; got {value:g}")
        if self.rank is not None and (isinstance(self.rank, bool) or int(self.rank) != self.rank or self.rank < 1):
            raise CompressionError(f"--rank must be a whole number of at least 1; got {self.rank}")

    @classmethod
    def paper(cls, method: str, scope: str = "recurrent", rank: Optional[int] = None) -> "CompressionConfig":
        """The paper's translation setting of ``method`` (r 0.5, c 1.0; svd needs ``rank``)."""
        if method == "svd":
            return cls("svd", rank=rank, scope=scope)
        return cls(method, step=PAPER_STEP, clip=PAPER_CLIP if method == "round-clip" else None, scope=scope)

    @property
    def rounds(self) -> bool:
        return self.method in ("round", "round-clip")

    def describe(self) -> str:
        """A short human label: ``round-clip (r=0.5, c=1)``, ``svd (k=32)``."""
        if self.method == "svd":
            return f"svd (k={self.rank})"
        if self.method == "round":
            return f"round (r={self.step:g})"
        return f"round-clip (r={self.step:g}, c={self.clip:g})"

    def signature(self, source: Optional[str] = None) -> str:
        """sacreBLEU-style: ``method=round-clip|step=0.5|clip=1.0|scope=recurrent|src=NAME@SHA8``."""
        fields = [f"method={self.method}"]
        for name in ("step", "clip", "rank"):
            value = getattr(self, name)
            if value is not None:
                fields.append(f"{name}={value}")
        fields.append(f"scope={self.scope}")
        if source is not None:
            fields.append(f"src={source}")
        return "|".join(fields)

    def clip_note(self) -> Optional[str]:
        """A warning when round-clip's c is not a multiple of r: values then reach past +-c
        by less than r / 2 (clipping comes first, as in the paper)."""
        if self.method != "round-clip":
            return None
        ratio = self.clip / self.step
        if abs(ratio - round(ratio)) <= 1e-9 * max(1.0, ratio):
            return None
        reach = self.step * round(ratio)
        return (f"--clip {self.clip:g} is not a multiple of --step {self.step:g}: "
                f"rounded values reach +-{reach:g}")

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


# --- rounding ------------------------------------------------------------------------
MAX_CODE = 2**52
"""The largest code magnitude accepted. Codes are int64, but their range (max - min) must
also fit in int64 for bit packing, and every code up to 2^53 is exact in the float64
that decoding multiplies; 2^52 keeps both with room to spare. A step that needs more is
far below any weight's precision and would otherwise wrap around silently."""


def round_codes(weight: Tensor, step: float, clip: Optional[float] = None) -> Tensor:
    """weight [m,n] -> int64 codes [m,n], ``round(clip(weight, -c, c) / step)``.

    Raises :class:`CompressionError` when a code would exceed :data:`MAX_CODE`."""
    x = weight.to(torch.float64)
    if clip is not None:
        x = x.clamp(-clip, clip)
    scaled = torch.round(x / step)
    largest = float(scaled.abs().max()) if scaled.numel() else 0.0
    if not largest <= MAX_CODE:  # also catches inf and nan
        biggest = float(x.abs().max())
        raise CompressionError(f"--step {step:g} is too small for weights up to {biggest:g}: the codes would reach "
                               f"{largest:.3g}, beyond the 2^52 that are stored exactly; use --step "
                               f"{biggest / MAX_CODE:.3g} or more")
    return scaled.to(torch.int64)


def dequantize(codes: Tensor, step: float, dtype: torch.dtype) -> Tensor:
    """int codes [m,n] -> ``codes * step`` in ``dtype`` (computed in float64, cast once)."""
    return (codes.to(torch.float64) * float(step)).to(dtype)


def code_bits(codes: Tensor) -> Tuple[int, int]:
    """(bits per code, offset): the codes minus ``offset`` fit in ``bits`` unsigned bits."""
    low, high = int(codes.min()), int(codes.max())
    return max(1, (high - low).bit_length()), low


def pack_bits(codes: Tensor) -> Tuple[Tensor, int, int]:
    """int codes (any shape) -> (uint8 bitstream, bits, offset), little-endian.

    Each code minus ``offset`` takes ``bits`` bits (5 levels take 3 bits, not 8): the
    stream is ``ceil(numel * bits / 8)`` bytes.
    """
    bits, offset = code_bits(codes)
    unsigned = (codes.reshape(-1).to(torch.int64) - offset).unsqueeze(1)  # [N,1]
    stream = ((unsigned >> torch.arange(bits)) & 1).reshape(-1)  # [N*bits]
    pad = (-stream.numel()) % 8
    if pad:
        stream = torch.cat([stream, stream.new_zeros(pad)])
    packed = (stream.view(-1, 8) << torch.arange(8)).sum(1).to(torch.uint8)
    return packed, bits, offset


def unpack_bits(packed: Tensor, bits: int, offset: int, count: int) -> Tensor:
    """The inverse of :func:`pack_bits`: ``count`` int64 codes."""
    stream = ((packed.to(torch.int64).unsqueeze(1) >> torch.arange(8)) & 1).reshape(-1)
    unsigned = (stream[: count * bits].view(count, bits) << torch.arange(bits)).sum(1)
    return unsigned + offset


# --- low rank ------------------------------------------------------------------------
def svd_factors(weight: Tensor, rank: int) -> Tuple[Tensor, Tensor]:
    """weight [m,n] -> (``U_k S_k`` [m,k], ``V_k^T`` [k,n]) in the weight's dtype: the
    best rank-k approximation (Eckart-Young), from a float64 SVD."""
    if rank > min(weight.shape):
        raise CompressionError(f"rank {rank} exceeds the {weight.shape[0]} x {weight.shape[1]} matrix")
    u, s, vh = torch.linalg.svd(weight.to(torch.float64), full_matrices=False)
    return (u[:, :rank] * s[:rank]).to(weight.dtype), vh[:rank].to(weight.dtype)


def low_rank_product(left: Tensor, right: Tensor, dtype: torch.dtype) -> Tensor:
    """left [m,k] @ right [k,n] in ``dtype``, accumulated in float64 in a fixed order
    (one exact rank-1 term at a time), so it is reproducible bit for bit."""
    left, right = left.to(torch.float64), right.to(torch.float64)
    out = torch.zeros(left.shape[0], right.shape[1], dtype=torch.float64)
    for j in range(left.shape[1]):
        out.add_(torch.outer(left[:, j], right[j]))
    return out.to(dtype)


def relative_error(original: Tensor, compressed: Tensor) -> float:
    """``||compressed - original||_F / ||original||_F`` (0 for an all-zero original)."""
    original = original.to(torch.float64)
    norm = torch.linalg.norm(original).item()
    diff = torch.linalg.norm(compressed.to(torch.float64) - original).item()
    return diff / norm if norm > 0 else diff
