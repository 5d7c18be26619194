"""Throughput and latency of g2lstm-serve on its engines (ONNX Runtime, torch), with
dynamic batching on and off, beside fairseq-interactive on the same sentences.

The demo model (``make demo``) is exported to a model folder (with ONNX graphs), and the
servers run it side by side: for each engine (``--engine``; both by default) one batching
(the defaults) and one with ``--no-batching``. More folders (``--folder``, repeatable: the
same model's fp32 and int8 graphs, say) add their onnx servers; torch serves each distinct
``model.pt`` once. For each number of concurrent clients (1, 8, 32), each client sends
one-sentence LibreTranslate requests (beam 5) back to back; the servers are measured one
after the other, level by level, so that a machine that gets busier slows all alike.
Reported per server and level: requests (= sentences) per second, p50 and p95 latency,
and errors (any non-200); under the table, ``lscpu``'s model and the load average.

fairseq-interactive translates the same sentences with the same beam, one at a time
(``--buffer-size 1``, its default) and in batches of 32, with ``--num-workers 0`` (as the
hub; fairseq's default starts a data-loader process for every buffer); its sentences/s are
from its own "translation time" (model loading excluded).

    python benchmarks/serve.py                         # the demo model, 1/8/32 clients
    python benchmarks/serve.py --quick                 # fewer requests
    python benchmarks/serve.py --folder DIR --clients 1 4 16 --json out.json
    python benchmarks/serve.py --folder FP32_DIR --folder INT8_DIR --engine both --clients 1 32

The goal it checks, per engine: at 32 clients batching serves at least 3x the sentences/s
of unbatched serving, with p95 latency under 1 s.
"""
import argparse
import asyncio
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from served_model import start_server  # noqa: E402  (the tests' server launcher: subprocess, free port, SIGTERM)

from benchmarks.record import cpu_model, git_label  # noqa: E402

MODES = {"batching": [], "no batching": ["--no-batching"]}
ENGINES = ("onnx", "torch")
GOAL_RATIO, GOAL_P95_S = 3.0, 1.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", type=Path, action="append",
                   help="a model folder (repeatable; default: export the demo model to --work, with --onnx)")
    p.add_argument("--engine", action="append", choices=[*ENGINES, "both"],
                   help="serve on this engine (repeatable; both: onnx and torch; default: both)")
    p.add_argument("--checkpoint", type=Path, default=REPO / "demo/checkpoints/checkpoint_last.pt")
    p.add_argument("--data", type=Path, default=REPO / "demo/data-bin")
    p.add_argument("--sentences", type=Path, default=REPO / "demo/corpus/test.de",
                   help="source sentences, one a line (lowercased, as the demo model was trained)")
    p.add_argument("--max-words", type=int, default=12, help="keep sentences of at most this many words")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests-per-client", type=int, default=6)
    p.add_argument("--min-requests", type=int, default=48, help="at least this many requests per level")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of each server and of fairseq-interactive (default 1: on a shared or "
                        "small machine, more threads per process contend instead of helping)")
    p.add_argument("--work", type=Path, default=Path("/tmp/g2lstm-serve-bench"))
    p.add_argument("--json", type=Path, default=Path("/tmp/g2lstm-serve-bench/serve.json"))
    p.add_argument("--quick", action="store_true", help="2 requests per client, at least 16 per level")
    return p


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def export_demo(opts) -> Path:
    folder = opts.work / "demo-model"
    log(f"exporting {opts.checkpoint} to {folder}")
    subprocess.run([sys.executable, "-m", "fairseq_g2lstm.export.cli", str(opts.checkpoint), "--data", str(opts.data),
                    "--out", str(folder), "--force", "--onnx"], check=True, stdout=subprocess.DEVNULL)
    return folder


def contenders(folders: Sequence[Path], engines: Sequence[str]) -> List[Dict]:
    """The (folder, engine) pairs to serve: every folder on onnx, and torch once per
    distinct ``model.pt`` (the same checkpoint with other graphs serves alike on torch).
    Each gets a label: the engine, with the graphs' precision where it is not float."""
    chosen, checkpoints = [], set()
    for folder in folders:
        manifest = json.loads((folder / "model.json").read_text())
        for engine in engines:
            if engine == "onnx" and not manifest.get("onnx"):
                raise SystemExit(f"benchmarks/serve.py: error: {folder} has no ONNX graphs (g2lstm-export --onnx)")
            if engine == "torch":
                if manifest["files"]["model.pt"] in checkpoints:
                    continue
                checkpoints.add(manifest["files"]["model.pt"])
            precision = manifest["onnx"].get("precision", "none") if engine == "onnx" else "none"
            label = engine if precision == "none" else f"{engine} {precision}"
            chosen.append({"folder": folder, "engine": engine, "label": label})
    labels = [c["label"] for c in chosen]
    for c in chosen:  # two folders with graphs of one precision: named by their folders
        if labels.count(c["label"]) > 1:
            c["label"] += f" ({c['folder'].name})"
    return chosen


def read_sentences(path: Path, max_words: int) -> List[str]:
    lines = [" ".join(line.lower().split()) for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if 0 < len(line.split()) <= max_words][:500]


async def load(url: str, sentences: List[str], clients: int, requests: int, beam: int) -> Dict[str, float]:
    """``clients`` concurrent clients sending ``requests`` one-sentence requests in all."""
    latencies: List[float] = []
    errors = 0
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient):
        nonlocal errors
        for k in counter:
            body = {"q": sentences[k % len(sentences)], "source": "de", "target": "en"}
            start = time.perf_counter()
            response = await http.post("/translate", json=body)
            latencies.append(time.perf_counter() - start)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {"clients": clients, "requests": len(latencies), "errors": errors, "seconds": elapsed,
            "requests_per_s": len(latencies) / elapsed, "sentences_per_s": len(latencies) / elapsed,
            "p50_ms": 1000 * statistics.median(ordered),
            "p95_ms": 1000 * ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]}


