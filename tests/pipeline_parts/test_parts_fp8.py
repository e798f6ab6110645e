"""float8 matrix work: the quantisation's numerics (CPU emulation), the CUDA path's shapes under a full-graph
compile (traced with fake tensors), swapping in and out of a transformer, and the errors where it cannot run."""
import pytest

torch = pytest.importorskip("torch")

from void_server.pipelines.void import fp8_linear  # noqa: E402
from void_server.pipelines.void.fp8_linear import Fp8Linear, Fp8Unsupported, fp8_matmul, support_problem  # noqa: E402
from void_server.pipelines.void.fp8_quant import FP8_MAX, quantise_rows  # noqa: E402


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_row_quantisation_is_within_e4m3_rounding():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 64, generator=g) * torch.logspace(-3, 3, 32).unsqueeze(1)  # rows of very different sizes
    q, scale = quantise_rows(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (32, 1)
    assert torch.equal(q.float().abs().amax(dim=1), torch.full((32,), FP8_MAX))  # each row's absmax maps to 448
    back = q.float() * scale
    normal = x.abs() >= scale * 2.0 ** -6  # e4m3's smallest normal, in each row's units
    # 3 mantissa bits: round-to-nearest is within half a unit in the last place, 2^-4 relative.
    assert ((back - x).abs() <= x.abs() * 2.0 ** -4 + 1e-12)[normal].all()
    assert _rel(back, x) > 1e-3  # it really is quantised


def test_emulated_linear_is_close_to_float32_and_keeps_shapes():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(2, 37, 64)  # 74 rows: not a multiple of 16, which _scaled_mm does not need
    f = Fp8Linear(linear, emulate=True)
    with torch.no_grad():
        y, expected = f(x), linear(x)
    assert y.shape == expected.shape and y.dtype == x.dtype
    # Two operands each rounded by up to 2^-4 relative (~3.6% rms for uniform rounding): a few percent overall.
    assert 5e-3 < _rel(y, expected) < 0.06
    assert f.bias is linear.bias  # shared, not copied


def test_a_gelu_input_linear_is_the_previous_bias_and_gelu_then_the_float8_linear():
    torch.manual_seed(0)
    up, linear = torch.nn.Linear(16, 64), torch.nn.Linear(64, 48)
    h = torch.randn(2, 37, 64) * 2  # `up`'s output without its bias, as its twin (bias=False) leaves it
    gelu = torch.nn.functional.gelu(h + up.bias, approximate="tanh")
    plain = Fp8Linear(linear, emulate=True)
    fused = Fp8Linear(linear, emulate=True, gelu_input=True, input_bias=up.bias)
    with torch.no_grad():
        torch.testing.assert_close(fused(h), plain(gelu))
        assert 5e-3 < _rel(fused(h), linear(gelu)) < 0.06
        no_bias = Fp8Linear(up, emulate=True, bias=False)
        x = torch.randn(5, 16)
        torch.testing.assert_close(no_bias(x) + up.bias, Fp8Linear(up, emulate=True)(x))
    with pytest.raises(ValueError, match="needs gelu_input"):
        Fp8Linear(linear, input_bias=up.bias)


@pytest.mark.parametrize("bias_in_gemm", [False, True])
def test_the_cuda_path_traces_as_one_graph_with_valid_scaled_mm_operands(bias_in_gemm):
    """Dynamo with fake tensors runs _scaled_mm's shape checks (row-wise scales (M,1)/(1,N), column-major second
    operand): what the H100 will get, checked here without a GPU. The bias goes into the GEMM's epilogue only when
    asked; otherwise it is an add after (which inductor folds into the kernel reading the output)."""
    torch.manual_seed(0)
    f = Fp8Linear(torch.nn.Linear(64, 48).to(torch.bfloat16), emulate=False, bias_in_gemm=bias_in_gemm)
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return lambda *args: (torch.zeros(2, 37, 48, dtype=torch.bfloat16),)  # CPU has no float8 matmul to run

    compiled = torch.compile(f, fullgraph=True, dynamic=False, backend=capture)
    out = compiled(torch.randn(2, 37, 64, dtype=torch.bfloat16))
    assert len(graphs) == 1 and out.shape == (2, 37, 48)
    mm = [n for n in graphs[0].graph.nodes if n.target is torch._scaled_mm]
    assert len(mm) == 1
    value = mm[0].meta["example_value"]
    assert tuple(value.shape) == (74, 48) and value.dtype == torch.bfloat16  # the 74 tokens, unpadded
    adds = [n for n in graphs[0].graph.nodes if n.op == "call_function" and "add" in str(n.target)]
    assert (mm[0].kwargs.get("bias") is not None) == bias_in_gemm
    assert len(adds) == (0 if bias_in_gemm else 1)


def _tiny_transformer() -> torch.nn.Module:
    pytest.importorskip("diffusers")
    from diffusers import CogVideoXTransformer3DModel

    from void_server.pipelines.void.tiny import TRANSFORMER_CONFIGS

    torch.manual_seed(0)
    return CogVideoXTransformer3DModel(**dict(TRANSFORMER_CONFIGS["tiny"], in_channels=48)).eval()


def _forward(model) -> torch.Tensor:
    from void_server.pipelines.void.denoise import rotary_embedding

    g = torch.Generator().manual_seed(1)
    x, text = torch.randn(1, 4, 48, 8, 12, generator=g), torch.randn(1, 7, 32, generator=g)
    with torch.no_grad():
        return model(hidden_states=x, encoder_hidden_states=text, timestep=torch.tensor([500]),
                     image_rotary_emb=rotary_embedding(model, 4, 8, 12, torch.device("cpu")), return_dict=False)[0]


def test_transformer_swaps_to_float8_inside_the_context_and_back_after():
    model = _tiny_transformer()
    plain = _forward(model)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    with fp8_matmul(model, torch.device("cpu"), emulate=True):
        swapped = {n for n, m in model.named_modules() if isinstance(m, Fp8Linear)}
        gelu_inputs = [n for n, m in model.named_modules() if isinstance(m, Fp8Linear) and m.gelu_input]
        lossy = _forward(model)
    # Per block: q, k, v, out, and the two MLP layers (the first standing in for GELU(proj): the GELU moves into the
    # second's quantisation); the modulation linears stay as they are.
    assert len(swapped) == 6 * len(model.transformer_blocks)
    assert {n.rsplit(".", 1)[-1] for n in swapped if ".ff." in n} == {"0", "2"}
    assert gelu_inputs == ["transformer_blocks.%d.ff.net.2" % i for i in range(len(model.transformer_blocks))]
    block, twin = model.transformer_blocks[0], fp8_linear.twins(model, emulate=True)
    assert twin["transformer_blocks.0.ff.net.0"].bias is None  # its bias moved into net.2's GELU quantisation
    assert twin["transformer_blocks.0.ff.net.2"].input_bias is block.ff.net[0].proj.bias
    assert [n for n, t in twin.items() if t.bias_in_gemm and n.startswith("transformer_blocks.0.")] == [
        "transformer_blocks.0.attn1.to_%s" % x for x in "qkv"]
    assert not any("norm" in n for n in swapped)
    assert 1e-4 < _rel(lossy, plain) < 0.1
    assert {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)} == linears
    assert torch.equal(_forward(model), plain)
    first = fp8_linear.twins(model, emulate=True)
    with fp8_matmul(model, torch.device("cpu"), emulate=True):
        pass
    assert fp8_linear.twins(model, emulate=True) is first  # quantised once per transformer, not per job


