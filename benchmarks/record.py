"""What every benchmark table records beside its numbers, and the rule for reading them.

A speed measured here is only meaningful with the machine it came from (CPUs of the same
kind differ: an AMD EPYC and an Intel with AVX-512 gave different ratios for the same code),
how busy that machine was, and the code that ran. :func:`machine_record` gathers these.

A median alone hides how much the rounds disagreed, so every figure is a :func:`summarize`
of its rounds (median, min, max, count), and every ratio of two figures is a :func:`ratio`
that carries its range over the rounds: from the slowest pass of one against the fastest of
the other to the reverse. When that range includes 1 the two differ by less than their
combined spread, and the ratio is printed as "not established" (:func:`format_ratio`). With
a single pass on either side the spread is unknown, so nothing is established either.

Standard library only: the benchmarks' child processes import this before any plugin code.
"""
import os
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import List, Optional

NOT_ESTABLISHED = "not established"


def summarize(values: List[float]) -> dict:
    """The rounds of one figure: median, min, max and their count."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def relative_spread(s: dict) -> dict:
    """How far the slowest and fastest rounds lie below and above the median, as fractions."""
    return {"below": 1 - s["min"] / s["median"], "above": s["max"] / s["median"] - 1}


def ratio(num: dict, den: dict) -> dict:
    """``num / den`` of two summaries, itself a summary: the ratio of the medians, and the
    range from ``num``'s worst round against ``den``'s best to the reverse. ``established``
    says whether that range stays on one side of 1 (and both sides had more than one pass).
    A ratio of ratios (one row's slowdown against another's) composes the same way."""
    low, high = num["min"] / den["max"], num["max"] / den["min"]
    return {"median": num["median"] / den["median"], "min": low, "max": high, "n": min(num["n"], den["n"]),
            "established": num["n"] > 1 and den["n"] > 1 and (low > 1 or high < 1)}


def format_ratio(r: Optional[dict]) -> str:
    """``1.11x (1.04-1.19)`` when the range excludes 1, else ``not established (1.02x, 0.93-1.12)``."""
    if r is None:
        return "-"
    text = f"{r['median']:.2f}x"
    spread = f"{r['min']:.2f}-{r['max']:.2f}"
    return f"{text} ({spread})" if r["established"] else f"{NOT_ESTABLISHED} ({text}, {spread})"


def format_summary(s: dict, fmt: str) -> str:
    """``287.0 (-2%/+5%)``: the median and how far the rounds lie from it."""
    rel = relative_spread(s)
    return f"{s['median']:{fmt}} (-{100 * rel['below']:.0f}%/+{100 * rel['above']:.0f}%)"


def cpu_model() -> str:
    """``lscpu``'s model name (``/proc/cpuinfo``'s where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    if not out and Path("/proc/cpuinfo").exists():
        out = Path("/proc/cpuinfo").read_text()
    match = re.search(r"^\s*model name\s*:\s*(.+)$", out, re.IGNORECASE | re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def git_label(folder: Path) -> Optional[str]:
    """``git rev-parse --short HEAD`` of the checkout at ``folder``, with ``+dirty`` when its
    tracked files differ from that commit; None when ``folder`` is not a checkout's root."""
    def git(*args):
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != Path(folder).resolve():
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return git("rev-parse", "--short", "HEAD").stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return None


def load_1min() -> float:
    return os.getloadavg()[0]


def machine_record(threads: int, commit: Optional[str], load_before: float) -> dict:
    """The fields every table states: the CPU, the threads, the 1-minute load average
    before and after the run (call this at its end), the date and the commit."""
    return {"cpu_model": cpu_model(), "threads": threads, "load_before": load_before, "load_after": load_1min(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit}


def format_machine(m: dict) -> str:
    """The machine record as one sentence for under a table."""
    return (f"{m['cpu_model']}, {m['threads']} threads, commit {m['commit']}, {m['date']}; "
            f"1-minute load average {m['load_before']:.2f} before, {m['load_after']:.2f} after")
