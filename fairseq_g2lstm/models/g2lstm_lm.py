"""The ``g2lstm_lm`` fairseq model: a G2-LSTM language model (``--task language_modeling``).

Read top to bottom: the model (flags, build), the decoder, then the architectures. The
network is embeddings -> a unidirectional multi-layer :class:`~fairseq_g2lstm.rnn.G2LSTM`
-> (a projection to ``--decoder-out-embed-dim`` where it differs from the hidden size)
-> the output layer, tied to the input embeddings with
``--share-decoder-input-output-embed``. The paper's language model is AWD-LSTM (docs/paper.md,
section 6); ``g2lstm_lm_ptb`` has its sizes, dropouts and DropConnect on the recurrent
weights (``--weight-drop``). docs/lm.md says which AWD-LSTM parts are here and which not.

The flags are fairseq ``lstm_lm``'s size and dropout flags and the translation model's
gate flags (:mod:`.gate_flags`), so a run switches between the three by ``--arch``.

Incremental state (generation): one dict with ``hiddens`` and ``cells``, each [B,L,H]
(batch first, so that beam search reorders it with one ``index_select``): every layer's
state after the last token read.
"""
from typing import Dict, Optional

import torch.nn.functional as F
from fairseq.models import (
    FairseqIncrementalDecoder,
    FairseqLanguageModel,
    register_model,
    register_model_architecture,
)
from fairseq.modules import FairseqDropout
from torch import Tensor

from ..gates import GateConfig
from ..rnn import G2LSTM, GateTallies, check_weight_drop
from .g2lstm import DEFAULT_MAX_POSITIONS, Linear, build_embedding
from .gate_flags import add_gate_args, flag_type, gate_arch_defaults, gate_config_from_args, log_gate_metrics
from .loading import HookedLoading, add_quantize_arg, quantize_from_args

CACHE_KEY = "cached_state"


@register_model("g2lstm_lm")
class G2LSTMLanguageModel(HookedLoading, FairseqLanguageModel):
    """G2-LSTM language model (Li et al., ICML 2018, section 5.1). Loads as the
    translation model does (:class:`~.loading.HookedLoading`)."""

    @staticmethod
    def add_args(parser):
        # fmt: off
        add = parser.add_argument
        add("--dropout", type=float, metavar="D", help="dropout probability")
        add("--decoder-embed-dim", type=int, metavar="N", help="embedding dimension")
        add("--decoder-embed-path", type=str, metavar="STR", help="path to pre-trained embeddings")
        add("--decoder-hidden-size", type=int, metavar="N", help="LSTM hidden size")
        add("--decoder-layers", type=int, metavar="N", help="number of LSTM layers")
        add("--decoder-out-embed-dim", type=int, metavar="N",
            help="output embedding dimension; the last layer's output is projected to it where it differs "
                 "from the hidden size")
        add("--decoder-dropout-in", type=float, metavar="D", help="dropout on the input embeddings")
        add("--decoder-dropout-hidden", type=float, metavar="D",
            help="dropout between LSTM layers (default: --decoder-dropout-out)")
        add("--decoder-dropout-out", type=float, metavar="D", help="dropout on the output, before the softmax")
        add("--weight-drop", type=flag_type(check_weight_drop, "--weight-drop"), metavar="P",
            help="DropConnect on the recurrent weights (AWD-LSTM): one mask per forward, shared by all "
                 "steps; 0 = off")
        add("--share-decoder-input-output-embed", action="store_true",
            help="share (tie) input and output embeddings")
        # fmt: on
        add_quantize_arg(parser)
        add_gate_args(parser)

    @classmethod
    def build_model(cls, args, task):
        base_lm_architecture(args)
        quantize = quantize_from_args(args)
        if args.share_decoder_input_output_embed and args.decoder_embed_dim != args.decoder_out_embed_dim:
            raise ValueError("--share-decoder-input-output-embed requires --decoder-embed-dim to match "
                             "--decoder-out-embed-dim")
        embed = build_embedding(args.decoder_embed_path, task.target_dictionary, args.decoder_embed_dim)
        decoder = G2LSTMLMDecoder(
            task.target_dictionary, embed, args.decoder_hidden_size, args.decoder_layers,
            args.decoder_out_embed_dim, args.decoder_dropout_in, args.decoder_dropout_hidden,
            args.decoder_dropout_out, gate_config_from_args(args), args.gate_kernel,
            weight_drop=args.weight_drop, share_input_output_embed=args.share_decoder_input_output_embed,
            max_positions=getattr(args, "max_target_positions", None) or DEFAULT_MAX_POSITIONS,
        )
        return cls(decoder, log_gate_metrics=not args.no_gate_metrics, quantize=quantize)

    def __init__(self, decoder, log_gate_metrics: bool = True, quantize: str = "none"):
        super().__init__(decoder)
        self.log_gate_metrics = log_gate_metrics
        self.quantize = quantize

    def forward(self, src_tokens, src_lengths=None, gate_stats=None, **kwargs):
        """Teacher-forced forward (training, validation, fairseq-eval-lm).

        src_tokens [B,T] (right-padded). gate_stats: an object with ``recorder(prefix)``
        (e.g. :class:`~fairseq_g2lstm.rnn.GateTallies`) that receives every layer's
        gates, named ``decoder.<layer>``. Without one the gate saturation is logged as
        fairseq metrics, as in the translation model, unless ``--no-gate-metrics``.
        """
        log = gate_stats is None and self.log_gate_metrics
        if log:
            gate_stats = GateTallies()
        out = self.decoder(src_tokens, gate_stats=gate_stats, **kwargs)
        if log:
            log_gate_metrics(gate_stats)
        return out


