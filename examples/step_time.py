"""Measure a fairseq-train command's time per update and project a full training from it.

    python examples/step_time.py --steps 50 --epochs 30 -- fairseq-train DATA ... (the recipe's flags)

It runs the command for ``--warmup`` + ``--steps`` updates (logging every update), reads
fairseq's own clock (``wall``) and the batches per epoch from the log lines, and prints

    measured: 0.412 s/update over 50 updates (after 5 warm-up updates); 4960 updates/epoch
    projected: 30 epochs = 148800 updates = 17.0 h on this machine

Validation and checkpoint saving are not in the measurement (a few percent more in a
real run). ``TIME_STEPS=N bash examples/iwslt14/run.sh ...`` (and the WMT14 one) call it with
the recipe's own training command, to size a full run before starting it. The projection is
for the epoch cap; the recipe's early stop may end a run sooner.
"""
import argparse
import re
import subprocess
import sys
from typing import List, Optional, Sequence, Tuple

PROGRESS = re.compile(r"epoch \d+:\s+(\d+) / (\d+) .*?num_updates=(\d+).*?wall=(\d+(?:\.\d+)?)")


def parse_progress(lines: Sequence[str]) -> List[Tuple[int, int, float]]:
    """(updates per epoch, num_updates, wall seconds) of every train_inner line."""
    out = []
    for line in lines:
        match = PROGRESS.search(line) if "train_inner" in line else None
        if match:
            out.append((int(match[2]), int(match[3]), float(match[4])))
    return out


def measure(command: Sequence[str], steps: int, warmup: int) -> Tuple[float, int]:
    """(seconds per update after the warm-up, updates per epoch)."""
    full = [*command, "--max-update", str(warmup + steps), "--log-interval", "1", "--log-format", "simple",
            "--disable-validation"]
    proc = subprocess.run(full, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"step_time: the command failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    points = parse_progress((proc.stdout + proc.stderr).splitlines())
    timed = [p for p in points if p[1] >= warmup]
    if len(timed) < 2:
        sys.exit(f"step_time: too few logged updates to time ({len(points)}); raise --steps")
    (per_epoch, first, start), (_, last, end) = timed[0], timed[-1]
    return (end - start) / (last - first), per_epoch


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="timed updates")
    parser.add_argument("--warmup", type=int, default=5, help="untimed updates first")
    parser.add_argument("--epochs", type=int, required=True, help="the full training's epochs, for the projection")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the fairseq-train command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the fairseq-train command after --")
    seconds, per_epoch = measure(command, args.steps, args.warmup)
    total = seconds * per_epoch * args.epochs
    print(f"measured: {seconds:.3f} s/update over {args.steps} updates (after {args.warmup} warm-up updates); "
          f"{per_epoch} updates/epoch")
    print(f"projected: {args.epochs} epochs = {per_epoch * args.epochs} updates = {total / 3600:.1f} h on this machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
