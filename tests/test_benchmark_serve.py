"""benchmarks/serve.py's choice of servers: every folder on onnx, labelled by its graphs'
precision, torch once per distinct model.pt, and a folder without graphs refused for onnx."""
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def folder(root: Path, name: str, checkpoint_sha: str, precision=None) -> Path:
    """A folder with only the model.json fields that the choice reads."""
    path = root / name
    path.mkdir()
    manifest = {"files": {"model.pt": checkpoint_sha}}
    if precision:
        manifest["onnx"] = {"precision": precision}
    (path / "model.json").write_text(json.dumps(manifest))
    return path


def test_servers_are_chosen_per_engine_and_checkpoint(tmp_path):
    from serve import contenders

    fp32, int8 = folder(tmp_path, "fp32", "aa", "none"), folder(tmp_path, "int8", "aa", "int8")
    other = folder(tmp_path, "other", "bb", "int8")
    chosen = [(c["folder"].name, c["engine"], c["label"]) for c in contenders([fp32, int8, other], ["onnx", "torch"])]
    assert chosen == [("fp32", "onnx", "onnx"), ("fp32", "torch", "torch (fp32)"), ("int8", "onnx", "onnx int8 (int8)"),
                      ("other", "onnx", "onnx int8 (other)"), ("other", "torch", "torch (other)")]
    assert [c["label"] for c in contenders([fp32, int8], ["torch"])] == ["torch"]
    with pytest.raises(SystemExit, match="plain has no ONNX graphs"):
        contenders([folder(tmp_path, "plain", "cc")], ["onnx"])
