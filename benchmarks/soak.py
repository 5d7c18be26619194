"""A soak test of g2lstm-serve: N clients for M minutes against one server, mixing good
requests (both APIs; JSON, form and query string) with bad ones (malformed, too long,
wrongly typed, unknown fields, wrong content type), to show that it loses nothing, answers
no 5xx and holds its memory under a long load.

The server runs in a subprocess on 127.0.0.1 (the tests' launcher: a free port, stopped by
SIGTERM at the end). Reported: requests by kind and status, requests lost (no answer),
p50/p95/p99 latency of the good requests, and the server's RSS at the start (after a
warm-up), after the first minute and at the end, with the growth after the first minute.

    python benchmarks/soak.py /tmp/demo-model                      # 32 clients, 10 minutes
    python benchmarks/soak.py /tmp/demo-model --clients 8 --minutes 2 --json /tmp/soak.json

The goal it checks: no 5xx, no request lost, RSS growth after the first minute <= 5%.
The sentences are the model's own source words (from its dictionary) in random order,
unless --sentences gives a file of them, one a line.
"""
import argparse
import asyncio
import json
import logging
import os
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
from benchmarks.common import publish  # noqa: E402
from served_model import start_server  # noqa: E402  (subprocess, free loopback port, SIGTERM)

GOAL_RSS_GROWTH = 0.05


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="the model folder to serve (g2lstm-export)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--first-minutes", type=float, default=1.0,
                   help="when the 'after the first minute' RSS is read (default %(default)s)")
    p.add_argument("--bad-share", type=float, default=0.2, help="share of bad requests (default %(default)s)")
    p.add_argument("--sentences", type=Path, help="source sentences, one a line (default: from the dictionary)")
    p.add_argument("--threads", type=int, default=1, help="the server's torch threads (default %(default)s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, default=Path("/tmp/g2lstm-soak/soak.json"))
    p.add_argument("--server-flag", action="append", default=[], metavar="FLAG",
                   help="a g2lstm-serve flag to pass on (repeatable; e.g. --server-flag=--no-batching)")
    return p


def sentence_pool(folder: Path, path: Optional[Path], rng: random.Random) -> List[str]:
    """Sentences of 3 to 12 words: the file's, or the source dictionary's commonest words."""
    if path is not None:
        lines = [" ".join(line.split()) for line in path.read_text(encoding="utf-8").splitlines()]
        return [line for line in lines if 0 < len(line.split()) <= 40][:2000]
    manifest = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    dictionary = folder / f"dict.{manifest['languages']['source']}.txt"
    words = [line.split()[0].lstrip("\u2581") for line in dictionary.read_text(encoding="utf-8").splitlines()[:2000]]
    words = [w for w in words if w and not w.startswith("<")] or ["hello"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(500)]


def good_request(rng: random.Random, sentence: str, pair: Dict[str, str]) -> Dict:
    kind = rng.choice(["libre json", "libre form", "libre query", "v1 json", "v1 list"])
    fields = {"q": sentence, **pair}
    if kind == "libre json":
        return {"kind": kind, "url": "/translate", "json": fields}
    if kind == "libre form":
        return {"kind": kind, "url": "/translate", "data": fields}
    if kind == "libre query":
        return {"kind": kind, "url": "/translate", "params": fields}
    if kind == "v1 json":
        return {"kind": kind, "url": "/v1/translate", "json": {"q": sentence, "beam": rng.choice([1, 2, 5])}}
    return {"kind": kind, "url": "/v1/translate", "json": {"q": [sentence, sentence[::-1]], "nbest": 2}}


def bad_request(rng: random.Random, sentence: str, pair: Dict[str, str]) -> Dict:
    kind = rng.choice(["malformed json", "deep json", "too long", "wrong type", "unknown field",
                       "content type", "no pair", "too many texts", "bad beam"])
    json_type = {"content-type": "application/json"}
    bodies = {
        "malformed json": {"content": b'{"q": "' + sentence.encode() + b'",', "headers": json_type},
        "deep json": {"content": b"[" * 100_000, "headers": json_type},
        "too long": {"json": {"q": "x " * 2500, **pair}},
        "wrong type": {"json": {"q": {"text": sentence}, **pair}},
        "unknown field": {"json": {"q": sentence, "beem": 5}},
        "content type": {"content": sentence.encode(), "headers": {"content-type": "text/plain"}},
        "no pair": {"json": {"q": sentence, "source": "xx", "target": "yy"}},
        "too many texts": {"json": {"q": [sentence] * 200, **pair}},
        "bad beam": {"json": {"q": sentence, "beam": 0}},
    }
    url = "/translate" if kind in ("too long", "wrong type", "content type", "no pair", "too many texts",
                                   "deep json") else "/v1/translate"
    return {"kind": kind, "url": url, **bodies[kind]}


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as stream:
        return next(int(line.split()[1]) for line in stream if line.startswith("VmRSS:"))


def percentile(ordered: List[float], share: float) -> Optional[float]:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


async def soak(url: str, pid: int, opts, sentences: List[str], pair: Dict[str, str]) -> Dict:
    rng = random.Random(opts.seed)
    statuses: Counter = Counter()
    by_kind: Dict[str, Counter] = {}
    latencies: List[float] = []
    unexpected: Counter = Counter()
    rss = {"start_kb": rss_kb(pid), "after_first_minute_kb": None}
    deadline = time.monotonic() + 60 * opts.minutes
    first_minute = time.monotonic() + 60 * opts.first_minutes

    async def client(http: httpx.AsyncClient, seed: int):
        local = random.Random(seed)
        while time.monotonic() < deadline:
            sentence = local.choice(sentences)
            bad = local.random() < opts.bad_share
            request = (bad_request if bad else good_request)(local, sentence, pair)
            kind, path = request.pop("kind"), request.pop("url")
            start = time.perf_counter()
            try:
                response = await http.post(path, **request)
                status = str(response.status_code)
            except httpx.HTTPError as error:  # no answer: a lost request
                status = f"lost ({type(error).__name__})"
            elapsed = time.perf_counter() - start
            statuses[status] += 1
            by_kind.setdefault(("bad: " if bad else "good: ") + kind, Counter())[status] += 1
            if not bad and status == "200":
                latencies.append(elapsed)
            if (bad and not status.startswith("4")) or (not bad and status != "200"):
                unexpected[status] += 1

    async def watch_memory():
        await asyncio.sleep(max(0.0, first_minute - time.monotonic()))
        if time.monotonic() < deadline:
            rss["after_first_minute_kb"] = rss_kb(pid)

    limits = httpx.Limits(max_connections=opts.clients, max_keepalive_connections=opts.clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(watch_memory(), *(client(http, rng.randrange(1 << 30)) for _ in range(opts.clients)))
        seconds = time.perf_counter() - start
    rss["end_kb"] = rss_kb(pid)
    ordered = sorted(latencies)
    requests = sum(statuses.values())
    growth = None
    if rss["after_first_minute_kb"]:
        growth = (rss["end_kb"] - rss["after_first_minute_kb"]) / rss["after_first_minute_kb"]
    server_errors = sum(n for status, n in statuses.items() if status.startswith("5"))
    lost = sum(n for status, n in statuses.items() if status.startswith("lost"))
    return {
        "requests": requests, "seconds": seconds, "requests_per_s": requests / seconds,
        "by_status": dict(sorted(statuses.items())), "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "unexpected": dict(unexpected), "server_errors": server_errors, "lost": lost,
        "good_answered": len(latencies),
        "latency_ms": {name: None if value is None else 1000 * value for name, value in
                       (("p50", statistics.median(ordered) if ordered else None), ("p95", percentile(ordered, 0.95)),
                        ("p99", percentile(ordered, 0.99)))},
        "rss": {**rss, "growth_after_first_minute": growth},
        "goal": {"met": server_errors == 0 and lost == 0 and growth is not None and growth <= GOAL_RSS_GROWTH,
                 "rss_growth_limit": GOAL_RSS_GROWTH},
    }


def markdown(result: Dict) -> str:
    def mb(kb):
        return "-" if kb is None else f"{kb / 1024:.0f}"

    def ms(value):
        return "-" if value is None else f"{value:.0f}"

    rss, latency, growth = result["rss"], result["latency_ms"], result["rss"]["growth_after_first_minute"]
    lines = ["| clients | minutes | requests | req/s | 5xx | lost | p50 (ms) | p95 (ms) | p99 (ms) | "
             "RSS start (MB) | after 1st min (MB) | end (MB) | growth after 1st min |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| {result['clients']} | {result['minutes']:g} | {result['requests']} | {result['requests_per_s']:.1f} | "
             f"{result['server_errors']} | {result['lost']} | {ms(latency['p50'])} | {ms(latency['p95'])} | "
             f"{ms(latency['p99'])} | {mb(rss['start_kb'])} | {mb(rss['after_first_minute_kb'])} | "
             f"{mb(rss['end_kb'])} | {'-' if growth is None else f'{100 * growth:+.1f}%'} |",
             "",
             "Requests by status: " + ", ".join(f"{status}: {n}" for status, n in result["by_status"].items()) +
             f" ({result['bad_share']:.0%} bad requests by design, which should be 4xx).",
             f"Goal (no 5xx, none lost, RSS growth after the first minute <= {100 * GOAL_RSS_GROWTH:g}%): "
             f"{'met' if result['goal']['met'] else 'NOT met'}."]
    if result["unexpected"]:
        lines.append("Unexpected answers: " + ", ".join(f"{s}: {n}" for s, n in result["unexpected"].items()))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    opts = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, force=True)  # the HTTP client would log every request
    rng = random.Random(opts.seed)
    sentences = sentence_pool(opts.folder, opts.sentences, rng)
    manifest = json.loads((opts.folder / "model.json").read_text(encoding="utf-8"))
    pair = {"source": manifest["languages"]["source"], "target": manifest["languages"]["target"]}
    load_before = [round(x, 2) for x in os.getloadavg()]
    server = start_server(opts.folder, "--threads", opts.threads, *opts.server_flag)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as warm:  # first calls allocate what later ones reuse
            for sentence in sentences[:8]:
                warm.post("/translate", json={"q": sentence, **pair}).raise_for_status()
        result = asyncio.run(soak(server.url, server.proc.pid, opts, sentences, pair))
    finally:
        server.stop()
    result = {"benchmark": "soak", "folder": str(opts.folder), "clients": opts.clients, "minutes": opts.minutes,
              "bad_share": opts.bad_share, "threads": opts.threads, "server_flags": opts.server_flag,
              "cpus": os.cpu_count(), "load_before": load_before,
              "load_after": [round(x, 2) for x in os.getloadavg()], **result}
    publish(markdown(result), result, opts.json)
    return result


if __name__ == "__main__":
    main()
