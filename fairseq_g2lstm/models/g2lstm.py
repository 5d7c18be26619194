"""The ``g2lstm`` fairseq model: an attention encoder-decoder of G2-LSTMs.

Read top to bottom: the model (flags, build), the encoder, the decoder, the factory
helpers, then the architectures. This file is glue: fairseq types and flags in, calls
into :mod:`fairseq_g2lstm.rnn` and :mod:`.attention` out. The gate math is in
:mod:`fairseq_g2lstm.gates`.

Encoder output (``encoder_out``), a dict of lists as in fairseq's transformer:

* ``encoder_out``: [S,B,C] top-layer outputs, in the padding layout of ``src_tokens``,
  stored batch-major (``.transpose(0, 1)`` is contiguous), so that attention reads
  them as [B,S,C] without a copy at every generation step.
* ``encoder_padding_mask``: [B,S] True at padding.
* ``final_hiddens`` / ``final_cells``: one [B,C_l] tensor per encoder layer, the last
  state of each layer (both directions concatenated for a bidirectional layer).
* ``source_index``: [B] the row of the encoded batch that each row holds. Beam search
  repeats each sentence's row and then permutes beams at every step; rows of one source
  are equal, so a permutation that keeps each row's source changes nothing and the
  encoder output (and the attention keys the decoder caches) are not copied
  (:func:`keeps_sources`).
"""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from fairseq import utils
from fairseq.models import (
    FairseqEncoder,
    FairseqEncoderDecoderModel,
    FairseqIncrementalDecoder,
    register_model,
    register_model_architecture,
)
from fairseq.modules import FairseqDropout
from torch import Tensor, nn

from ..gates import GateConfig
from ..rnn import CellStack, G2LSTM, GateTallies
from .attention import ATTENTION_TYPES, build_attention
from .gate_flags import add_gate_args, gate_arch_defaults, gate_config_from_args, log_gate_metrics
from .loading import HookedLoading, add_quantize_arg, quantize_from_args

DEFAULT_MAX_POSITIONS = int(1e5)
# fairseq's lstm initialises every weight uniformly in +-0.1; so do we, for comparable runs.
INIT_RANGE = 0.1
BIDIRECTIONAL_CHOICES = ("first", "all", "none")


