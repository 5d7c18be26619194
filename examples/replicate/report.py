"""RESULTS.md and its figures, from the per-model results files alone (no model runs).

The generated part of RESULTS.md ends at :data:`END_MARK`; whatever a person writes
below it is kept when the report is regenerated.
"""
import json
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parents[1]
sys.path.insert(0, str(CHECKOUT))  # this checkout's fairseq_g2lstm

from fairseq_g2lstm.atomic_file import write_text_atomic  # noqa: E402

END_MARK = "<!-- end of the generated part: a person's reading may follow, and is kept on regeneration -->"
ARM_NAMES = {"plain": "baseline (plain LSTM)", "sharpened": "sharpened sigmoid (tau 0.2)", "gumbel": "G2-LSTM (gumbel)"}
ROWS = ("original", "round (r=0.5)", "round-clip (r=0.5, c=1)", "svd (k=32)", "svd (k=16)")
ROW_HEADS = ("original", "round", "round & clip", "SVD k=32", "SVD k=16")
# The paper's Table 4 (docs/paper.md): test BLEU on IWSLT14 De->En after compression, one run each.
PAPER_IWSLT = {
    "plain": (31.00, 28.65, 21.97, 30.52, 29.56),
    "sharpened": (29.73, 27.08, 25.14, 29.17, 28.82),
    "gumbel": (31.95, 31.44, 31.44, 31.62, 31.28),
}
FIGURE_DIR = "figures"
BOOTSTRAP_SAMPLES = 1000  # sacreBLEU's default for --paired-bs
REPLICATION_DATA = "examples/replicate/work/data-bin"  # run.py's own data, always prepared with --lowercase


def checkout_relative(command: str) -> str:
    """``command`` with the paths inside this checkout shown relative to it. Training
    records a path relative to the checkout it ran from; one started from another copy
    of the tree (a snapshot worktree, so that edits cannot reach a running training)
    records the absolute paths of the folders it was pointed at."""
    prefix = f"{CHECKOUT}/"
    return " ".join(word[len(prefix):] if word.startswith(prefix) else word for word in command.split())


def load_results(folder: Path) -> List[Dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def by_arm(results: Sequence[Dict], arms: Sequence[str]) -> Dict[str, List[Dict]]:
    grouped = {arm: [r for r in results if r["arm"] == arm] for arm in arms}
    return {arm: sorted(rs, key=lambda r: r["seed"]) for arm, rs in grouped.items() if rs}


def mean_std(values: Sequence[float], digits: int = 2) -> str:
    """``mean ± std (n)``; the sample standard deviation, none for one value."""
    if not values:
        return "n/a"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f} (n=1)"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f} (n={len(values)})"


def bleu_table(groups: Dict[str, List[Dict]]) -> List[str]:
    lines = ["| model | " + " | ".join(ROW_HEADS) + " |", "|---|" + "---:|" * len(ROWS)]
    for arm, runs in groups.items():
        ours = [mean_std([r["compression"][row]["bleu"] for r in runs]) for row in ROWS]
        lines.append(f"| {ARM_NAMES[arm]}, ours | " + " | ".join(ours) + " |")
        paper = " | ".join(f"{b:.2f}" for b in PAPER_IWSLT[arm])
        lines.append(f"| {ARM_NAMES[arm]}, paper (IWSLT14) | {paper} |")
    return lines


def delta_table(groups: Dict[str, List[Dict]]) -> List[str]:
    lines = ["| model | " + " | ".join(ROW_HEADS[1:]) + " |", "|---|" + "---:|" * (len(ROWS) - 1)]
    for arm, runs in groups.items():
        ours = [mean_std([r["compression"][row]["delta"] for r in runs]) for row in ROWS[1:]]
        paper = PAPER_IWSLT[arm]
        lines.append(f"| {ARM_NAMES[arm]}, ours | " + " | ".join(ours) + " |")
        lines.append(f"| {ARM_NAMES[arm]}, paper | " + " | ".join(f"{b - paper[0]:+.2f}" for b in paper[1:]) + " |")
    return lines