def interactive_speed(folder: Path, sentences: List[str], beam: int, batch: int, threads: int) -> Dict[str, float]:
    """fairseq-interactive on ``sentences``: sentences/s from its own translation time."""
    manifest = json.loads((folder / "model.json").read_text())
    command = ["fairseq-interactive", str(folder), "--user-dir", str(REPO / "fairseq_g2lstm"), "--path",
               str(folder / "model.pt"), "--cpu", "--beam", str(beam), "--source-lang", manifest["languages"]["source"],
               "--target-lang", manifest["languages"]["target"], "--bpe", "sentencepiece", "--sentencepiece-model",
               str(folder / "sentencepiece.bpe.model"), "--buffer-size", str(batch), "--batch-size", str(batch),
               "--num-workers", "0"]  # as the hub; fairseq's default starts a loader process per buffer
    proc = subprocess.run([str(Path(sys.executable).parent / command[0]), *command[1:]], input="\n".join(sentences) + "\n",
                          capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    seconds = float(re.search(r"translation time: ([0-9.]+)", proc.stderr + proc.stdout).group(1))
    return {"batch": batch, "sentences": len(sentences), "translation_seconds": seconds,
            "sentences_per_s": len(sentences) / seconds}


def markdown(result: Dict) -> str:
    lines = ["| server | clients | requests | errors | sentences/s | p50 (ms) | p95 (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in result["serving"]:
        lines.append(f"| {row['mode']}, {row['engine']} | {row['clients']} | {row['requests']} | {row['errors']} | "
                     f"{row['sentences_per_s']:.1f} | {row['p50_ms']:.0f} | {row['p95_ms']:.0f} |")
    for row in result["interactive"]:
        lines.append(f"| fairseq-interactive, batches of {row['batch']} | - | {row['sentences']} | - | "
                     f"{row['sentences_per_s']:.1f} | - | - |")
    lines.append("")
    for goal in result["goals"]:
        lines.append(f"{goal['engine']}, at {goal['clients']} clients: batching / no batching = {goal['ratio']:.2f}x "
                     f"sentences/s (goal >= {GOAL_RATIO:g}x), batching p95 = {goal['p95_ms']:.0f} ms "
                     f"(goal < {GOAL_P95_S * 1000:.0f} ms): {'met' if goal['met'] else 'NOT met'}.")
    lines.append(f"{result['cpu_model']}, commit {result['commit']}, {result['date']}; load average before/after: "
                 f"{result['load_before']} / {result['load_after']} on {result['cpus']} CPUs (a shared machine: "
                 "compare the servers, not the absolute numbers).")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    opts = build_parser().parse_args(argv)
    # importing fairseq sets the root logger to DEBUG, which would print every HTTP request
    logging.basicConfig(level=logging.WARNING, force=True)
    if opts.quick:
        opts.requests_per_client, opts.min_requests = 2, 16
    from fairseq_g2lstm.atomic_file import write_text_atomic

    folders = opts.folder or [export_demo(opts)]
    engines = [e for e in ENGINES if e in (opts.engine or ["both"]) or "both" in (opts.engine or ["both"])]
    served = contenders(folders, engines)
    sentences = read_sentences(opts.sentences, opts.max_words)
    commit = git_label(REPO)
    load_before = [round(x, 2) for x in os.getloadavg()]
    servers = {}
    try:
        for c in served:
            for mode, flags in MODES.items():
                log(f"starting the server ({mode}, {c['label']})")
                servers[(mode, c["label"])] = start_server(c["folder"], "--engine", c["engine"], "--threads",
                                                           opts.threads, "--beam", opts.beam, *flags)
        for url in (s.url for s in servers.values()):  # warm-up: first calls allocate
            asyncio.run(load(url, sentences, 4, 8, opts.beam))
        rows = []
        for clients in opts.clients:
            requests = max(opts.min_requests, clients * opts.requests_per_client)
            for (mode, label), server in servers.items():
                log(f"{mode}, {label}: {clients} clients, {requests} requests")
                rows.append({"mode": mode, "engine": label,
                             **asyncio.run(load(server.url, sentences, clients, requests, opts.beam))})
    finally:
        for server in servers.values():
            server.stop()
    count = min(len(sentences), 200)
    log(f"fairseq-interactive on {count} sentences, one at a time and in batches of 32")
    interactive = [interactive_speed(folders[0], sentences[:count], opts.beam, batch, opts.threads) for batch in (1, 32)]
    top = max(opts.clients)
    goals = []
    for c in served:
        batched, single = (next(r for r in rows if r["mode"] == mode and r["engine"] == c["label"] and r["clients"] == top)
                           for mode in MODES)
        ratio = batched["sentences_per_s"] / single["sentences_per_s"]
        goals.append({"engine": c["label"], "clients": top, "ratio": ratio, "p95_ms": batched["p95_ms"],
                      "met": ratio >= GOAL_RATIO and batched["p95_ms"] < GOAL_P95_S * 1000})
    result = {
        "benchmark": "serve", "folders": [str(f) for f in folders], "beam": opts.beam, "threads": opts.threads,
        "sentences_pool": len(sentences), "cpus": os.cpu_count(), "cpu_model": cpu_model(),
        "python": platform.python_version(), "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
        "serving": rows, "interactive": interactive, "goals": goals,
        "errors": sum(r["errors"] for r in rows),
    }
    print(markdown(result))
    write_text_atomic(opts.json, json.dumps(result, indent=2) + "\n")
    log(f"wrote {opts.json}")
    return result


if __name__ == "__main__":
    main()