def test_unsupported_hardware_is_a_clear_error(monkeypatch):
    model = _tiny_transformer()
    with pytest.raises(Fp8Unsupported, match="compute capability 8.9"):
        with fp8_matmul(model, torch.device("cpu")):
            pass
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    assert "A100 is 8.0" in support_problem(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert support_problem(torch.device("cuda")) is None
    with pytest.raises(Fp8Unsupported, match="memory mode gpu, fp8 or model_offload\\), and memory mode "
                                             "sequential_offload streams its weights layer by layer"):
        with fp8_matmul(model, torch.device("cuda"), memory_mode="sequential_offload"):
            pass


def test_under_model_offload_the_twins_are_quantised_from_the_lent_weights_each_pass_and_freed_after():
    model = _tiny_transformer()
    to_q = model.transformer_blocks[0].attn1.to_q  # the bf16 layer (its twin stands in for it inside the context)
    with fp8_matmul(model, torch.device("cpu"), memory_mode="model_offload", emulate=True):
        first = _forward(model)
    made = fp8_linear.twins(model, emulate=True)
    buffers = {n: (t.weight_fp8, t.weight_scale) for n, t in made.items()}
    assert all(t.released and t.weight_fp8.numel() == 0 for t in made.values())  # nothing float8 left behind
    with fp8_matmul(model, torch.device("cpu"), memory_mode="model_offload", emulate=True):
        again = _forward(model)
        q = made["transformer_blocks.0.attn1.to_q"]
        assert not q.released and q.weight_fp8.shape == to_q.weight.shape
    assert torch.equal(again, first)  # the same weights quantise to the same twins
    assert fp8_linear.twins(model, emulate=True) is made
    # The same modules and buffer objects each pass (only their storage changes): compiled blocks keep matching.
    assert all(made[n].weight_fp8 is w and made[n].weight_scale is s for n, (w, s) in buffers.items())
    with fp8_matmul(model, torch.device("cpu"), memory_mode="model_offload", emulate=True):
        before = made["transformer_blocks.0.attn1.to_q"].weight_scale.clone()
    with torch.no_grad():
        to_q.weight.mul_(2)  # a pass quantises what is lent to it now, not a copy kept from before
    with fp8_matmul(model, torch.device("cpu"), memory_mode="model_offload", emulate=True):
        torch.testing.assert_close(made["transformer_blocks.0.attn1.to_q"].weight_scale, 2 * before)
    with fp8_matmul(model, torch.device("cpu"), emulate=True):  # the gpu mode keeps its twins after the pass
        pass
    assert not any(t.released for t in made.values())


def test_a_compiled_twin_keeps_its_graph_across_release_and_load():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48).to(torch.bfloat16)
    f = Fp8Linear(linear, emulate=False)
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return lambda *args: (torch.zeros(2, 37, 48, dtype=torch.bfloat16),)  # CPU has no float8 matmul to run

    compiled = torch.compile(f, fullgraph=True, dynamic=False, backend=capture)
    x = torch.randn(2, 37, 64, dtype=torch.bfloat16)
    compiled(x)
    f.release()
    f.load(linear.weight)
    compiled(x)
    assert len(graphs) == 1  # no recompilation for a lent transformer's next pass