class G2LSTMLMDecoder(FairseqIncrementalDecoder):
    """Embeddings -> :class:`G2LSTM` (unidirectional) -> projection -> vocabulary.

    Dropout: ``dropout_in`` on the embeddings, ``dropout_hidden`` between LSTM layers,
    ``dropout_out`` on the output before the vocabulary projection; ``weight_drop``:
    DropConnect on the recurrent weights (in :class:`G2LSTM`).
    """

    def __init__(self, dictionary, embed_tokens, hidden_size, num_layers, out_embed_dim, dropout_in,
                 dropout_hidden, dropout_out, gate: GateConfig, kernel="auto", weight_drop=0.0,
                 share_input_output_embed=False, max_positions=DEFAULT_MAX_POSITIONS):
        super().__init__(dictionary)
        self.embed_tokens = embed_tokens
        self.padding_idx = embed_tokens.padding_idx
        self.dropout_in_module = FairseqDropout(dropout_in, module_name=self.__class__.__name__)
        self.dropout_out_module = FairseqDropout(dropout_out, module_name=self.__class__.__name__)
        # nn.LSTM's initialisation (uniform +-1/sqrt(H)), as AWD-LSTM
        self.lstm = G2LSTM(embed_tokens.embedding_dim, hidden_size, num_layers, bidirectional=False,
                           dropout=dropout_hidden, gate=gate, kernel=kernel, weight_drop=weight_drop)
        # AWD-LSTM's last layer is as wide as the embeddings; here a projection does that
        self.additional_fc = Linear(hidden_size, out_embed_dim) if hidden_size != out_embed_dim else None
        self.share_input_output_embed = share_input_output_embed
        self.fc_out = None if share_input_output_embed else Linear(out_embed_dim, len(dictionary))
        self.max_target_positions = max_positions

    def forward(self, prev_output_tokens, incremental_state=None, gate_stats=None, **kwargs):
        """prev_output_tokens [B,T] -> (logits [B,T,V], None)."""
        x = self.extract_features(prev_output_tokens, incremental_state, gate_stats)
        return self.output_layer(x), None

    def extract_features(self, prev_output_tokens, incremental_state=None, gate_stats=None, **kwargs):
        """prev_output_tokens [B,T] -> features [B,T,out_embed_dim].

        With an incremental state that already holds a state, only the last token is
        read (generation); without one, all of them, and the state after them is cached.
        Incremental decoding records no gates.
        """
        cache = self.get_incremental_state(incremental_state, CACHE_KEY) if incremental_state is not None else None
        if cache is not None:
            prev_output_tokens = prev_output_tokens[:, -1:]
        state = None if cache is None else (cache["hiddens"].transpose(0, 1), cache["cells"].transpose(0, 1))
        x = self.dropout_in_module(self.embed_tokens(prev_output_tokens)).transpose(0, 1)  # [T,B,E]
        # right-padded rows: outputs and the cached state stop at each row's last real token
        lengths = prev_output_tokens.ne(self.padding_idx).sum(1).cpu() if cache is None else None  # [B]
        recorder = gate_stats.recorder("decoder") if gate_stats is not None and incremental_state is None else None
        out, (h_n, c_n) = self.lstm(x, lengths, state, gate_recorder=recorder)  # out [T,B,H], h_n [L,B,H]
        if incremental_state is not None:
            cache = {"hiddens": h_n.transpose(0, 1), "cells": c_n.transpose(0, 1)}
            self.set_incremental_state(incremental_state, CACHE_KEY, cache)
        if self.additional_fc is not None:
            out = self.additional_fc(out)
        return self.dropout_out_module(out).transpose(0, 1)  # [B,T,C]

    def output_layer(self, x: Tensor) -> Tensor:
        if self.share_input_output_embed:
            return F.linear(x, self.embed_tokens.weight)
        return self.fc_out(x)

    def reorder_incremental_state(self, incremental_state: Dict[str, Dict[str, Optional[Tensor]]],
                                  new_order: Tensor):
        cache = self.get_incremental_state(incremental_state, CACHE_KEY)
        if cache is None:
            return
        reordered = {k: v.index_select(0, new_order) for k, v in cache.items()}
        self.set_incremental_state(incremental_state, CACHE_KEY, reordered)

    def max_positions(self):
        return self.max_target_positions