@register_model("g2lstm")
class G2LSTMModel(HookedLoading, FairseqEncoderDecoderModel):
    """G2-LSTM attention encoder-decoder (Li et al., ICML 2018). Loading (packed weights,
    ``--quantize``, model folders) goes through :class:`~.loading.HookedLoading`."""

    @staticmethod
    def add_args(parser):
        # fmt: off
        add = parser.add_argument
        add("--dropout", type=float, metavar="D", help="dropout probability")
        add("--encoder-embed-dim", type=int, metavar="N", help="encoder embedding dimension")
        add("--encoder-embed-path", type=str, metavar="STR", help="path to pre-trained encoder embedding")
        add("--encoder-freeze-embed", action="store_true", help="freeze encoder embeddings")
        add("--encoder-hidden-size", type=int, metavar="N", help="encoder hidden size (per direction)")
        add("--encoder-layers", type=int, metavar="N", help="number of encoder layers")
        add("--encoder-bidirectional", choices=BIDIRECTIONAL_CHOICES,
            help="which encoder layers are bidirectional (the paper: first)")
        add("--encoder-dropout-in", type=float, metavar="D", help="dropout on encoder input embeddings")
        add("--encoder-dropout-out", type=float, metavar="D", help="dropout on encoder layer outputs")
        add("--decoder-embed-dim", type=int, metavar="N", help="decoder embedding dimension")
        add("--decoder-embed-path", type=str, metavar="STR", help="path to pre-trained decoder embedding")
        add("--decoder-freeze-embed", action="store_true", help="freeze decoder embeddings")
        add("--decoder-hidden-size", type=int, metavar="N", help="decoder hidden size")
        add("--decoder-layers", type=int, metavar="N", help="number of decoder layers")
        add("--decoder-out-embed-dim", type=int, metavar="N", help="decoder output embedding dimension")
        add("--decoder-dropout-in", type=float, metavar="D", help="dropout on decoder input embeddings")
        add("--decoder-dropout-out", type=float, metavar="D", help="dropout on decoder layer outputs")
        add("--attention-type", choices=ATTENTION_TYPES,
            help="bahdanau: additive MLP score (the paper); luong: 'general' score (fairseq's lstm)")
        add("--share-decoder-input-output-embed", action="store_true",
            help="share decoder input and output embeddings")
        add("--share-all-embeddings", action="store_true",
            help="share encoder, decoder and output embeddings (requires a joined dictionary)")
        # fmt: on
        add_quantize_arg(parser)
        add_gate_args(parser)

    @classmethod
    def build_model(cls, args, task):
        base_architecture(args)
        quantize = quantize_from_args(args)
        if args.encoder_layers != args.decoder_layers:
            raise ValueError("--encoder-layers must match --decoder-layers (each decoder layer starts "
                             "from the matching encoder layer's final state)")
        gate = gate_config_from_args(args)
        encoder_embed = build_embedding(args.encoder_embed_path, task.source_dictionary, args.encoder_embed_dim)
        if args.share_all_embeddings:
            if task.source_dictionary != task.target_dictionary:
                raise ValueError("--share-all-embeddings requires a joined dictionary")
            if args.encoder_embed_dim != args.decoder_embed_dim:
                raise ValueError("--share-all-embeddings requires --encoder-embed-dim to match --decoder-embed-dim")
            decoder_embed = encoder_embed
            args.share_decoder_input_output_embed = True
        else:
            decoder_embed = build_embedding(args.decoder_embed_path, task.target_dictionary, args.decoder_embed_dim)
        if args.share_decoder_input_output_embed and args.decoder_embed_dim != args.decoder_out_embed_dim:
            raise ValueError("--share-decoder-input-output-embed requires --decoder-embed-dim to match "
                             "--decoder-out-embed-dim")
        if args.encoder_freeze_embed:
            encoder_embed.weight.requires_grad = False
        if args.decoder_freeze_embed:
            decoder_embed.weight.requires_grad = False

        num_layers = args.encoder_layers
        bidirectional = {"first": [True] + [False] * (num_layers - 1),
                         "all": [True] * num_layers, "none": [False] * num_layers}[args.encoder_bidirectional]
        encoder = G2LSTMEncoder(
            task.source_dictionary, encoder_embed, args.encoder_hidden_size, num_layers, bidirectional,
            args.encoder_dropout_in, args.encoder_dropout_out, gate, args.gate_kernel,
            left_pad=getattr(args, "left_pad_source", True),
            max_positions=getattr(args, "max_source_positions", DEFAULT_MAX_POSITIONS),
        )
        decoder = G2LSTMDecoder(
            task.target_dictionary, decoder_embed, args.decoder_hidden_size, args.decoder_layers,
            args.decoder_out_embed_dim, args.decoder_dropout_in, args.decoder_dropout_out,
            encoder.output_units, encoder.final_state_sizes, args.attention_type, gate, args.gate_kernel,
            share_input_output_embed=args.share_decoder_input_output_embed,
            max_positions=getattr(args, "max_target_positions", DEFAULT_MAX_POSITIONS),
        )
        return cls(encoder, decoder, log_gate_metrics=not args.no_gate_metrics, quantize=quantize)

    def __init__(self, encoder, decoder, log_gate_metrics: bool = True, quantize: str = "none"):
        super().__init__(encoder, decoder)
        self.log_gate_metrics = log_gate_metrics
        self.quantize = quantize

    def forward(self, src_tokens, src_lengths, prev_output_tokens, gate_stats=None, **kwargs):
        """Teacher-forced forward (training, validation, scoring).

        gate_stats: an object with ``recorder(prefix)`` (e.g.
        :class:`~fairseq_g2lstm.rnn.GateTallies`) that receives every LSTM layer's
        gates of this pass. Without one, the gate saturation is logged as fairseq metrics
        unless ``--no-gate-metrics`` (see :func:`log_gate_metrics`).
        """
        log = gate_stats is None and self.log_gate_metrics
        if log:
            gate_stats = GateTallies()
        encoder_out = self.encoder(src_tokens, src_lengths, gate_stats=gate_stats)
        out = self.decoder(prev_output_tokens, encoder_out=encoder_out, gate_stats=gate_stats, **kwargs)
        if log:
            log_gate_metrics(gate_stats)
        return out


