"""Evaluate one trained replication model with the project's own tools.

* BLEU and the paper's compression grid (Table 4: original, round r 0.5, round-clip
  r 0.5 c 1.0, SVD k 32 and 16, recurrent scope) through
  :func:`fairseq_g2lstm.compress.sweep.run_sweep`: fairseq-generate, beam 5, sacreBLEU;
* the gate statistics of every layer over 10,000 training pairs, and the per-token gates
  of the heatmap sentences (the references as targets, so every model is read on the
  same words), through ``g2lstm-gates``.

The result is one small JSON file per model; :mod:`report` reads only those.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

GATE_SENTENCES = 10_000
HEATMAP_LAYER = "decoder.0"


def language_pair(data_bin: Path) -> Tuple[str, str]:
    """(source, target) of a data-bin with one language pair (``train.de-en.de.bin``...)."""
    pairs = {path.name.split(".")[1] for path in data_bin.glob("train.*-*.*.bin")}
    if len(pairs) != 1:
        raise SystemExit(f"{data_bin}: found language pairs {sorted(pairs)}; give -s and -t")
    source, target = pairs.pop().split("-")
    return source, target


def bpe_symbol(data_bin: Path):
    """``sentencepiece`` for a data-bin that g2lstm-prepare-* made (it holds spm.model), else None."""
    return "sentencepiece" if (data_bin / "spm.model").exists() else None


def heatmap_pairs(data_bin: Path, source_lang: str, target_lang: str, count: int = 2,
                  words: Tuple[int, int] = (6, 10)) -> List[Tuple[str, str]]:
    """The first ``count`` test pairs whose sides have ``words`` words (inclusive), as raw
    text: decoded from the data-bin, so that any corpus works."""
    from fairseq.data import Dictionary, data_utils

    sides = {}
    for lang in (source_lang, target_lang):
        dictionary = Dictionary.load(str(data_bin / f"dict.{lang}.txt"))
        prefix = data_bin / f"test.{source_lang}-{target_lang}.{lang}"
        dataset = data_utils.load_indexed_dataset(str(prefix), dictionary)
        sides[lang] = [dictionary.string(dataset[i], bpe_symbol(data_bin)) for i in range(len(dataset))]
    pairs = []
    for src, tgt in zip(sides[source_lang], sides[target_lang]):
        if all(words[0] <= len(side.split()) <= words[1] for side in (src, tgt)):
            pairs.append((src, tgt))
        if len(pairs) == count:
            break
    return pairs


def checkout_env() -> Dict[str, str]:
    """The environment of every child process: ``PYTHONPATH`` starts with the checkout
    whose ``fairseq_g2lstm`` this process imported, so that ``python -m fairseq_g2lstm...``
    runs the same code as the rest of the evaluation (fairseq-generate gets that
    package's folder as ``--user-dir``), not whichever copy is installed."""
    import fairseq_g2lstm

    checkout = str(Path(fairseq_g2lstm.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (checkout, os.environ.get("PYTHONPATH")) if p)}


def compression_grid(data_bin: Path, checkpoint: Path, label: str, langs: Sequence[str]) -> Dict:
    from fairseq_g2lstm.compress.sweep import run_generate, run_sweep

    bpe = bpe_symbol(data_bin)
    gen_args = [*langs, *(["--remove-bpe", bpe] if bpe else []), "--max-tokens", "8000", "--cpu"]
    return run_sweep(str(data_bin), [str(checkpoint)], [label], gen_args=gen_args,
                     log=lambda line: print(f"    {line}", flush=True),
                     generate=lambda command, env: run_generate(command, checkout_env()))


def gate_statistics(data_bin: Path, checkpoint: Path, label: str,
                    pairs: Sequence[Tuple[str, str]]) -> Tuple[Dict, List[Dict]]:
    """(the gate statistics record, one heatmap record per pair) from ``g2lstm-gates``."""
    with tempfile.TemporaryDirectory(prefix="replicate-gates-") as out:
        command = [sys.executable, "-m", "fairseq_g2lstm.gate_stats", str(data_bin), "--path", str(checkpoint),
                   "--labels", label, "--out-dir", out, "--cpu", "--max-sentences", str(GATE_SENTENCES),
                   "--no-progress-bar"]
        for source, target in pairs:
            command += ["--heatmap", source, "--heatmap-target", target]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=checkout_env())
        stats = json.loads((Path(out) / f"gates.{label}.json").read_text())
        heatmaps = [json.loads((Path(out) / f"heatmap.{k}.json").read_text()) for k in range(1, len(pairs) + 1)]
    return stats, heatmaps


def evaluate(name: str, trained: Dict, checkpoint: Path, data_bin: Path, langs: Sequence[str],
             pairs: Sequence[Tuple[str, str]]) -> Dict:
    """The results record of one model (what results/<name>.json holds)."""
    from fairseq_g2lstm.gate_stats.cli import data_lowercased

    start = time.monotonic()
    sweep = compression_grid(data_bin, checkpoint, name, langs)
    stats, heatmaps = gate_statistics(data_bin, checkpoint, name, pairs)
    cells = {cell["row"]: cell for cell in sweep["cells"]}
    return {
        "run": name,
        "arm": trained["arm"],
        "seed": trained["seed"],
        "training": trained,
        "bleu": cells["original"]["bleu"],
        "compression": {row: {"bleu": cell["bleu"], "delta": cell["delta"], "signature": cell["signature"],
                              "score_line": cell["score_line"]} for row, cell in cells.items()},
        "generate_command": cells["original"]["command"],
        "lowercased": data_lowercased(data_bin),
        # the test translations, for significance tests between models without decoding again
        "hypotheses": cells["original"].get("hypotheses"),
        "references": cells["original"].get("references"),
        "gates": {"split": stats["split"], "sentences": stats["sentences"], "layers": stats["layers"],
                  "command": stats["generated_by"]["command"]},
        "heatmaps": [{"source": h["source"], "target": h["target"], "layer": h["layer"], "units": h["units"],
                      "row": h["checkpoints"][0]} for h in heatmaps],
        "evaluation_minutes": round((time.monotonic() - start) / 60, 1),
    }
