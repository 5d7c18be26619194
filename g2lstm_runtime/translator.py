"""Translate with a model folder: sentences in, hypotheses with scores out.

:class:`Translator` is the runtime's API (as CTranslate2's ``Translator``): it loads a
folder once, prepares text as the training data was prepared
(:class:`~g2lstm_runtime.text.TextPreparation`, then the folder's sentencepiece model and
dictionary, as fairseq's sentencepiece BPE does), batches, hands each batch of token lists
to its :class:`Engine` and turns pieces back into text as fairseq's ``--remove-bpe
sentencepiece`` does. The runtime's own engine is ``onnx`` (:mod:`.beam` over
:mod:`.onnx_engine`); an engine that needs the training stack (``torch``: fairseq's own
generator on the folder's ``model.pt``, for comparison) is found by its module name in
:data:`ENGINE_MODULES` and imported only when asked for, so that this package never
imports torch, fairseq or ``fairseq_g2lstm``.
"""
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Protocol, Sequence, Union

import numpy as np

from .beam import Hypothesis, SearchOptions, beam_search
from .dictionary import Dictionary
from .folder import BPE_FILES, TRANSLATION, ModelFolderError, PathLike, read_manifest, verify_folder
from .text import TextPreparation

# engines of the training stack: name -> "module:class", the class built as Class(folder, threads)
ENGINE_MODULES = {"torch": "fairseq_g2lstm.engines.torch:TorchEngine"}
ENGINES = ("onnx", *ENGINE_MODULES)  # the runtime's own first


class EngineUnavailable(ModelFolderError):
    """An engine whose module cannot be imported here (``str()``: the engine's name)."""


class Engine(Protocol):
    """What a :class:`Translator` searches with: a batch of source token lists (each
    ending with EOS) in, each sentence's ``options.nbest`` hypotheses out, best first."""

    name: str

    def search(self, sources: Sequence[Sequence[int]], options: SearchOptions) -> List[List[Hypothesis]]:
        ...


def load_engine(name: str, folder: PathLike, threads: Optional[int] = None) -> Engine:
    """The engine ``name`` of :data:`ENGINE_MODULES` over ``folder``, its module imported now."""
    module_name, _, class_name = ENGINE_MODULES[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise EngineUnavailable(name) from None
    return getattr(module, class_name)(folder, threads)


@dataclass
class Translation:
    text: str
    score: float  # summed log-probability / length ** lenpen (natural log, as fairseq's hub)
    pieces: List[str]


def remove_sentencepiece(pieces: Sequence[str]) -> str:
    """fairseq's ``--remove-bpe sentencepiece`` (and its sentencepiece BPE's decode)."""
    return " ".join(pieces).replace(" ", "").replace("\u2581", " ").strip()


class Translator:
    """``engine``: ``"onnx"`` (the runtime's), another name of :data:`ENGINES` (loaded by
    :func:`load_engine`) or an :class:`Engine` already built over the same folder."""

    def __init__(self, folder: PathLike, engine: Union[str, Engine] = "onnx", threads: Optional[int] = None):
        if isinstance(engine, str) and engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
        self.folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest.get("kind") != TRANSLATION:
            raise ModelFolderError(f"{folder}: not a translation model")
        languages = manifest["languages"]
        # the files the translator and the onnx engine read, checked against their sha256 (an
        # engine of the training stack checks its own; hashing model.pt would cost the onnx
        # engine's start as much as loading its graphs)
        used = [f"dict.{languages['source']}.txt", f"dict.{languages['target']}.txt"]
        used += [BPE_FILES[manifest["bpe"]["name"]][0]] if manifest.get("bpe") else []
        graphs = manifest.get("onnx") or {}
        used += [graphs.get("encoder"), graphs.get("decoder")] if engine == "onnx" else []
        self.manifest = verify_folder(folder, [name for name in used if name])
        self.source_dict = Dictionary.load(self.folder / f"dict.{languages['source']}.txt")
        self.target_dict = Dictionary.load(self.folder / f"dict.{languages['target']}.txt")
        self.prepare = TextPreparation.from_manifest(self.manifest)
        if self.prepare.tokenizer:  # the runtime has no Moses: the input would differ from the training text
            raise ModelFolderError(f"{folder}: its text was {self.prepare.tokenizer}-tokenized before the BPE; "
                                   "the runtime applies no tokenizer (translate it with the torch hub)")
        bpe = self.manifest.get("bpe")
        self.sentencepiece = None
        if bpe:
            if bpe["name"] != "sentencepiece":
                raise ModelFolderError(f"{folder}: its BPE is {bpe['name']}; g2lstm-translate reads sentencepiece")
            import sentencepiece

            self.sentencepiece = sentencepiece.SentencePieceProcessor(
                model_file=str(self.folder / BPE_FILES["sentencepiece"][0]))
        self.max_positions = int(self.manifest.get("architecture", {}).get("max_target_positions") or 1024)
        if engine == "onnx":
            engine = OnnxEngine(self.folder, self.manifest, len(self.target_dict), threads)
        elif isinstance(engine, str):
            engine = load_engine(engine, self.folder, threads)
        self.engine: Engine = engine

    def search_options(self, **values) -> SearchOptions:
        return SearchOptions(max_positions=self.max_positions, **values)

    def pieces(self, text: str) -> List[str]:
        text = self.prepare(text)
        if self.sentencepiece is None:
            return text.split()
        return self.sentencepiece.encode(text, out_type=str)

    def translate_batch(self, sources: Sequence[Sequence[int]], options: SearchOptions) -> List[List[Hypothesis]]:
        """Token indices (each ending with EOS) of one batch -> its ``nbest`` hypotheses each."""
        return self.engine.search(sources, options)

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

    def text(self, tokens: Sequence[int]) -> str:
        """Target token indices -> the translation's text (EOS dropped, pieces joined)."""
        pieces = self.target_dict.pieces(tokens)
        return remove_sentencepiece(pieces) if self.sentencepiece is not None else " ".join(pieces)

    def _translation(self, hypothesis: Hypothesis) -> Translation:
        return Translation(self.text(hypothesis.tokens), hypothesis.score, self.target_dict.pieces(hypothesis.tokens))


class OnnxEngine:
    """The folder's ONNX graphs (:class:`~g2lstm_runtime.onnx_engine.OnnxModel`) under
    :func:`~g2lstm_runtime.beam.beam_search`."""

    name = "onnx"

    def __init__(self, folder: Path, manifest, vocab_size: int, threads: Optional[int]):
        from .onnx_engine import OnnxModel

        self.model = OnnxModel(folder, manifest, threads)
        self.vocab_size = vocab_size  # the target dictionary's

    def search(self, sources: Sequence[Sequence[int]], options: SearchOptions) -> List[List[Hypothesis]]:
        width = max(len(s) for s in sources)
        src = np.full((len(sources), width), Dictionary.pad, np.int64)  # [B,S]
        for row, tokens in enumerate(sources):  # left-padded, as fairseq batches sources
            src[row, width - len(tokens):] = tokens
        encoded = self.model.encode(src)
        decoder = self.model.decoder_state(encoded, options.beam)
        return beam_search(decoder, width, len(sources), options, eos=Dictionary.eos, pad=Dictionary.pad,
                           unk=Dictionary.unk, vocab_size=self.vocab_size)