def move_padding(x: Tensor, lengths: Tensor, to_left: bool) -> Tensor:
    """Move padding between the two ends of the time axis.

    x [S,B,C]; lengths [B]. ``to_left``: right-padded -> left-padded, else the reverse.
    A right-padded row reads ``right[t] = left[t + S - len]``, a left-padded one
    ``left[t] = right[t + len - S]``; both wrap modulo S onto the padding.
    """
    steps = x.shape[0]
    shift = lengths.to(x.device) if to_left else steps - lengths.to(x.device)
    index = (torch.arange(steps, device=x.device).unsqueeze(1) + shift) % steps  # [S,B]
    return x.gather(0, index.unsqueeze(2).expand_as(x))


class G2LSTMEncoder(FairseqEncoder):
    """Embeddings, then a :class:`G2LSTM` (the paper: first layer bidirectional)."""

    def __init__(self, dictionary, embed_tokens, hidden_size, num_layers, bidirectional: List[bool],
                 dropout_in, dropout_out, gate: GateConfig, kernel="auto", left_pad=True,
                 max_positions=DEFAULT_MAX_POSITIONS):
        super().__init__(dictionary)
        self.embed_tokens = embed_tokens
        self.padding_idx = embed_tokens.padding_idx
        self.dropout_in_module = FairseqDropout(dropout_in, module_name=self.__class__.__name__)
        self.dropout_out_module = FairseqDropout(dropout_out, module_name=self.__class__.__name__)
        self.lstm = G2LSTM(embed_tokens.embedding_dim, hidden_size, num_layers, bidirectional,
                           dropout=dropout_out, gate=gate, kernel=kernel)
        init_uniform(self.lstm)
        self.left_pad = left_pad
        self.max_source_positions = max_positions
        self.output_units = self.lstm.output_size
        self.final_state_sizes = [hidden_size * d for d in self.lstm.num_directions]

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, gate_stats=None, **kwargs):
        """src_tokens [B,S], src_lengths [B] -> the dict described in the module docstring.
        gate_stats: see :meth:`G2LSTMModel.forward`; layers are named ``encoder.<layer>``."""
        padding_mask = src_tokens.eq(self.padding_idx)  # [B,S]
        lengths = (~padding_mask).sum(1)
        x = self.dropout_in_module(self.embed_tokens(src_tokens)).transpose(0, 1)  # [S,B,E]
        if self.left_pad:
            x = move_padding(x, lengths, to_left=False)
        recorder = None if gate_stats is None else gate_stats.recorder("encoder")
        out, (h_n, c_n) = self.lstm(x, lengths, gate_recorder=recorder)
        out = self.dropout_out_module(out)
        if self.left_pad:
            out = move_padding(out, lengths, to_left=True)
        return {
            "encoder_out": [out.transpose(0, 1).contiguous().transpose(0, 1)],  # stored batch-major
            "encoder_padding_mask": [padding_mask],
            "final_hiddens": self._per_layer(h_n),
            "final_cells": self._per_layer(c_n),
            "source_index": [torch.arange(src_tokens.shape[0], device=src_tokens.device)],
        }

    def _per_layer(self, states: Tensor) -> List[Tensor]:
        """[D_total,B,H] -> one [B,D_l*H] tensor per layer."""
        return [torch.cat(chunk.unbind(0), dim=1) for chunk in states.split(self.lstm.num_directions)]

    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor):
        """Rows in ``new_order``; ``encoder_out`` itself where every row keeps its source."""
        source_index = encoder_out.get("source_index", [None])[0]
        if keeps_sources(source_index, new_order):
            return encoder_out
        reordered = {} if source_index is None else {"source_index": [source_index.index_select(0, new_order)]}
        return {
            **reordered,
            "encoder_out": [encoder_out["encoder_out"][0].transpose(0, 1).index_select(0, new_order).transpose(0, 1)],
            "encoder_padding_mask": [encoder_out["encoder_padding_mask"][0].index_select(0, new_order)],
            "final_hiddens": [h.index_select(0, new_order) for h in encoder_out["final_hiddens"]],
            "final_cells": [c.index_select(0, new_order) for c in encoder_out["final_cells"]],
        }

    def max_positions(self):
        return self.max_source_positions


