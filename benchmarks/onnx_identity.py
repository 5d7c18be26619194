"""Does a model folder's ONNX engine translate a test set as ``fairseq-generate`` does?

Runs ``fairseq-generate`` (beam search in torch) on a data-bin split with the folder's
``model.pt``, then the folder's ONNX graphs (:class:`g2lstm_runtime.translator.Translator`)
on the very same source tokens, and reports:

* the share of sentences whose best hypothesis is identical (subword for subword);
* BLEU of both (sacrebleu, on text after ``--remove-bpe sentencepiece``) and the difference;
* every differing sentence with both scores (natural log, length-normalised): for an
  fp32 folder, differences that are float ties show near-equal scores, and fairseq's
  hypothesis among the ONNX engine's n-best with (almost) the same score.

For a quantized folder (``--onnx-quantize``) the same run gives its agreement with the
float model and its BLEU change. A direction, not a timing: nothing here is timed.

    python benchmarks/onnx_identity.py --folder /tmp/demo-onnx --data demo/data-bin --beam 5
"""
import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def fairseq_generate(folder: Path, data: Path, manifest, split: str, beam: int, batch_size: int):
    """{id: (source pieces, hypothesis pieces, score, reference pieces)} from fairseq-generate."""
    languages = manifest["languages"]
    command = [str(Path(sys.executable).parent / "fairseq-generate"), str(data), "--path", str(folder / "model.pt"),
               "--user-dir", str(REPO / "fairseq_g2lstm"), "--gen-subset", split, "--beam", str(beam),
               "--batch-size", str(batch_size), "--source-lang", languages["source"],
               "--target-lang", languages["target"], "--cpu"]
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    rows = {}
    for line in proc.stdout.splitlines():
        kind, _, rest = line.partition("-")
        if kind not in ("S", "T", "H") or not rest[:1].isdigit():
            continue
        fields = rest.split("\t")
        entry = rows.setdefault(int(fields[0]), {})
        if kind == "H":  # fairseq-generate prints base-2 scores
            entry["H"], entry["score"] = fields[2].split(), float(fields[1]) * math.log(2)
        else:
            entry[kind] = fields[1].split()
    return rows, " ".join(command)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True, type=Path, help="a model folder with ONNX graphs")
    parser.add_argument("--data", required=True, type=Path, help="the data-bin the model was trained on")
    parser.add_argument("--split", default="test")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    import sacrebleu

    from g2lstm_runtime.translator import Translator, remove_sentencepiece

    translator = Translator(args.folder, engine="onnx", threads=int(os.environ.get("OMP_NUM_THREADS", "2")))
    rows, command = fairseq_generate(args.folder, args.data, translator.manifest, args.split, args.beam,
                                     args.batch_size)
    ids = sorted(rows, key=lambda i: -len(rows[i]["S"]))
    options = translator.search_options(beam=args.beam, nbest=args.beam)
    found = {}
    for start in range(0, len(ids), args.batch_size):
        chunk = ids[start: start + args.batch_size]
        sources = [translator.source_dict.encode(rows[i]["S"]) for i in chunk]
        for i, hypos in zip(chunk, translator.translate_batch(sources, options)):
            found[i] = hypos
    differing, hyps_fairseq, hyps_onnx, refs = [], [], [], []
    for i in sorted(rows):
        ours = [translator.target_dict.pieces(h.tokens) for h in found[i]]
        theirs = rows[i]["H"]
        hyps_fairseq.append(remove_sentencepiece(theirs))
        hyps_onnx.append(remove_sentencepiece(ours[0]))
        refs.append(remove_sentencepiece(rows[i].get("T", [])))
        if ours[0] != theirs:
            rank = ours.index(theirs) if theirs in ours else None
            differing.append({"id": i, "fairseq": hyps_fairseq[-1], "onnx": hyps_onnx[-1],
                              "fairseq_score": rows[i]["score"], "onnx_score": found[i][0].score,
                              "fairseq_hypothesis_in_onnx_nbest": rank,
                              "its_onnx_score": None if rank is None else found[i][rank].score})
    bleu_fairseq = sacrebleu.corpus_bleu(hyps_fairseq, [refs]).score
    bleu_onnx = sacrebleu.corpus_bleu(hyps_onnx, [refs]).score
    report = {"folder": str(args.folder), "precision": translator.manifest["onnx"]["precision"],
              "sentences": len(rows), "identical": len(rows) - len(differing),
              "identical_share": (len(rows) - len(differing)) / len(rows), "bleu_fairseq": bleu_fairseq,
              "bleu_onnx": bleu_onnx, "bleu_difference": bleu_onnx - bleu_fairseq, "fairseq_command": command,
              "differing": differing}
    print(f"{report['identical']}/{report['sentences']} identical ({100 * report['identical_share']:.2f}%), "
          f"BLEU fairseq {bleu_fairseq:.2f}, onnx ({report['precision']}) {bleu_onnx:.2f}, "
          f"difference {bleu_onnx - bleu_fairseq:+.2f}")
    for d in differing:
        print(f"  #{d['id']}: fairseq {d['fairseq_score']:.5f} vs onnx {d['onnx_score']:.5f} "
              f"(margin {d['onnx_score'] - d['fairseq_score']:+.2e}; fairseq's in onnx n-best: "
              f"{d['fairseq_hypothesis_in_onnx_nbest']}, {d['its_onnx_score']})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
