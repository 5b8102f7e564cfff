import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_train.py"


def test_bench_train_prints_one_json_line(tiny_dataset):
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--data-root",
        str(tiny_dataset),
        "--size",
        "32",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--steps",
        "2",
        "--backbones",
        "test_resnet",
        "--precision",
        "fp32",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    entry = result["backbones"]["test_resnet"]
    assert entry["loader_samples_per_s"] > 0 and entry["memory_samples_per_s"] > 0
    assert (
        abs(entry["ratio"] - entry["loader_samples_per_s"] / entry["memory_samples_per_s"]) < 0.01
    )
    assert result["device"] == "cpu" and result["image_size"] == 32