class G2LSTMDecoder(FairseqIncrementalDecoder):
    """Input-feeding attention decoder over a :class:`CellStack` of G2-LSTM cells.

    Each step: the stack reads ``[embedding; previous attention output]``, the top
    hidden state attends over the encoder, and ``tanh(W [context; hidden])`` is both
    the step's output and the next step's feed (Luong et al., 2015).
    """

    def __init__(self, dictionary, embed_tokens, hidden_size, num_layers, out_embed_dim, dropout_in,
                 dropout_out, encoder_output_units, encoder_state_sizes: List[int], attention_type,
                 gate: GateConfig, kernel="auto", share_input_output_embed=False,
                 max_positions=DEFAULT_MAX_POSITIONS):
        super().__init__(dictionary)
        self.embed_tokens = embed_tokens
        self.hidden_size = hidden_size
        self.dropout_in_module = FairseqDropout(dropout_in, module_name=self.__class__.__name__)
        self.dropout_out_module = FairseqDropout(dropout_out, module_name=self.__class__.__name__)
        self.layers = CellStack(embed_tokens.embedding_dim, hidden_size, num_layers, feed_size=hidden_size,
                                dropout=dropout_out, gate=gate, kernel=kernel)
        init_uniform(self.layers)
        # Each decoder layer starts from the matching encoder layer's final state,
        # projected where the sizes differ (a bidirectional layer is twice as wide).
        self.init_hidden_proj = nn.ModuleList(bridge(size, hidden_size) for size in encoder_state_sizes)
        self.init_cell_proj = nn.ModuleList(bridge(size, hidden_size) for size in encoder_state_sizes)
        self.attention = build_attention(attention_type, hidden_size, encoder_output_units)
        init_uniform(self.attention)
        self.additional_fc = Linear(hidden_size, out_embed_dim) if hidden_size != out_embed_dim else None
        self.share_input_output_embed = share_input_output_embed
        self.fc_out = None if share_input_output_embed else Linear(out_embed_dim, len(dictionary))
        self.max_target_positions = max_positions
        self.need_attn = True

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None, gate_stats=None, **kwargs):
        x, attn = self.extract_features(prev_output_tokens, encoder_out, incremental_state, gate_stats)
        return self.output_layer(x), attn

    def extract_features(self, prev_output_tokens, encoder_out, incremental_state=None, gate_stats=None,
                         **kwargs):
        """prev_output_tokens [B,T] -> (features [B,T,out_embed_dim], attention [B,T,S] or None).

        gate_stats: see :meth:`G2LSTMModel.forward`; layers are named ``decoder.<layer>``.
        Incremental decoding (generation) records nothing."""
        cache = self.get_incremental_state(incremental_state, "cached_state") if incremental_state is not None else None
        if cache is not None:
            prev_output_tokens = prev_output_tokens[:, -1:]
        batch, steps = prev_output_tokens.shape
        x = self.dropout_in_module(self.embed_tokens(prev_output_tokens)).transpose(0, 1)  # [T,B,E]
        hiddens, cells, feed, keys = self._unpack(cache) if cache is not None else self._initial_state(encoder_out, x)
        memory = self.attention.memory(encoder_out["encoder_out"][0], encoder_out["encoder_padding_mask"][0], keys)

        spec = self.layers.gate.resolve(self.training)
        step_gates = [] if gate_stats is not None and incremental_state is None else None
        step = self.layers.stepper(x, spec, gates_unobserved=step_gates is None)
        outs, attns = [], []
        for t in range(steps):
            hiddens, cells, gates = step(t, feed, hiddens, cells)
            out, attn = self.attention(hiddens[-1], memory)
            feed = self.dropout_out_module(out)
            outs.append(feed)
            attns.append(attn)
            if step_gates is not None:
                step_gates.append(gates)
        if step_gates is not None:
            self._record_gates(gate_stats.recorder("decoder"), step_gates, prev_output_tokens)

        if incremental_state is not None:
            cache = {"hiddens": torch.stack(hiddens, dim=1), "cells": torch.stack(cells, dim=1), "feed": feed,
                     "keys": memory["keys"]}
            if "source_index" in encoder_out:
                cache["source_index"] = encoder_out["source_index"][0]
            self.set_incremental_state(incremental_state, "cached_state", cache)
        x = torch.stack(outs, dim=1)  # [B,T,H]
        if self.additional_fc is not None:
            x = self.dropout_out_module(self.additional_fc(x))
        attn = torch.stack(attns, dim=1) if not self.training and self.need_attn else None  # [B,T,S]
        return x, attn

    def _initial_state(self, encoder_out, like: Tensor):
        """Decoder states from the encoder's final states, a zero feed, no attention keys yet."""
        hiddens = [proj(h) for h, proj in zip(encoder_out["final_hiddens"], self.init_hidden_proj)]
        cells = [proj(c) for c, proj in zip(encoder_out["final_cells"], self.init_cell_proj)]
        feed = like.new_zeros(like.shape[1], self.hidden_size)
        return hiddens, cells, feed, None

    def _record_gates(self, recorder, step_gates: List[List[Tensor]], prev_output_tokens: Tensor) -> None:
        """Hand each layer's gates [T,B,4H], zeroed at target padding, to ``recorder``;
        step_gates holds T lists of L tensors [B,4H]."""
        real = prev_output_tokens.ne(self.dictionary.pad()).t()  # [T,B]
        lengths = real.sum(0).cpu()
        for layer in range(self.layers.num_layers):
            gates = torch.stack([step[layer] for step in step_gates])  # [T,B,4H]
            recorder(layer, 0, gates.masked_fill_(~real.unsqueeze(2), 0.0), lengths)

    # Incremental state: one dict of batch-first tensors: hiddens and cells [B,L,H],
    # feed [B,H], the attention keys [B,S,K] and the encoder's source_index [B].
    @staticmethod
    def _unpack(cache):
        return list(cache["hiddens"].unbind(1)), list(cache["cells"].unbind(1)), cache["feed"], cache["keys"]

    def reorder_incremental_state(self, incremental_state, new_order: Tensor):
        cache = self.get_incremental_state(incremental_state, "cached_state")
        if cache is None:
            return
        keep = keeps_sources(cache.get("source_index"), new_order)
        reordered = {k: v if keep and k in PER_SOURCE_STATE else v.index_select(0, new_order) for k, v in cache.items()}
        self.set_incremental_state(incremental_state, "cached_state", reordered)

    def output_layer(self, x: Tensor) -> Tensor:
        if self.share_input_output_embed:
            return F.linear(x, self.embed_tokens.weight)
        return self.fc_out(x)

    def max_positions(self):
        return self.max_target_positions

    def make_generation_fast_(self, need_attn=False, **kwargs):
        self.need_attn = need_attn