@pytest.mark.skipif(not torch.cuda.is_available() or support_problem(torch.device("cuda")) is not None,
                    reason="float8 matrix work on a GPU of compute capability 8.9+")
@pytest.mark.parametrize("memory_mode", ["gpu", "fp8", "model_offload"])
def test_float8_on_the_gpu_in_each_memory_mode_that_allows_it(memory_mode):
    """The real `_scaled_mm` path (no emulation) on a bf16 transformer, on one stored in float8 (the fp8 memory mode's
    layerwise casting, as loading.Placement sets it up) and on one whose twins are made per pass (model offload):
    close to the same transformer's own output, and the same output pass after pass."""
    from void_server.pipelines.void.loading import Placement

    cuda = torch.device("cuda")
    model = Placement(cuda, memory_mode).prepare(_tiny_transformer().to(torch.bfloat16), is_transformer=True).to(cuda)
    from void_server.pipelines.void.denoise import rotary_embedding

    g = torch.Generator().manual_seed(1)
    x, text = torch.randn(1, 4, 48, 8, 12, generator=g), torch.randn(1, 7, 32, generator=g)
    kw = dict(hidden_states=x.to(cuda, torch.bfloat16), encoder_hidden_states=text.to(cuda, torch.bfloat16),
              timestep=torch.tensor([500], device=cuda), image_rotary_emb=rotary_embedding(model, 4, 8, 12, cuda),
              return_dict=False)
    with torch.no_grad():
        plain = model(**kw)[0]
        outs = []
        for _ in range(2):
            with fp8_matmul(model, cuda, memory_mode):
                outs.append(model(**kw)[0])
    assert torch.isfinite(outs[0]).all()
    assert 1e-4 < _rel(outs[0], plain) < 0.1
    assert torch.equal(outs[0], outs[1])
    made = fp8_linear.twins(model)
    assert all(t.released for t in made.values()) == (memory_mode == "model_offload")
