"""``--engine torch``: fairseq's ``SequenceGenerator`` over a model folder's ``model.pt``,
searching the token batches the runtime's :class:`~g2lstm_runtime.translator.Translator`
makes, so that the ONNX engine can be compared with fairseq's own search on the same input.
"""
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from g2lstm_runtime.beam import Hypothesis, SearchOptions
from g2lstm_runtime.folder import CHECKPOINT, PathLike, verify_folder

from ..export import hub_from_folder


class TorchEngine:
    """A :class:`g2lstm_runtime.translator.Engine` on fairseq's hub over the folder."""

    name = "torch"

    def __init__(self, folder: PathLike, threads: Optional[int] = None):
        verify_folder(folder, [CHECKPOINT])  # the one file this engine reads beyond the translator's
        if threads:
            torch.set_num_threads(threads)
        self.hub = hub_from_folder(Path(folder)).eval()

    def search(self, sources: Sequence[Sequence[int]], options: SearchOptions) -> List[List[Hypothesis]]:
        from fairseq.sequence_generator import SequenceGenerator

        hub = self.hub
        generator = SequenceGenerator(hub.models, hub.tgt_dict, beam_size=options.beam, max_len_a=options.max_len_a,
                                      max_len_b=options.max_len_b, min_len=options.min_len,
                                      len_penalty=options.lenpen, unk_penalty=options.unkpen)
        width = max(len(s) for s in sources)
        src = torch.full((len(sources), width), hub.src_dict.pad(), dtype=torch.long)  # [B,S]
        for row, tokens in enumerate(sources):  # left-padded, as fairseq batches sources
            src[row, width - len(tokens):] = torch.tensor(tokens)
        sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([len(s) for s in sources])}}
        with torch.no_grad():
            found = generator.generate(hub.models, sample)
        return [[Hypothesis(h["tokens"].tolist(), float(h["score"]), h["positional_scores"].tolist())
                 for h in hypos[: options.nbest]] for hypos in found]

