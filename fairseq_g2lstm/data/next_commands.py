"""The recommended training recipes, and the fairseq commands printed after preparation.

One recipe per translation scale, stated here once. ``g2lstm-prepare-parallel``,
``g2lstm-prepare-iwslt14`` and ``g2lstm-prepare-wmt14`` print it after they finish, and
``examples/paper_recipe.sh`` (behind ``examples/iwslt14/run.sh`` and
``examples/wmt14/run.sh``) reads it from the command line of this file:

    python fairseq_g2lstm/data/next_commands.py iwslt14    # the fairseq-train flags, one line

The file imports nothing but the standard library, so any Python can run it that way.
"""
import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

PLUGIN_DIR = Path(__file__).resolve().parents[1]
"""The folder to pass as fairseq's ``--user-dir``."""


@dataclass(frozen=True)
class TrainingRecipe:
    """Architecture and fairseq-train flags for one scale."""

    arch: str
    train_args: Tuple[str, ...]


# Adam with the learning rate halved at every validation that does not improve, and
# training stopped after 4 such validations or at the epoch cap: the schedule that trained
# every model of examples/replicate to convergence. It stops by itself. Clip-norm 2.0 and
# the batch sizes below (sentences) are the paper's; the paper's optimiser was AdaDelta,
# which no run of this project has tried (docs/recipes.md).
STOP_ON_PLATEAU = ("--optimizer", "adam", "--lr", "0.002", "--clip-norm", "2.0",
                   "--lr-scheduler", "reduce_lr_on_plateau", "--lr-shrink", "0.5", "--lr-patience", "0",
                   "--patience", "4")  # fmt: skip

# The paper's IWSLT14 De-En scale: 2 + 2 layers of 256, 32 sentences a batch. Also what
# g2lstm-prepare-parallel prints for a corpus of your own.
PAPER_IWSLT14 = TrainingRecipe(
    arch="g2lstm_iwslt",
    train_args=(*STOP_ON_PLATEAU, "--batch-size", "32", "--max-epoch", "30"),
)
# The paper's WMT14 En-De scale: 3 + 3 layers, hidden 1024, 64 sentences a batch; an
# epoch is 15 times IWSLT14's, hence the lower cap.
PAPER_WMT14 = TrainingRecipe(
    arch="g2lstm_wmt",
    train_args=(*STOP_ON_PLATEAU, "--batch-size", "64", "--max-epoch", "10"),
)
RECIPES = {"iwslt14": PAPER_IWSLT14, "wmt14": PAPER_WMT14}


def _display_path(path: Path) -> str:
    """Relative to the working directory when inside it, so the commands stay short."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _command(words: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(word)) for word in words)


def next_commands(
    destdir: Path,
    spm_model: Path,
    source_lang: str,
    target_lang: str,
    recipe: TrainingRecipe,
    lowercase: bool,
) -> str:
    """fairseq-train, fairseq-generate and fairseq-interactive, ready to paste."""
    data, plugin = _display_path(destdir), _display_path(PLUGIN_DIR)
    checkpoints = f"checkpoints/{Path(destdir).name}_{recipe.arch}"
    common = [data, "--user-dir", plugin, "--source-lang", source_lang, "--target-lang", target_lang]
    decode = ["--path", f"{checkpoints}/checkpoint_best.pt", "--beam", "5"]
    train = ["fairseq-train", *common, "--arch", recipe.arch, *recipe.train_args,
             "--save-dir", checkpoints]  # fmt: skip
    generate = ["fairseq-generate", *common, *decode, "--batch-size", "128",
                "--scoring", "sacrebleu", "--remove-bpe", "sentencepiece"]  # fmt: skip
    interactive = ["fairseq-interactive", *common, *decode, "--bpe", "sentencepiece",
                   "--sentencepiece-model", _display_path(spm_model)]  # fmt: skip
    note = "# the model was trained on lowercased text: type lowercased input\n" if lowercase else ""
    return "\n".join(
        ["# train (stops by itself: docs/recipes.md)", _command(train), "# translate the test set", _command(generate),
         "# translate typed sentences", note + _command(interactive)]
    )  # fmt: skip


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="next_commands.py", description="Print a recipe's fairseq-train flags (--arch included) on one line.")
    parser.add_argument("scale", choices=sorted(RECIPES))
    recipe = RECIPES[parser.parse_args(argv).scale]
    print(_command(["--arch", recipe.arch, *recipe.train_args]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
