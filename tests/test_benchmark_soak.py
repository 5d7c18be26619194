"""benchmarks/soak.py for a few seconds with 2 clients on the tests' model: it runs, prints
its table and writes a report whose counts add up. No timing assertions."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from served_model import served_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return served_model(tmp_path_factory)


def test_a_short_soak_reports_every_request(model, tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "soak.py"), str(model["folder"]), "--clients", "2",
                           "--minutes", "0.1", "--first-minutes", "0.04", "--bad-share", "0.3", "--json", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["clients"] == 2 and result["requests"] == sum(result["by_status"].values()) > 0
    assert result["requests"] == sum(sum(counts.values()) for counts in result["by_kind"].values())
    good = sum(n for kind, counts in result["by_kind"].items() if kind.startswith("good") for n in counts.values())
    bad = result["requests"] - good
    assert good > 0 and bad > 0 and result["good_answered"] == good == result["by_status"].get("200", 0)
    assert sum(n for status, n in result["by_status"].items() if status.startswith("4")) == bad
    assert result["server_errors"] == result["lost"] == 0 and result["unexpected"] == {}
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    rss = result["rss"]
    assert all(rss[key] > 0 for key in ("start_kb", "after_first_minute_kb", "end_kb"))
    assert rss["growth_after_first_minute"] == pytest.approx(
        (rss["end_kb"] - rss["after_first_minute_kb"]) / rss["after_first_minute_kb"])
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| clients | minutes | requests") and table[2].startswith(f"| 2 | 0.1 | {result['requests']} |")
    assert "Requests by status: " in proc.stdout
