"""The peak resident memory of this process image, and a launcher that reports it for a
Python module: ``python benchmarks/peak_rss.py OUT_FILE MODULE [ARGS...]`` runs MODULE as
``python -m MODULE ARGS`` would (from the current folder) and writes its peak RSS in MB to
OUT_FILE when it exits.

Why not the parent's ``wait4``/``ru_maxrss``: at exec, Linux folds the peak of the image
being replaced into ``ru_maxrss``, and Python starts subprocesses with vfork, whose image
is the parent's. A child of a benchmark that has imported torch and fairseq would report at
least the benchmark's own few hundred MB. ``VmHWM`` (``/proc/self/status``) is the
high-water mark of the current image only.
"""
import atexit
import os
import resource
import runpy
import sys


def peak_rss_mb() -> float:
    """``VmHWM`` where ``/proc`` has it, else ``ru_maxrss`` (bytes on macOS, KiB on Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def main() -> None:
    out, module, *args = sys.argv[1:]

    def report():
        with open(out, "w") as f:
            f.write(f"{peak_rss_mb()}\n")

    atexit.register(report)
    sys.argv = [module, *args]
    sys.path[0] = os.getcwd()  # as python -m: the current folder, not this script's
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
