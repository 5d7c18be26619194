"""Translate with a model folder: sentences in, hypotheses with scores out.

:class:`Translator` is the runtime's API (as CTranslate2's ``Translator``): it loads a
folder once, prepares text as the training data was prepared
(:class:`~g2lstm_runtime.text.TextPreparation`, then the folder's sentencepiece model and
dictionary, as fairseq's sentencepiece BPE does), batches, searches (:mod:`.beam` over
:mod:`.onnx_engine`) and turns pieces back into text as fairseq's ``--remove-bpe
sentencepiece`` does. ``engine="torch"`` runs fairseq's own generator on the folder's
``model.pt`` instead (it needs torch and fairseq, imported only then), for comparison.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from .beam import Hypothesis, SearchOptions, beam_search
from .dictionary import Dictionary
from .folder import BPE_FILES, CHECKPOINT, TRANSLATION, ModelFolderError, PathLike, read_manifest, verify_folder
from .text import TextPreparation

ENGINES = ("onnx", "torch")


@dataclass
class Translation:
    text: str
    score: float  # summed log-probability / length ** lenpen (natural log, as fairseq's hub)
    pieces: List[str]


def remove_sentencepiece(pieces: Sequence[str]) -> str:
    """fairseq's ``--remove-bpe sentencepiece`` (and its sentencepiece BPE's decode)."""
    return " ".join(pieces).replace(" ", "").replace("\u2581", " ").strip()


class Translator:
    def __init__(self, folder: PathLike, engine: str = "onnx", threads: Optional[int] = None):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
        self.folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest.get("kind") != TRANSLATION:
            raise ModelFolderError(f"{folder}: not a translation model")
        languages = manifest["languages"]
        # the files this engine reads, checked against their sha256 (hashing model.pt would
        # cost the onnx engine's start as much as loading its graphs)
        used = [f"dict.{languages['source']}.txt", f"dict.{languages['target']}.txt"]
        used += [BPE_FILES[manifest["bpe"]["name"]][0]] if manifest.get("bpe") else []
        graphs = manifest.get("onnx") or {}
        used += [CHECKPOINT] if engine == "torch" else [graphs.get("encoder"), graphs.get("decoder")]
        self.manifest = verify_folder(folder, [name for name in used if name])
        self.source_dict = Dictionary.load(self.folder / f"dict.{languages['source']}.txt")
        self.target_dict = Dictionary.load(self.folder / f"dict.{languages['target']}.txt")
        self.prepare = TextPreparation.from_manifest(self.manifest)
        bpe = self.manifest.get("bpe")
        self.sentencepiece = None
        if bpe:
            if bpe["name"] != "sentencepiece":
                raise ModelFolderError(f"{folder}: its BPE is {bpe['name']}; g2lstm-translate reads sentencepiece")
            import sentencepiece

            self.sentencepiece = sentencepiece.SentencePieceProcessor(
                model_file=str(self.folder / BPE_FILES["sentencepiece"][0]))
        self.max_positions = int(self.manifest.get("architecture", {}).get("max_target_positions") or 1024)
        self.engine = engine
        if engine == "onnx":
            from .onnx_engine import OnnxModel

            self.model = OnnxModel(self.folder, self.manifest, threads)
        else:
            self.model = TorchEngine(self.folder, threads)

    def search_options(self, **values) -> SearchOptions:
        return SearchOptions(max_positions=self.max_positions, **values)

    def pieces(self, text: str) -> List[str]:
        text = self.prepare(text)
        if self.sentencepiece is None:
            return text.split()
        return self.sentencepiece.encode(text, out_type=str)

    def translate_batch(self, sources: Sequence[Sequence[int]], options: SearchOptions) -> List[List[Hypothesis]]:
        """Token indices (each ending with EOS) of one batch -> its ``nbest`` hypotheses each."""
        if self.engine == "torch":
            return self.model.search(sources, options)
        width = max(len(s) for s in sources)
        src = np.full((len(sources), width), self.source_dict.pad, np.int64)
        for row, tokens in enumerate(sources):  # left-padded, as fairseq batches sources
            src[row, width - len(tokens):] = tokens
        encoded = self.model.encode(src)
        decoder = self.model.decoder_state(encoded, options.beam)
        return beam_search(decoder, width, len(sources), options, eos=self.target_dict.eos,
                           pad=self.target_dict.pad, unk=self.target_dict.unk, vocab_size=len(self.target_dict))

    def translate(self, texts: Sequence[str], options: SearchOptions, batch_size: int = 32,
                  progress=None) -> List[List[Translation]]:
        """Translations of ``texts``, ``options.nbest`` each, in input order. Sentences are
        batched by length (``batch_size`` a batch) so that batches carry little padding;
        ``progress(n)`` is called after each batch with its sentence count."""
        sources = [self.source_dict.encode(self.pieces(text)) for text in texts]
        order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))
        results: List[Optional[List[Translation]]] = [None] * len(sources)
        for start in range(0, len(order), batch_size):
            chunk = order[start: start + batch_size]
            for index, hypos in zip(chunk, self.translate_batch([sources[i] for i in chunk], options)):
                results[index] = [self._translation(h) for h in hypos]
            if progress is not None:
                progress(len(chunk))
        return results

    def _translation(self, hypothesis: Hypothesis) -> Translation:
        pieces = self.target_dict.pieces(hypothesis.tokens)
        text = remove_sentencepiece(pieces) if self.sentencepiece is not None else " ".join(pieces)
        return Translation(text, hypothesis.score, pieces)


class TorchEngine:
    """fairseq's ``SequenceGenerator`` over the folder's ``model.pt`` (through the
    training package's hub loader), searching the same token batches."""

    def __init__(self, folder: Path, threads: Optional[int]):
        import torch

        from fairseq_g2lstm.export import hub_from_folder

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.hub = hub_from_folder(folder).eval()

    def search(self, sources: Sequence[Sequence[int]], options: SearchOptions) -> List[List[Hypothesis]]:
        from fairseq.sequence_generator import SequenceGenerator

        torch, hub = self.torch, self.hub
        generator = SequenceGenerator(hub.models, hub.tgt_dict, beam_size=options.beam, max_len_a=options.max_len_a,
                                      max_len_b=options.max_len_b, min_len=options.min_len,
                                      len_penalty=options.lenpen, unk_penalty=options.unkpen)
        width = max(len(s) for s in sources)
        src = torch.full((len(sources), width), hub.src_dict.pad(), dtype=torch.long)
        for row, tokens in enumerate(sources):
            src[row, width - len(tokens):] = torch.tensor(tokens)
        sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([len(s) for s in sources])}}
        with torch.no_grad():
            found = generator.generate(hub.models, sample)
        return [[Hypothesis(h["tokens"].tolist(), float(h["score"]), h["positional_scores"].tolist())
                 for h in hypos[: options.nbest]] for hypos in found]
