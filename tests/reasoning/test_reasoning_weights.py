"""weights.py: the download call (with a fake snapshot_download) and the doctor's checks."""
from __future__ import annotations

import json

from void_server.reasoning.weights import CHECKPOINTS, SAM2, SAM3, VLM, check_reasoning_models, \
    download_reasoning_models


def fake_checkpoint(folder, model_type, shards=("model.safetensors",), index=False, processor=True):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    for s in shards:
        (folder / s).write_bytes(b"x")
    if index:
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    if processor:
        (folder / "preprocessor_config.json").write_text("{}")


def test_table_is_complete():
    assert {c.hub_id for c in CHECKPOINTS} == {"Qwen/Qwen3-VL-8B-Instruct", "facebook/sam2.1-hiera-large",
                                               "facebook/sam3"}
    for c in CHECKPOINTS:
        assert c.licence and c.approx_gb > 0 and "*.safetensors" in c.files
    assert VLM.required and SAM2.required and not SAM3.required and SAM3.gated


def test_download_calls_snapshot_download(tmp_path):
    calls = []

    def fake(repo_id, local_dir, allow_patterns, token):
        calls.append((repo_id, local_dir, allow_patterns, token))
        return local_dir

    done = download_reasoning_models(tmp_path, snapshot_download=fake)
    assert [c[0] for c in calls] == ["Qwen/Qwen3-VL-8B-Instruct", "facebook/sam2.1-hiera-large"]
    assert calls[0][1] == str(tmp_path / "Qwen3-VL-8B-Instruct") and "*.json" in calls[0][2]
    assert done["facebook/sam2.1-hiera-large"] == tmp_path / "sam2.1-hiera-large"
    calls.clear()
    download_reasoning_models(tmp_path, include_optional=True, token="t", snapshot_download=fake)
    assert calls[-1][0] == "facebook/sam3" and calls[-1][3] == "t"


def test_check_reports_each_problem(tmp_path):
    problems = check_reasoning_models(tmp_path)
    assert len(problems) == 2 and all("missing" in p for p in problems)  # sam3 is optional
    fake_checkpoint(tmp_path / VLM.folder, "qwen3_vl",
                    shards=("model-00001-of-00002.safetensors",), index=True)
    fake_checkpoint(tmp_path / SAM2.folder, "sam2_video", processor=False)
    problems = check_reasoning_models(tmp_path)
    assert any("1 weight shard(s) missing" in p and "00002" in p for p in problems)
    assert any("sam2.1-hiera-large" in p and "processor_config" in p for p in problems)
    (tmp_path / VLM.folder / "model-00002-of-00002.safetensors").write_bytes(b"x")
    (tmp_path / SAM2.folder / "processor_config.json").write_text("{}")
    assert check_reasoning_models(tmp_path) == []
    fake_checkpoint(tmp_path / SAM3.folder, "llama", shards=())
    problems = check_reasoning_models(tmp_path)
    assert any("model_type is 'llama'" in p for p in problems) and any("no .safetensors" in p for p in problems)
