"""The torch-free runtime: fairseq's dictionaries read alike, and the beam search over the
ONNX graphs finds what fairseq's SequenceGenerator finds on the torch model (hypotheses,
scores, n-best) for every search option."""
import random

import pytest

from conftest import cli

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def folders(toy_checkpoint, toy_data, reversal_model, tmp_path_factory):
    """Model folders with ONNX graphs: the barely trained toy model (flat distributions:
    many close calls) and the reversal model (peaked ones)."""
    root = tmp_path_factory.mktemp("runtime")
    reversal_data, reversal_checkpoint = reversal_model
    cli("g2lstm-export", toy_checkpoint, "--data", toy_data / "bin", "--out", root / "toy", "--onnx")
    cli("g2lstm-export", reversal_checkpoint, "--data", reversal_data / "bin", "--out", root / "reversal", "--onnx")
    return {"toy": root / "toy", "reversal": root / "reversal"}


def random_sources(dictionary, count=7, seed=0):
    """Sentences of 1 to 9 tokens (unknown ones included), each ending with EOS."""
    rng = random.Random(seed)
    words = dictionary.symbols[4:]
    return [dictionary.encode([rng.choice(words + ["never-seen"]) for _ in range(rng.randint(1, 9))])
            for _ in range(count)]


def test_dictionary_reads_as_fairseq(toy_data, tmp_path):
    from fairseq.data import Dictionary as FairseqDictionary

    from g2lstm_runtime.dictionary import Dictionary, DictionaryError

    path = toy_data / "bin" / "dict.en.txt"
    ours, theirs = Dictionary.load(path), FairseqDictionary.load(str(path))
    assert ours.symbols == theirs.symbols and len(ours) == len(theirs) > 30
    line = "W3 W7 nowhere  W1 "
    assert ours.encode_line(line) == theirs.encode_line(line, add_if_not_exist=False).tolist()
    assert ours.encode_line(line)[2] == ours.unk
    assert " ".join(ours.pieces([2, 0, *ours.encode_line(line)])) == theirs.string(theirs.encode_line(line, add_if_not_exist=False))
    overwritten = tmp_path / "dict.txt"
    overwritten.write_text("a 5\nb 3\na 1 #fairseq:overwrite\nc 1\n")
    ours, theirs = Dictionary.load(overwritten), FairseqDictionary.load(str(overwritten))
    assert ours.symbols == theirs.symbols and ours.index("a") == theirs.index("a") == 6
    overwritten.write_text("a 5\na 1\n")
    with pytest.raises(DictionaryError, match="duplicate symbol 'a'"):
        Dictionary.load(overwritten)


OPTIONS = [
    {"beam": 1},
    {"beam": 5, "nbest": 5},
    {"beam": 5, "nbest": 3, "lenpen": 0.6},
    {"beam": 4, "nbest": 4, "lenpen": 1.7, "min_len": 4},
    {"beam": 5, "nbest": 2, "max_len_a": 0.5, "max_len_b": 2},  # many hypotheses stop at the maximum length
    {"beam": 3, "nbest": 3, "unkpen": -3.0},  # unknown words made likely
    {"beam": 5, "unkpen": 2.0, "min_len": 2},
]


@pytest.mark.parametrize("model", ["toy", "reversal"])
@pytest.mark.parametrize("values", OPTIONS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()))
def test_beam_search_over_onnx_finds_what_fairseq_finds(folders, model, values):
    from fairseq_g2lstm.engines.torch import TorchEngine
    from g2lstm_runtime.translator import Translator

    translator = Translator(folders[model], engine="onnx", threads=1)
    options = translator.search_options(**values)
    sources = random_sources(translator.source_dict, seed=len(values))
    assert len({len(s) for s in sources}) > 3  # a padded batch of different lengths
    ours = translator.translate_batch(sources, options)
    fairseqs = TorchEngine(folders[model], threads=1).search(sources, options)
    assert [len(h) for h in ours] == [options.nbest] * len(sources)
    for mine, theirs in zip(ours, fairseqs):
        assert [h.tokens for h in mine] == [h.tokens for h in theirs]
        assert [h.score for h in mine] == pytest.approx([h.score for h in theirs], abs=1e-4)
        for a, b in zip(mine, theirs):
            assert a.positional_scores == pytest.approx(b.positional_scores, abs=1e-4)
    lengths = {len(h.tokens) for hypos in ours for h in hypos}
    if "max_len_a" in values:
        assert max(lengths) <= int(0.5 * max(len(s) for s in sources) + 2) + 1
    if "min_len" in values:
        assert min(lengths) > values["min_len"]
    if values.get("unkpen", 0) < 0:
        assert any(translator.target_dict.unk in h.tokens for hypos in ours for h in hypos)


def test_the_reversal_model_reverses_through_the_runtime(folders):
    from g2lstm_runtime.translator import Translator

    translator = Translator(folders["reversal"], engine="onnx", threads=1)
    sentences = ["w1 w2 w3", "w4 w5 w6 w7", "w9 w0 w3 w3 w8"]
    out = translator.translate(sentences, translator.search_options(beam=5), batch_size=2)
    assert sum(t[0].text == " ".join(reversed(s.split())) for s, t in zip(sentences, out)) >= 2, out


def test_runtime_modules_import_neither_torch_nor_fairseq():
    import ast
    from pathlib import Path

    import g2lstm_runtime

    for path in Path(g2lstm_runtime.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            top = {n.split(".")[0] for n in names}
            assert not top & {"torch", "fairseq", "fairseq_g2lstm"}, (path.name, names)  # in functions too


def test_the_torch_engine_is_found_by_name_and_searches_as_one_given(folders):
    from fairseq_g2lstm.engines.torch import TorchEngine
    from g2lstm_runtime.translator import Translator

    by_name = Translator(folders["reversal"], engine="torch", threads=1)
    given = Translator(folders["reversal"], engine=TorchEngine(folders["reversal"], threads=1))
    assert type(by_name.engine) is TorchEngine and by_name.engine.name == "torch"
    sentences = ["w1 w2 w3", "w4 w5 w6 w7"]
    options = by_name.search_options(beam=3, nbest=2)
    assert ([[t.text for t in ts] for ts in by_name.translate(sentences, options)]
            == [[t.text for t in ts] for ts in given.translate(sentences, options)])


def test_each_engine_checks_the_files_it_reads(folders, tmp_path):
    import shutil

    from g2lstm_runtime.folder import ModelFolderError
    from g2lstm_runtime.translator import Translator

    folder = tmp_path / "m"
    shutil.copytree(folders["reversal"], folder)
    with open(folder / "model.pt", "ab") as stream:
        stream.write(b"\0")
    Translator(folder, engine="onnx", threads=1)  # never reads model.pt, so does not hash it
    with pytest.raises(ModelFolderError, match="model.pt does not match its sha256"):
        Translator(folder, engine="torch")
    with open(folder / "decoder.onnx", "ab") as stream:
        stream.write(b"\0")
    with pytest.raises(ModelFolderError, match="decoder.onnx does not match its sha256"):
        Translator(folder, engine="onnx")
