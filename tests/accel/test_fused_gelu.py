"""The feed-forward's GELU fused into its GEMM (accel.FusedGELUProjection) is a drop-in for diffusers' tanh GELU."""

import torch

from void_server.pipelines.void import fp8_linear
from void_server.pipelines.void.accel import FusedGELUProjection, accelerate_transformer, fuse_feed_forward_gelu

from test_attention_processor import _inputs, _run, _tiny_transformer


def test_fused_projection_keeps_the_blocks_output_and_parameter_names():
    model = _tiny_transformer()
    x, text, rot = _inputs()
    expected = _run(model, x, text, rot)
    names = set(model.state_dict())
    assert fuse_feed_forward_gelu(model) == 2
    assert all(isinstance(b.ff.net[0], FusedGELUProjection) for b in model.transformer_blocks)
    assert set(model.state_dict()) == names  # a fused model loads and saves the same weights
    torch.testing.assert_close(_run(model, x, text, rot), expected, rtol=1e-5, atol=1e-5)
    assert fuse_feed_forward_gelu(model) == 0  # nothing left to swap


def test_fused_projection_compiles_whole_and_keeps_the_output():
    model = _tiny_transformer()
    x, text, rot = _inputs()
    expected = _run(model, x, text, rot)
    torch._dynamo.reset()
    accelerate_transformer(model, compile_blocks=True, fuse_gelu=True)
    torch.testing.assert_close(_run(model, x, text, rot), expected, rtol=1e-4, atol=1e-4)


def test_the_gelu_is_the_tanh_form_not_the_erf_form():
    from diffusers.models.activations import GELU

    torch.manual_seed(0)
    exact, tanh = GELU(8, 32, approximate="none"), GELU(8, 32, approximate="tanh")
    exact.load_state_dict(tanh.state_dict())
    fused = FusedGELUProjection(tanh)
    x = torch.randn(3, 5, 8) * 3  # where the two forms differ by up to ~5e-4
    with torch.no_grad():
        got = fused(x)
        assert (exact(x) - tanh(x)).abs().max() > 1e-4
        torch.testing.assert_close(got, tanh(x), rtol=0, atol=1e-6)


def test_float8_twins_still_run_through_a_fused_projection():
    model = _tiny_transformer()
    fuse_feed_forward_gelu(model)
    x, text, rot = _inputs()
    plain = _tiny_transformer()
    with fp8_linear.fp8_matmul(model, torch.device("cpu"), emulate=True):
        net = model.transformer_blocks[0].ff.net
        assert isinstance(net[0], fp8_linear.Fp8Linear) and net[2].gelu_input  # the GELU moved into the quantising
        got = _run(model, x, text, rot)
    with fp8_linear.fp8_matmul(plain, torch.device("cpu"), emulate=True):
        want = _run(plain, x, text, rot)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    first = model.transformer_blocks[0].ff.net[0]
    assert isinstance(first, FusedGELUProjection) and type(first.proj) is torch.nn.Linear  # put back after the job


def test_a_fresh_process_compiles_the_fused_projection_first_thing():
    # The op must exist before dynamo traces a forward: registering it inside the trace fails (it did on the GPU,
    # where a block's first call is a compiled one). A fresh interpreter, so no earlier test registered it.
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from diffusers.models.activations import GELU\n"
        "from void_server.pipelines.void.accel import FusedGELUProjection\n"
        "torch.manual_seed(0)\n"
        "plain = GELU(8, 32, approximate='tanh')\n"
        "fused = torch.compile(FusedGELUProjection(plain), fullgraph=True, backend='eager')\n"
        "x = torch.randn(2, 5, 8)\n"
        "with torch.no_grad():\n"
        "    assert torch.allclose(fused(x), plain(x), atol=1e-6)\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
