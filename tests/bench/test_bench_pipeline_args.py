"""bench/bench_pipeline.py refuses a job name it has no job for before it builds or runs anything: on the device a
bad name found after minutes of GPU work wastes them."""
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_pipeline.py"


def test_unknown_run_name_is_refused_before_any_work(tmp_path):
    model_dir = tmp_path / "models"  # a bench that got past its arguments would write a model dir here
    done = subprocess.run([sys.executable, str(BENCH), "--smoke", "--runs", "cold,none", "--model-dir", str(model_dir),
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "unknown --runs none" in done.stderr
    assert not model_dir.exists()
    assert not list(tmp_path.glob("*.json"))