# --- architectures: defaults only --------------------------------------------------------
@register_model_architecture("g2lstm_lm", "g2lstm_lm")
def base_lm_architecture(args):
    """fairseq ``lstm_lm``'s sizes (1 layer of 512), tied only on request."""
    args.dropout = getattr(args, "dropout", 0.1)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 512)
    args.decoder_embed_path = getattr(args, "decoder_embed_path", None)
    args.decoder_hidden_size = getattr(args, "decoder_hidden_size", args.decoder_embed_dim)
    args.decoder_layers = getattr(args, "decoder_layers", 1)
    args.decoder_out_embed_dim = getattr(args, "decoder_out_embed_dim", args.decoder_embed_dim)
    args.decoder_dropout_in = getattr(args, "decoder_dropout_in", args.dropout)
    args.decoder_dropout_out = getattr(args, "decoder_dropout_out", args.dropout)
    args.decoder_dropout_hidden = getattr(args, "decoder_dropout_hidden", args.decoder_dropout_out)
    args.weight_drop = getattr(args, "weight_drop", 0.0)
    args.share_decoder_input_output_embed = getattr(args, "share_decoder_input_output_embed", False)
    gate_arch_defaults(args)


@register_model_architecture("g2lstm_lm", "g2lstm_lm_ptb")
def g2lstm_lm_ptb(args):
    """The paper's PTB model, AWD-LSTM's sizes: 3 layers of 1150, embedding 400, tied, the
    last layer's output projected to 400; AWD-LSTM's PTB dropouts (input 0.4, between
    layers 0.25, output 0.4) and DropConnect 0.5 on the recurrent weights."""
    args.dropout = getattr(args, "dropout", 0.4)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 400)
    args.decoder_hidden_size = getattr(args, "decoder_hidden_size", 1150)
    args.decoder_layers = getattr(args, "decoder_layers", 3)
    args.decoder_dropout_hidden = getattr(args, "decoder_dropout_hidden", 0.25)
    args.weight_drop = getattr(args, "weight_drop", 0.5)
    args.share_decoder_input_output_embed = getattr(args, "share_decoder_input_output_embed", True)
    base_lm_architecture(args)