def gate_layers(results: Sequence[Dict]) -> List[str]:
    """Every layer of any model's gate statistics, in the order the tool wrote them
    (encoder.0, encoder.0.reverse, encoder.1, decoder.0, ...): none is left out."""
    layers: List[str] = []
    for r in results:
        layers += [name for name in r["gates"]["layers"] if name not in layers]
    return layers


def test_set_case(results: Sequence[Dict]) -> str:
    """How the test set's case was treated, from the results (``lowercased``, recorded since
    the evaluation stores it); results that predate the field are lowercased only when
    they are of run.py's own data, which it always prepares with ``--lowercase``. That
    data is recognised in any checkout: a training started elsewhere records the
    absolute path of the checkout it ran in."""
    def lowercased(r: Dict) -> Optional[bool]:
        if "lowercased" in r:
            return bool(r["lowercased"])
        words = checkout_relative(r["training"]["command"]).split()
        return True if any(w == REPLICATION_DATA or w.endswith(f"/{REPLICATION_DATA}") for w in words) else None

    cases = {lowercased(r) for r in results}
    if cases == {True}:
        return "lowercased test set"
    if cases == {False}:
        return "test set in its original case"
    return "test set (its case as each model's data was prepared)"


def paired_bootstrap_rows(groups: Dict[str, List[Dict]], baseline: str = "plain", system: str = "gumbel",
                          samples: int = BOOTSTRAP_SAMPLES) -> List[Dict]:
    """sacreBLEU's paired bootstrap of ``system`` against ``baseline`` for each seed both
    arms have, from the stored test hypotheses; seeds without them are left out."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    base = {r["seed"]: r for r in groups.get(baseline, []) if r.get("hypotheses")}
    rows = []
    for r in groups.get(system, []):
        other = base.get(r["seed"])
        if not r.get("hypotheses") or other is None or other.get("references") != r.get("references"):
            continue
        test = PairedTest([(baseline, other["hypotheses"]), (system, r["hypotheses"])], {"BLEU": BLEU()},
                          references=[r["references"]], test_type="bs", n_samples=samples)
        _, scores = test()
        base_score, system_score = scores["BLEU"]
        rows.append({"seed": r["seed"], "baseline": base_score.score, "system": system_score.score,
                     "p_value": system_score.p_value})
    return rows


def significance_lines(groups: Dict[str, List[Dict]]) -> List[str]:
    rows = paired_bootstrap_rows(groups)
    if not rows:
        return ["Not computed: these results hold no test hypotheses (they predate storing them), and the "
                "checkpoints are not kept. `run.py --stage evaluate` stores them with each model's results."]
    lines = [f"sacreBLEU's paired bootstrap ({BOOTSTRAP_SAMPLES} resamples) of G2 against plain on the same "
             "test sentences, per seed; p is the chance of G2's gain under the null of no difference.", "",
             "| seed | plain BLEU | G2 BLEU | G2 - plain | p |", "|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['seed']} | {row['baseline']:.2f} | {row['system']:.2f} | "
                     f"{row['system'] - row['baseline']:+.2f} | {row['p_value']:.4f} |")
    return lines


def gate_share_table(groups: Dict[str, List[Dict]]) -> List[str]:
    head = ["model", "layer"] + [f"{g} {s}" for g in ("input", "forget") for s in ("< 0.1", "> 0.9")]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * 4]
    layers = gate_layers([r for runs in groups.values() for r in runs])
    for arm, runs in groups.items():
        for layer in layers:
            if not all(layer in r["gates"]["layers"] for r in runs):
                continue
            cells = []
            for gate in ("input", "forget"):
                for key in ("share_below", "share_above"):
                    values = [100 * r["gates"]["layers"][layer][gate][key] for r in runs]
                    cells.append(mean_std(values, 1).replace(" (n=", "% (n=") if len(values) > 1
                                 else f"{values[0]:.1f}%")
            lines.append(f"| {ARM_NAMES[arm]} | {layer} | " + " | ".join(cells) + " |")
    return lines


def training_table(results: Sequence[Dict]) -> List[str]:
    lines = ["| model | epochs | updates | best epoch | best valid loss | train min | eval min |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(results, key=lambda r: (r["arm"], r["seed"])):
        t = r["training"]
        lines.append(f"| {r['run']} | {t['epochs']} | {t['num_updates']} | {t['best_epoch']} | "
                     f"{t['best_valid_loss']:.3f} | {t['train_wall_minutes']:.0f} | {r['evaluation_minutes']:.0f} |")
    return lines


def draw_figures(groups: Dict[str, List[Dict]], out: Path) -> List[str]:
    """The decoder.0 histogram (first seed of each arm, overlaid) and one heatmap per
    sentence (the same runs); returns the figures' paths relative to ``out``'s parent."""
    from fairseq_g2lstm.gate_stats.cli import write_heatmap_png, write_histograms

    out.mkdir(parents=True, exist_ok=True)
    firsts = [runs[0] for runs in groups.values()]
    records = [{"label": f"{ARM_NAMES[r['arm']].split(' (')[0]} (seed {r['seed']})", "layers": r["gates"]["layers"],
                "split": r["gates"]["split"], "sentences": r["gates"]["sentences"]} for r in firsts]
    paths = write_histograms(records, ["decoder.0"], out)
    for k, heatmap in enumerate(firsts[0]["heatmaps"]):
        rows = [{**r["heatmaps"][k]["row"], "label": record["label"]} for r, record in zip(firsts, records)]
        record = {**heatmap, "checkpoints": rows}
        paths.append(write_heatmap_png(record, out / f"heatmap.{k + 1}.png"))
    return [str(p.relative_to(out.parent)) for p in paths]


def write_report(results_dir: Path, report: Path, arms: Sequence[str], command: str, budget_note: str,
                 planned: Optional[int] = None) -> None:
    results = load_results(results_dir)
    groups = by_arm(results, arms)
    figures = draw_figures(groups, report.parent / FIGURE_DIR) if groups else []
    train_minutes = sum(r["training"]["train_wall_minutes"] for r in results)
    eval_minutes = sum(r["evaluation_minutes"] for r in results)
    first = results[0] if results else None
    train_command = checkout_relative(first["training"]["command"]) if first else ""
    lines = [
        "# Replication at CPU scale: plain, sharpened and G2 LSTMs",
        "",
        f"Generated by `{command}` from `results/*.json` (one file per model); do not edit above the end mark.",
        "",
        f"Models finished: {len(results)}" + (f" of {planned}" if planned else "") + ". "
        f"Compute: {train_minutes / 60:.1f} h of training and {eval_minutes / 60:.1f} h of evaluation, "
        f"summed over the models, as wall time on the machine that ran them. {budget_note}",
        "",
    ]
    if first:
        lines += [
            f"Data: `{train_command.split()[1]}`; every arm trained by "
            f"`{train_command}` with only `--gate-mode` and `--seed` changed; "
            "each judged by its `checkpoint_best.pt` (lowest validation loss).",
            "",
            "## Test BLEU after compression (the paper's Table 4; docs/paper.md)",
            "",
            f"sacreBLEU, beam 5, {test_set_case(results)}; mean ± sample standard deviation over seeds. Only the "
            "input- and forget-gate blocks of the recurrent and input-feeding weights are compressed. The paper's "
            "IWSLT14 numbers (one run each, a 153k-pair corpus) are beside ours for shape, not for level.",
            "",
            *bleu_table(groups),
            "",
            "Change from each model's own original BLEU:",
            "",
            *delta_table(groups),
            "",
            "Is G2's BLEU different from plain's?",
            "",
            *significance_lines(groups),
            "",
            "## How open or shut the gates are (the paper's section 5)",
            "",
            f"Share of gate values below 0.1 and above 0.9, teacher-forced (eval mode) over "
            f"{first['gates']['sentences']} {first['gates']['split']} pairs; mean over seeds.",
            "",
            *gate_share_table(groups),
            "",
            *[f"![{Path(f).stem}]({f})" for f in figures],
            "",
            "## Training",
            "",
            *training_table(results),
            "",
        ]
    old = report.read_text() if report.exists() else ""
    reading = old.split(END_MARK, 1)[1] if END_MARK in old else "\n"
    write_text_atomic(report, "\n".join(lines) + "\n" + END_MARK + reading)
