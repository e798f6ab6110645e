"""Operations: `void-server doctor` says what to fix, finished jobs expire, one server per data dir."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from void_server.api.models import JobState
from void_server.config import ServerConfig
from void_server.jobs.manager import JobManager
from void_server.jobs.pipeline_host import PipelineHost
from void_test_harness import BASE_SPEC_JSON


def test_doctor_names_the_fix_for_missing_weights(tmp_path):
    r = subprocess.run([sys.executable, "-m", "void_server.cli", "doctor", "--data-dir", str(tmp_path / "data"),
                        "--model-dir", str(tmp_path / "models")], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 1
    assert "void-server download --model-dir %s" % (tmp_path / "models") in r.stdout
    assert "ok       data dir %s writable" % (tmp_path / "data") in r.stdout
    assert "void-server download --reasoning --model-dir %s" % (tmp_path / "models") in r.stdout
    assert "compile cache %s is empty" % (tmp_path / "data" / "compile-cache") in r.stdout


def test_doctor_says_whether_the_compile_cache_is_warm(tmp_path):
    from void_server.cli import compile_cache_state

    cache = tmp_path / "compile-cache"
    assert "is empty" in compile_cache_state(cache)
    (cache / "fxgraph" / "ab").mkdir(parents=True)
    (cache / "fxgraph" / "ab" / "graph").write_bytes(b"x" * 3 * 2**20)
    assert "holds 3 MiB (0 precompiled VAE graphs)" in compile_cache_state(cache)
    (cache / "void-precompiled").mkdir()
    for name in ("vae-encoder-0a.bin", "vae-decoder-block-1b.bin"):
        (cache / "void-precompiled" / name).write_bytes(b"x")
    assert "(2 precompiled VAE graphs)" in compile_cache_state(cache)


def test_download_reasoning_fetches_the_vlm_and_sam2(tmp_path, monkeypatch):
    """No hub here: the hub call is replaced, and what it was asked for is checked."""

    import huggingface_hub

    from void_server import cli

    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kw: asked.append(kw["repo_id"]) or kw["local_dir"])
    code = cli.main(["download", "--reasoning-only", "--model-dir", str(tmp_path)])
    assert asked == ["Qwen/Qwen3-VL-8B-Instruct", "facebook/sam2.1-hiera-large"]
    assert code == 1  # nothing was really written, so the check afterwards names what is missing


def test_finished_jobs_expire_after_the_ttl(tmp_path):
    config = ServerConfig(data_dir=tmp_path, pipeline="testing", result_ttl_hours=1.0)
    manager = JobManager(config, PipelineHost("testing", config))
    old, recent, waiting = (manager.store.create(BASE_SPEC_JSON, "testing", "T") for _ in range(3))
    for job_id in (old, recent, waiting):
        manager.files(job_id).create()
    manager.store.update(old, state=JobState.succeeded, finished_at=time.time() - 2 * 3600)
    manager.store.update(recent, state=JobState.succeeded, finished_at=time.time() - 60)
    manager.expire()
    assert manager.store.get(old) is None and not manager.files(old).root.exists()
    assert manager.store.get(recent) is not None and manager.store.get(waiting) is not None
    manager.store.close()


def test_a_second_server_on_the_same_data_dir_is_refused(testing_server):
    r = subprocess.run([sys.executable, "-m", "void_server.cli", "serve", "--pipeline", "testing",
                        "--data-dir", str(testing_server.data_dir), "--port", "1"], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 2
    assert "another void-server is already using the data dir" in r.stderr


def test_doctor_says_which_attention_runs(monkeypatch):
    import torch

    from void_server.cli import attention_state
    from void_server.pipelines.void import accel

    monkeypatch.setattr(accel, "_fa4_kernel", None)
    monkeypatch.setitem(sys.modules, "flash_attn.cute", None)  # not installed
    said = attention_state()
    assert said.startswith("attention: SDPA") and accel.FA4_INSTALL in said
    monkeypatch.setattr(accel, "_fa4_kernel", lambda q, k, v, causal: q)  # installed ...
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # ... but no GPU to run it
    assert "installed but not used: it runs on CUDA GPUs only" in attention_state()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(accel, "_fa4_checked", {"cuda": "it differs from SDPA by rel. L2 0.5 on a test input"})
    assert "not used: it differs from SDPA" in attention_state()
    monkeypatch.setattr(accel, "_fa4_checked", {"cuda": None})
    assert attention_state().startswith("attention: FlashAttention-4")


def test_doctor_inspects_the_compile_cache_the_environment_names(tmp_path):
    # A TORCHINDUCTOR_CACHE_DIR in the server's environment is where the graphs go (accel.compile_cache_dir).
    mine = tmp_path / "my-inductor-cache"
    mine.mkdir()
    (mine / "graph.bin").write_bytes(b"\0" * (2 << 20))
    r = subprocess.run([sys.executable, "-m", "void_server.cli", "doctor", "--data-dir", str(tmp_path / "data"),
                        "--model-dir", str(tmp_path / "models")], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1", TORCHINDUCTOR_CACHE_DIR=str(mine)))
    assert "compile cache %s holds 2 MiB" % mine in r.stdout


def test_doctor_says_which_speeds_this_gpu_runs(monkeypatch):
    import torch

    from void_server.cli import speed_state

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert speed_state("auto").startswith("speeds: no CUDA GPU here") and "fastest does not" in speed_state("auto")
    gib = 2 ** 30
    free = {"gib": 23}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["gib"] * gib, 24 * gib))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 4090")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    # A 24 GB Ada card: auto lends the models (model offload), and float8 runs there.
    assert speed_state("auto") == ("speeds: NVIDIA GeForce RTX 4090, 23 GiB free, memory mode model_offload (auto's "
                                   "choice): lossless, fast, fastest too")
    free["gib"] = 15  # below model offload's 20 GiB: weights streamed layer by layer, where float8 cannot run
    said = speed_state("auto")
    assert "memory mode sequential_offload" in said and "not fastest: float8" in said and "layer by layer" in said
    assert "memory mode gpu: lossless, fast, fastest too" in speed_state("gpu")  # what the server was told to use
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    said = speed_state("gpu")
    assert "not fastest: float8 matrix work (fp8_matmul) needs an NVIDIA GPU of compute capability 8.9" in said