# The decoder's cached state that depends on the source sentence only, not on the beam.
PER_SOURCE_STATE = ("keys", "source_index")


def keeps_sources(source_index: Optional[Tensor], new_order: Tensor) -> bool:
    """Whether ``new_order`` [B'] puts in every row a row of the same source, by the
    encoder's ``source_index`` [B] (None: unknown, so no). Rows of one source hold equal
    encoder outputs, so such a reordering changes none of them."""
    if source_index is None or new_order.shape != source_index.shape:
        return False
    return torch.equal(source_index.index_select(0, new_order), source_index)


# --- factory helpers: one place for the initialisation ---------------------------------
def init_uniform(module: nn.Module) -> None:
    for p in module.parameters():
        nn.init.uniform_(p, -INIT_RANGE, INIT_RANGE)


def Embedding(num_embeddings, embedding_dim, padding_idx):
    m = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
    nn.init.uniform_(m.weight, -INIT_RANGE, INIT_RANGE)
    nn.init.zeros_(m.weight[padding_idx])
    return m


def Linear(in_features, out_features, bias=True):
    m = nn.Linear(in_features, out_features, bias=bias)
    init_uniform(m)
    return m


def bridge(in_features: int, out_features: int) -> nn.Module:
    """A projection from an encoder state to a decoder state; identity where sizes match."""
    return nn.Identity() if in_features == out_features else Linear(in_features, out_features)


