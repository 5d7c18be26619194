"""benchmarks/scaling.py in quick mode: every grid point measured for both layers and
modes, the ratios are the ratios of the numbers shown, the table and figure come out.
No timing assertions."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "scaling.py"
sys.path.insert(0, str(REPO))

from benchmarks import scaling  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scaling")
    out, figure = folder / "quick.json", folder / "scaling.png"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--json", str(out),
                           "--figure", str(figure)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout, figure


def test_every_point_layer_and_mode_is_measured(quick_run):
    results, _, _ = quick_run
    grid = results["setup"]["grid"]
    expected = {(h, t, b, m) for h in grid["hidden"] for t in grid["steps"] for b in grid["batch"]
                for m in scaling.MODES}
    assert {(r["hidden"], r["steps"], r["batch"], r["mode"]) for r in results["rows"]} == expected
    assert len(results["rows"]) == len(expected) == 8
    for r in results["rows"]:
        for name in scaling.LAYERS:
            assert r[name]["ms"] > 0 and r[name]["peak_mb"] >= 0
            assert len(r[name]["ms_runs"]) == results["setup"]["repeats"] == 1
        assert r["time_ratio"] == pytest.approx(r["g2lstm"]["ms"] / r["nn.LSTM"]["ms"]) and r["time_ratio"] > 0
        if r["nn.LSTM"]["peak_mb"] > 0:
            assert r["memory_ratio"] == pytest.approx(r["g2lstm"]["peak_mb"] / r["nn.LSTM"]["peak_mb"])


def test_table_has_a_line_per_row_with_its_numbers(quick_run):
    results, stdout, _ = quick_run
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| mode | H | T | B | G2 ms")
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert len(body) == len(results["rows"])
    first = next(r for r in results["rows"] if (r["mode"], r["hidden"], r["steps"]) == ("train", 16, 4))
    assert body[0][:4] == ["train", "16", "4", "2"]
    assert body[0][6] == f"{first['time_ratio']:.2f}x"


def test_figure_is_a_small_png_of_fixed_size(quick_run):
    results, _, figure = quick_run
    data = figure.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000
    fig = scaling.scaling_figure(results)
    assert tuple(fig.get_size_inches()) == scaling.FIGURE_SIZE
    assert [len(ax.get_lines()) for ax in fig.axes] == [2 * 1 + 1] * 2  # (H, B) lines + the 1.0 line


def test_the_two_layers_compute_the_same_thing_in_eval():
    """The comparison is fair: same weights, and G2's soft eval gates are nn.LSTM's."""
    import torch

    layers = scaling.layers_for(8)
    x = torch.randn(5, 3, 8)
    for layer in layers.values():
        layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layers["g2lstm"](x)[0], layers["nn.LSTM"](x)[0], rtol=1e-5, atol=1e-6)
