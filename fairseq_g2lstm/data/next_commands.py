"""The paper's training settings, and the fairseq commands printed after preparation."""
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Tuple

PLUGIN_DIR = Path(__file__).resolve().parents[1]
"""The folder to pass as fairseq's ``--user-dir``."""


@dataclass(frozen=True)
class TrainingRecipe:
    """Architecture and fairseq-train flags for one setting of SPEC §3."""

    arch: str
    train_args: Tuple[str, ...]


# AdaDelta with clip-norm 2.0 and 32 (IWSLT14) or 64 (WMT14) sentences per batch are the
# paper's. It gives no epoch count (ours is a choice) and no dropout rate (the arch's
# default applies).
PAPER_IWSLT14 = TrainingRecipe(
    arch="g2lstm_iwslt",
    train_args=("--optimizer", "adadelta", "--lr", "1.0", "--clip-norm", "2.0",
                "--batch-size", "32", "--max-epoch", "30"),
)  # fmt: skip
PAPER_WMT14 = TrainingRecipe(
    arch="g2lstm_wmt",
    train_args=("--optimizer", "adadelta", "--lr", "1.0", "--clip-norm", "2.0",
                "--batch-size", "64", "--max-epoch", "10"),
)  # fmt: skip


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
        ["# train", _command(train), "# translate the test set", _command(generate),
         "# translate typed sentences", note + _command(interactive)]
    )  # fmt: skip