def build_embedding(path: Optional[str], dictionary, dim: int) -> nn.Embedding:
    embed = Embedding(len(dictionary), dim, dictionary.pad())
    if path:
        embed_dict = utils.parse_embedding(path)
        utils.print_embed_overlap(embed_dict, dictionary)
        utils.load_embedding(embed_dict, dictionary, embed)
    return embed


# --- architectures: defaults only --------------------------------------------------------
@register_model_architecture("g2lstm", "g2lstm")
def base_architecture(args):
    args.dropout = getattr(args, "dropout", 0.1)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 512)
    args.encoder_embed_path = getattr(args, "encoder_embed_path", None)
    args.encoder_freeze_embed = getattr(args, "encoder_freeze_embed", False)
    args.encoder_hidden_size = getattr(args, "encoder_hidden_size", args.encoder_embed_dim)
    args.encoder_layers = getattr(args, "encoder_layers", 1)
    args.encoder_bidirectional = getattr(args, "encoder_bidirectional", "first")
    args.encoder_dropout_in = getattr(args, "encoder_dropout_in", args.dropout)
    args.encoder_dropout_out = getattr(args, "encoder_dropout_out", args.dropout)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 512)
    args.decoder_embed_path = getattr(args, "decoder_embed_path", None)
    args.decoder_freeze_embed = getattr(args, "decoder_freeze_embed", False)
    args.decoder_hidden_size = getattr(args, "decoder_hidden_size", args.decoder_embed_dim)
    args.decoder_layers = getattr(args, "decoder_layers", args.encoder_layers)
    args.decoder_out_embed_dim = getattr(args, "decoder_out_embed_dim", args.decoder_embed_dim)
    args.decoder_dropout_in = getattr(args, "decoder_dropout_in", args.dropout)
    args.decoder_dropout_out = getattr(args, "decoder_dropout_out", args.dropout)
    args.attention_type = getattr(args, "attention_type", "bahdanau")
    args.share_decoder_input_output_embed = getattr(args, "share_decoder_input_output_embed", False)
    args.share_all_embeddings = getattr(args, "share_all_embeddings", False)
    gate_arch_defaults(args)


@register_model_architecture("g2lstm", "g2lstm_iwslt")
def g2lstm_iwslt(args):
    """The paper's IWSLT14 De-En model: 2 + 2 layers, embedding = hidden = 256."""
    args.dropout = getattr(args, "dropout", 0.2)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 256)
    args.encoder_layers = getattr(args, "encoder_layers", 2)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 256)
    base_architecture(args)


@register_model_architecture("g2lstm", "g2lstm_wmt")
def g2lstm_wmt(args):
    """The paper's WMT14 En-De model: 3 + 3 layers, embedding 512, hidden 1024."""
    args.dropout = getattr(args, "dropout", 0.2)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 512)
    args.encoder_hidden_size = getattr(args, "encoder_hidden_size", 1024)
    args.encoder_layers = getattr(args, "encoder_layers", 3)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 512)
    args.decoder_hidden_size = getattr(args, "decoder_hidden_size", 1024)
    base_architecture(args)
