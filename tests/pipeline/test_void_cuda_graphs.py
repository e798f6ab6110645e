"""CUDA graphs around the compiled blocks: where they are on, and the step mark the denoising loop gives them.
The graphs themselves need a GPU (bench/bench_cuda_graphs.py, docs/performance.md); here is everything around them."""
from typing import List

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from void_server.pipelines.base import PipelineUnavailable  # noqa: E402
from void_server.pipelines.void import pipeline as void_pipeline  # noqa: E402
from void_server.pipelines.void.denoise import denoise  # noqa: E402
from void_server.pipelines.void.loading import VoidModels, use_cuda_graphs  # noqa: E402
from void_server.pipelines.void.weights import resolve_layout  # noqa: E402

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.mark.parametrize("requested, compiled, mode, device, expected", [
    (None, True, "gpu", CUDA, False),  # off unless asked (not yet shown to pay in a whole job)
    (True, True, "gpu", CUDA, True),  # asked, and the blocks are compiled and resident
    (False, True, "gpu", CUDA, False),  # asked off
    (None, False, "gpu", CUDA, False),  # nothing compiled to replay
    (True, True, "model_offload", CUDA, False),  # weights move between calls
    (True, True, "fp8", CUDA, False),
    (True, True, "sequential_offload", CUDA, False),
    (True, True, "gpu", CPU, False),
])
def test_graphs_only_where_compiled_blocks_keep_their_weights_in_place(requested, compiled, mode, device, expected):
    assert use_cuda_graphs(requested, compiled, mode, device) is expected


def test_the_models_compile_their_blocks_for_graph_replay_when_graphs_are_on(tiny_model_dir, monkeypatch):
    from void_server.pipelines.void import accel

    seen: List[dict] = []
    monkeypatch.setattr(accel, "accelerate_transformer", lambda model, **kw: seen.append(kw) or model)
    layout = resolve_layout(tiny_model_dir)
    models = VoidModels(layout, CPU, "gpu", compile_blocks=True, cuda_graphs=True)
    assert models.cuda_graphs is False and models.describe()["cuda_graphs"] is False  # a CPU has no graphs
    models.transformer(1)
    models.cuda_graphs = True  # as on a GPU in the gpu mode
    models.transformer(2)
    assert [kw["compile_mode"] for kw in seen] == [None, "reduce-overhead"]


def test_graphs_report_the_compiled_unit_they_run_even_where_precompiled_was_asked(tiny_model_dir, monkeypatch):
    from void_server.pipelines.void import loading

    monkeypatch.setattr(loading, "use_cuda_graphs", lambda *a: True)  # as on a GPU in the gpu mode
    layout = resolve_layout(tiny_model_dir)
    for asked in (None, "precompiled", "compiled"):
        models = VoidModels(layout, CPU, "gpu", compile_blocks=True, cuda_graphs=True, transformer_unit=asked)
        assert models.describe()["transformer_unit"] == "compiled"


def test_the_server_option_is_a_flag_and_needs_one_job_at_a_time():
    option = void_pipeline._cuda_graphs_option
    assert option(None, 1) is None and option(True, 1) is True and option(False, 1) is False
    assert option(None, 2) is False  # jobs side by side: off by default
    assert option(False, 3) is False
    with pytest.raises(PipelineUnavailable, match="--concurrency 1"):
        option(True, 2)
    with pytest.raises(PipelineUnavailable, match="cuda_graphs option is true or false"):
        void_pipeline._bool_option({"cuda_graphs": "yes"}, "cuda_graphs")


def test_from_config_refuses_graphs_with_concurrent_jobs_before_loading_anything(tmp_path, tiny_model_dir):
    class Config:
        model_dir, memory_mode, device, concurrency = tiny_model_dir, "gpu", "cpu", 2
        options = {"cuda_graphs": True}

    with pytest.raises(PipelineUnavailable, match="concurrency"):
        void_pipeline.VoidPipeline.from_config(Config())


@pytest.mark.parametrize("guidance, step_cache", [(1.0, 0.0), (3.0, 0.0), (3.0, 1e9)])
def test_each_transformer_call_begins_a_new_graph_step(monkeypatch, guidance, step_cache):
    """cudagraph trees may reuse a step's block outputs only once the loop marks the next step: one mark right
    before every transformer call (every window of every step), none inside it."""
    from diffusers import CogVideoXTransformer3DModel, DDIMScheduler

    from void_server.pipelines.void.tiny import TRANSFORMER_CONFIGS

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(**dict(TRANSFORMER_CONFIGS["tiny"], in_channels=48, num_layers=2)).eval()
    events: List[str] = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: events.append("mark"))
    transformer.register_forward_pre_hook(lambda *a: events.append("call"))
    transformer.transformer_blocks[0].register_forward_pre_hook(lambda *a: events.append("block"))
    gen = torch.Generator().manual_seed(1)
    latents, inpaint = torch.randn((1, 6, 16, 8, 12), generator=gen), torch.randn((1, 6, 32, 8, 12), generator=gen)
    prompt, negative = torch.randn((1, 7, 32), generator=gen), torch.randn((1, 7, 32), generator=gen)
    with torch.no_grad():
        denoise(transformer, DDIMScheduler(), latents, inpaint, prompt, negative if guidance > 1 else None, guidance,
                3, window=4, overlap=2, step_cache=step_cache)
    # 3 steps x 2 windows (0-4, 2-6), one call each (the guidance pair is one batched call)
    assert events == ["mark", "call", "block"] * 6


@pytest.mark.parametrize("graphs", [False, True])
def test_closing_the_pipeline_lets_go_of_this_threads_graphs(tiny_model_dir, monkeypatch, graphs):
    from torch._inductor import cudagraph_trees

    resets: List[int] = []
    monkeypatch.setattr(cudagraph_trees, "reset_cudagraph_trees", lambda: resets.append(1))
    pipe = void_pipeline.VoidPipeline(tiny_model_dir, device="cpu", memory_mode="gpu")
    pipe.models.cuda_graphs = graphs  # as on a GPU with the option on
    pipe.close()
    assert resets == ([1] if graphs else [])
