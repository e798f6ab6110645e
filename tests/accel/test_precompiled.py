"""Modules precompiled by dynamo and kept on disk (precompiled.py): the same output as eager with each module's own
weights, one function shared by modules of one shape, loaded by a new process without tracing, rebuilt when a
traced source changed or a file is torn, and torch.compile where precompiling is not possible.

The modules are a small stand-in written to a temporary package (so a test can edit its source between processes);
the VAE uses the same code (accel.compile_vae(unit="precompiled")), measured on the GPU by bench/bench_vae_start.py.
Compiling on the CPU costs ~10 s per graph here, so the tests keep to a few graphs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

TOY = textwrap.dedent("""
    import torch
    from toyhelper import scale


    class Block(torch.nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.norm = torch.nn.GroupNorm(2, channels)
            self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
            self.bias = torch.nn.Parameter(torch.randn(channels))  # small 1-D: inductor would inline a constant

        def forward(self, x, cache=None):
            h = torch.nn.functional.silu(self.norm(x))
            if cache is not None:
                h = h + cache["h"]
            return scale(self.conv(h)) + x + self.bias[None, :, None, None], {"h": h}
""")
HELPER = "def scale(x):\n    return x * 1.0\n"

# One process: two blocks of one shape (their own weights), called with and without a cache; prints JSON.
RUN = textwrap.dedent("""
    import json, sys, torch
    from toy import Block
    from void_server.pipelines.void import precompiled

    torch.manual_seed(int(sys.argv[1]))
    blocks = [Block(4).eval(), Block(4).eval()]
    x = torch.randn(1, 4, 6, 8)
    with torch.no_grad():
        eager = [b(x) for b in blocks]
        for b in blocks:
            precompiled.precompile(b, "toy-block")
        got = [b(x) for b in blocks]
        cached = blocks[0](x, cache={"h": eager[1][1]["h"]})
        want = type(blocks[0]).forward(blocks[0], x, cache={"h": eager[1][1]["h"]})
    from torch._dynamo.utils import counters
    print(json.dumps({
        "max_diff": max(float((g[0] - e[0]).abs().max()) for g, e in zip(got, eager)),
        "cached_diff": float((cached[0] - want[0]).abs().max()),
        "same_weights_would_differ": float((eager[0][0] - eager[1][0]).abs().max()),
        "events": [e for _, e in precompiled.events(blocks[0])],
        "fell_back": [b.forward.fell_back for b in blocks],
        "traced_frames": counters["stats"].get("unique_graphs", 0),
    }))
""")


def _run(tmp_path: Path, seed: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "src"), str(ROOT / "server")]),
               TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", RUN, str(seed)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _write_toy(tmp_path: Path, helper: str = HELPER) -> None:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "toy.py").write_text(TOY)
    (src / "toyhelper.py").write_text(helper)


def test_precompiled_blocks_match_eager_share_a_function_and_load_in_a_new_process_without_tracing(tmp_path):
    _write_toy(tmp_path)
    first = _run(tmp_path, seed=0)
    assert first["same_weights_would_differ"] > 1e-2  # so a function with baked-in weights could not pass below
    assert first["max_diff"] < 1e-5 and first["cached_diff"] < 1e-5
    # one function for both blocks without a cache, one with it
    assert first["events"] == ["built", "built"] and first["fell_back"] == [False, False]
    assert len(list((tmp_path / "cache" / "void-precompiled").glob("toy-block-*.bin"))) == 2

    second = _run(tmp_path, seed=1)  # other weights, same shapes
    assert second["events"] == ["loaded", "loaded"]
    assert second["traced_frames"] == 0  # dynamo traced nothing: what a warm start saves
    assert second["max_diff"] < 1e-5 and second["cached_diff"] < 1e-5

    # A function dynamo inlined from another file changed: the stored functions are stale, so they are rebuilt,
    # and the output follows the new source.
    _write_toy(tmp_path, helper="def scale(x):\n    return x * 2.0\n")
    third = _run(tmp_path, seed=2)
    assert third["events"] == ["built", "built"]
    assert third["max_diff"] < 1e-5 and third["cached_diff"] < 1e-5


# Three threads at once: two precompiled blocks of new shapes (dynamo's aot_compile) and a plain torch.compile.
THREADS = textwrap.dedent("""
    import json, threading, torch
    from toy import Block
    from void_server.pipelines.void import precompiled

    torch.manual_seed(0)
    blocks = [Block(c).eval() for c in (4, 6, 8)]
    xs = [torch.randn(1, c, 6, 8) for c in (4, 6, 8)]
    with torch.no_grad():
        want = [b(x)[0] for b, x in zip(blocks, xs)]
    for b in blocks[:2]:
        precompiled.precompile(b, "toy-block")
    plain = torch.compile(blocks[2], fullgraph=True)
    start, got, errors = threading.Barrier(3), {}, []

    def run(i):
        start.wait()
        try:
            with torch.no_grad():
                got[i] = (plain if i == 2 else blocks[i])(xs[i])[0]
        except Exception as e:
            errors.append("%s: %s" % (type(e).__name__, str(e)[:200]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"errors": errors, "fell_back": [b.forward.fell_back for b in blocks[:2]],
                      "max_diff": max(float((got[i] - want[i]).abs().max()) for i in got), "done": sorted(got)}))
""")


def test_precompiling_on_several_threads_at_once_builds_every_function(tmp_path):
    """Inductor's compiling is not thread-safe, and dynamo's aot_compile (what precompiling runs) does not take the
    lock dynamo's own compiles take: two GPUs' VAEs compiling on two threads failed on the device ("assert
    cls._entries is None" in TritonBundler). The store takes that lock, so nothing fails or falls back."""
    _write_toy(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "src"), str(ROOT / "server")]),
               TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", THREADS], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["errors"] == [] and out["done"] == [0, 1, 2], done.stderr[-3000:]
    assert out["fell_back"] == [False, False], done.stderr[-3000:]
    assert out["max_diff"] < 1e-5


def test_call_key_follows_shapes_strides_structure_grad_mode_and_the_module():
    from void_server.pipelines.void.precompiled import call_key, module_signature

    conv = torch.nn.Conv2d(4, 4, 3)
    sig = module_signature(conv)
    x = torch.zeros(1, 4, 6, 8)
    key = call_key(sig, (x,), {})
    assert key == call_key(module_signature(torch.nn.Conv2d(4, 4, 3)), (torch.ones(1, 4, 6, 8),), {})
    with torch.no_grad():
        no_grad = call_key(sig, (x,), {})
    others = [
        call_key(sig, (torch.zeros(1, 4, 6, 9),), {}),
        call_key(sig, (torch.zeros(1, 4, 8, 6).transpose(2, 3),), {}),  # same shape, other strides
        call_key(sig, (x.double(),), {}),
        call_key(sig, (x,), {"cache": None}),
        call_key(module_signature(torch.nn.Conv2d(4, 4, 5)), (x,), {}),
        call_key(module_signature(torch.nn.Conv2d(4, 4, 3).train(False)), (x,), {}),
        no_grad,
    ]
    assert len({key, *others}) == 1 + len(others)


class _StubFunction:
    """What the store keeps, standing in for a precompiled function: saving writes `content`."""

    def __init__(self, content: bytes = b"x") -> None:
        self.content = content

    def save_compiled_function(self, path):
        Path(path).write_bytes(self.content)

    def disable_guard_check(self):
        pass


def test_a_torn_file_is_rebuilt(tmp_path, monkeypatch):
    from void_server.pipelines.void import precompiled

    store = precompiled.FunctionStore(tmp_path)
    torn = tmp_path / "toy-0123.bin"
    torn.write_bytes(b"not a pickle")
    built = []

    fn = store.function("toy", "0123", lambda: built.append(1) or _StubFunction(b"new"), {})
    assert isinstance(fn, _StubFunction) and built == [1] and torn.read_bytes() == b"new"
    assert store.events == [("0123", "built")]
    assert store.function("toy", "0123", lambda: pytest.fail("built twice"), {}) is fn


def test_guards_that_refuse_a_rebuilt_function_again_send_the_module_to_torch_compile(tmp_path, monkeypatch, caplog):
    # A key that misses what the guards check is rebuilt once; refused again, rebuilding at every call would be
    # far slower than torch.compile, which the module then falls back to.
    from void_server.pipelines.void import precompiled

    builds = []

    class Refusing(_StubFunction):
        def guard_check(self, *args, **kwargs):
            return False

        def __call__(self, module, *args, **kwargs):  # built for the call at hand: it runs that one
            return type(module).forward(module, *args, **kwargs)

    monkeypatch.setattr(precompiled.PrecompiledForward, "_build", lambda self, *a: builds.append(1) or Refusing())
    monkeypatch.setattr(precompiled.FunctionStore, "_load", lambda self, path, f_globals: None)
    monkeypatch.setattr(precompiled, "_STORES", {})
    blocks = [torch.nn.Linear(3, 3).eval() for _ in range(2)]
    x = torch.randn(2, 3)
    with torch.no_grad():
        want = [b(x) for b in blocks]
        for b in blocks:
            precompiled.precompile(b, "block", backend="eager", folder=tmp_path)
        got = [b(x) for b in blocks] + [blocks[0](x)]
    assert builds == [1, 1]  # built, then rebuilt once for the refused call; never again
    assert all(b.forward.fell_back for b in blocks)
    assert all(torch.equal(g, w) for g, w in zip(got, want + want[:1]))
    assert "guards refuse calls its key does not tell apart" in caplog.text


def _aged(path: Path, days: float, content: bytes = b"x") -> Path:
    import os
    import time

    path.write_bytes(content)
    then = time.time() - days * 86400
    os.utime(path, (then, then))
    return path


def test_files_unused_for_a_month_are_pruned_and_a_load_counts_as_use(tmp_path, monkeypatch):
    from void_server.pipelines.void import precompiled

    old = _aged(tmp_path / "vae.encoder-aaaa.bin", 45)  # e.g. built by the torch before an upgrade
    used = _aged(tmp_path / "vae.decoder-bbbb.bin", 45)  # as old, but this process loads it
    recent = _aged(tmp_path / "vae.decoder-cccc.bin", 3)
    dead_write = _aged(tmp_path / "vae.decoder-dddd.bin.tmp4242", 45)
    fresh_write = _aged(tmp_path / "vae.decoder-eeee.bin.tmp4343", 0)
    foreign = _aged(tmp_path / "notes.txt", 400)  # not the store's: left alone

    store = precompiled.FunctionStore(tmp_path)
    monkeypatch.setattr(store, "_load", lambda path, f_globals: _StubFunction())
    assert isinstance(store.function("vae.decoder", "bbbb", lambda: pytest.fail("rebuilt"), {}), _StubFunction)
    assert sorted(store.prune()) == sorted([old.name, dead_write.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([used.name, recent.name, fresh_write.name, foreign.name])
    assert precompiled.FunctionStore(tmp_path / "absent").prune() == []


def test_the_process_store_prunes_its_folder_once(tmp_path, monkeypatch):
    from void_server.pipelines.void import precompiled

    monkeypatch.setattr(precompiled, "_STORES", {})
    _aged(tmp_path / "vae.encoder-aaaa.bin", 45)
    store = precompiled.store_for(tmp_path)
    assert list(tmp_path.iterdir()) == []
    _aged(tmp_path / "vae.encoder-ffff.bin", 45)
    assert precompiled.store_for(tmp_path) is store and len(list(tmp_path.iterdir())) == 1  # not again


def test_where_precompiling_is_not_possible_the_module_is_compiled_the_usual_way(tmp_path, monkeypatch, caplog):
    from void_server.pipelines.void import precompiled

    conv = torch.nn.Conv2d(2, 2, 3).eval()
    x = torch.randn(1, 2, 5, 5)
    with torch.no_grad():
        want = conv(x)
    # a torch without the API (before 2.10)
    monkeypatch.delattr(torch.compiler, "load_compiled_function")
    with torch.no_grad():
        precompiled.precompile(conv, "conv", backend="eager", folder=tmp_path)
        got = conv(x)
    assert conv.forward.fell_back and torch.equal(got, want)
    assert "not precompiled" in caplog.text and "load_compiled_function" in caplog.text
    assert not list(tmp_path.iterdir())
    monkeypatch.undo()

    # a build that fails (here: a backend whose output does not serialise)
    other = torch.nn.Conv2d(2, 2, 3).eval()
    with torch.no_grad():
        want = other(x)
        precompiled.precompile(other, "conv", backend="eager", folder=tmp_path)
        got = other(x)
    assert other.forward.fell_back and torch.equal(got, want)
    assert not list(tmp_path.iterdir())  # nothing half-written left behind either

    # a module sharing that key falls back at once: no second trace and compile to meet the same failure (the
    # transformers' 84 blocks each built and failed before)
    builds = []
    build = precompiled.PrecompiledForward._build
    monkeypatch.setattr(precompiled.PrecompiledForward, "_build", lambda self, *a: builds.append(1) or build(self, *a))
    third = torch.nn.Conv2d(2, 2, 3).eval()
    with torch.no_grad():
        want = third(x)
        precompiled.precompile(third, "conv", backend="eager", folder=tmp_path)
        got = third(x)
    assert third.forward.fell_back and torch.equal(got, want) and builds == []
    assert caplog.text.count("not precompiled (") == 3  # each module says so; the reason is the first build's


def test_a_module_with_a_graph_break_falls_back_and_still_runs(tmp_path, caplog):
    from void_server.pipelines.void import precompiled

    class Breaks(torch.nn.Module):
        def forward(self, x):
            torch._dynamo.graph_break()  # precompiling needs one whole graph
            return x * 2

    m = Breaks()
    x = torch.randn(3)
    precompiled.precompile(m, "breaks", backend="eager", folder=tmp_path)
    assert torch.equal(m(x), x * 2) and m.forward.fell_back
    assert torch.equal(m(x + 1), (x + 1) * 2)


def test_the_key_follows_a_swapped_submodule_a_patched_forward_and_the_weights_device(tmp_path):
    from void_server.pipelines.void.precompiled import PrecompiledForward

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.act = torch.nn.GELU()
            self.lin = torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.act(self.lin(x))

    net = Net()
    wrapper = PrecompiledForward(net, "net", folder=tmp_path)
    x = torch.zeros(2, 3)
    key = wrapper._key((x,), {})
    assert wrapper._key((torch.ones(2, 3),), {}) == key
    net.act = torch.nn.SiLU()  # no weights: the parameters alone would not tell
    swapped = wrapper._key((x,), {})
    net.lin.forward = lambda t: t  # patched for a call, as decode.py does to the upsampling
    patched = wrapper._key((x,), {})
    del net.lin.forward
    net.lin.to("meta")
    moved = wrapper._key((x,), {})
    assert len({key, swapped, patched, moved}) == 4


# The real CogVideoX decoder, two levels (fewer graphs to compile on CI's CPU): its resnet blocks precompiled as the
# `gpu` mode does, then loaded by a new process.
VAE_CHILD = textwrap.dedent("""
    import json, sys, torch
    from diffusers import AutoencoderKLCogVideoX
    from void_server.pipelines.void import precompiled
    from void_server.pipelines.void.accel import compile_vae
    from void_server.pipelines.void.decode import decode_latents

    torch.manual_seed(int(sys.argv[2]))
    vae = AutoencoderKLCogVideoX(**json.loads(sys.argv[1])).eval().requires_grad_(False)
    z = torch.randn(1, 3, 16, 2, 3, generator=torch.Generator().manual_seed(1))
    eager = decode_latents(vae, z)
    compile_vae(vae, "decoder", unit="precompiled")
    frames = decode_latents(vae, z)
    fell_back = [w.fell_back for w in precompiled.wrappers(vae)]
    print(json.dumps({"max_diff": float((frames - eager).abs().max()), "fell_back": fell_back,
                      "events": [e for _, e in precompiled.events(vae)]}))
""")


def test_the_cogvideox_decoder_precompiled_matches_eager_and_a_new_process_loads_it(tmp_path):
    from void_server.pipelines.void.tiny import VAE_CONFIGS

    small = dict(VAE_CONFIGS["tiny"], block_out_channels=[8, 16],
                 down_block_types=VAE_CONFIGS["tiny"]["down_block_types"][:2],
                 up_block_types=VAE_CONFIGS["tiny"]["up_block_types"][:2])
    env = dict(os.environ, PYTHONPATH=str(ROOT / "server"), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache"))

    def run(seed: int) -> dict:
        done = subprocess.run([sys.executable, "-c", VAE_CHILD, json.dumps(small), str(seed)], env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = run(seed=0)
    assert first["fell_back"] and not any(first["fell_back"])
    assert first["events"] and set(first["events"]) == {"built"}
    assert first["max_diff"] < 1e-5
    second = run(seed=1)  # other weights: the files hold code, not weights
    assert second["events"] == ["loaded"] * len(first["events"])
    assert second["max_diff"] < 1e-5


LENGTHS_CHILD = textwrap.dedent("""
    import json, sys, torch
    from diffusers import AutoencoderKLCogVideoX
    from void_server.pipelines.void import precompiled
    from void_server.pipelines.void.accel import compile_vae
    from void_server.pipelines.void.conditioning import encode_mask, vae_encode
    from void_server.pipelines.void.decode import decode_latents

    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(**json.loads(sys.argv[1])).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(1)
    clips = {n: torch.rand(1, 3, n, 16, 24, generator=gen) for n in (21, 85)}
    masks = {n: torch.rand(1, 1, n, 16, 24, generator=gen) for n in (21, 85)}
    latents = {n: torch.randn(1, n, 16, 8, 12, generator=gen) for n in (6, 22)}
    want = {("e", n): vae_encode(vae, clips[n]) for n in clips}
    want.update({("m", n): encode_mask(vae, masks[n]) for n in masks})
    want.update({("d", n): decode_latents(vae, latents[n]) for n in latents})
    compile_vae(vae, "both", unit="precompiled")
    out, new = {}, {}
    for n, t in ((21, 6), (85, 22)):  # the short clip first, as the warm-up runs it
        before = len(precompiled.events(vae))
        out[("e", n)], out[("m", n)] = vae_encode(vae, clips[n]), encode_mask(vae, masks[n])
        out[("d", t)] = decode_latents(vae, latents[t])
        new[n] = len(precompiled.events(vae)) - before
    print(json.dumps({"new": new, "max_diff": max(float((out[k] - want[k]).abs().max()) for k in want),
                      "fell_back": [w.fell_back for w in precompiled.wrappers(vae)]}))
""")


def test_a_short_clip_readies_the_precompiled_vae_for_every_clip_length_and_the_mask(tmp_path):
    # Chunks are views of their clip: keyed by their own strides, an 85-frame clip (and, in float32, where no dtype
    # conversion copies it, the mask expanded to three channels) would build functions the 21-frame clip did not.
    # Canonical strides make one set serve every length.
    from void_server.pipelines.void.tiny import VAE_CONFIGS

    small = dict(VAE_CONFIGS["tiny"], block_out_channels=[8, 16],
                 down_block_types=VAE_CONFIGS["tiny"]["down_block_types"][:2],
                 up_block_types=VAE_CONFIGS["tiny"]["up_block_types"][:2])
    env = dict(os.environ, PYTHONPATH=str(ROOT / "server"), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", LENGTHS_CHILD, json.dumps(small)], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["fell_back"] and not any(got["fell_back"])
    assert got["new"]["21"] > 0 and got["new"]["85"] == 0
    assert got["max_diff"] < 1e-5


def test_inputs_get_canonical_strides_as_views_where_the_memory_allows():
    from void_server.pipelines.void.precompiled import contiguous_inputs

    clip = torch.randn(1, 22, 16, 4, 6).permute(0, 2, 1, 3, 4)  # the decode's (B, C, T, h, w) view of its latents
    single, pair = clip[:, :, 21:22], clip[:, :, 1:3]
    assert single.is_contiguous() and single.stride() != (384, 24, 24, 6, 1)  # torch ignores size-1 strides
    (a, b), kw = contiguous_inputs((single, pair), {"cache": {"x": pair}, "n": 3})
    assert a.stride() == (384, 24, 24, 6, 1) and a.data_ptr() == single.data_ptr()  # a view: nothing copied
    assert b.stride() == (768, 48, 24, 6, 1) and kw["cache"]["x"].stride() == b.stride() and kw["n"] == 3
    assert torch.equal(a, single) and torch.equal(b, pair)
    plain = torch.zeros(2, 3)
    same_args, same_kwargs = contiguous_inputs((plain,), {})
    assert same_args[0] is plain


TRANSFORMER_CHILD = textwrap.dedent("""
    import copy, json, sys, torch
    from diffusers import CogVideoXTransformer3DModel
    from void_server.pipelines.void import precompiled
    from void_server.pipelines.void.accel import accelerate_transformer
    from void_server.pipelines.void.tiny import TRANSFORMER_CONFIGS

    torch.manual_seed(int(sys.argv[1]))
    cfg = TRANSFORMER_CONFIGS["tiny"]
    model = CogVideoXTransformer3DModel(**cfg).eval().requires_grad_(False)
    plain = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 2, cfg["in_channels"], 8, 14, generator=gen)
    text = torch.randn(1, 226, cfg["text_embed_dim"], generator=gen)
    # as on a GPU: the feed-forward's fused GELU and our processor call torch custom ops (FlashAttention-4 there,
    # which this CPU lacks: SDPA's math backend here)
    accelerate_transformer(model, attention="math", compile_blocks=True, fuse_gelu=True, unit="precompiled")
    with torch.no_grad():
        want = plain(latents, text, torch.tensor([500])).sample
        got = model(latents, text, torch.tensor([500])).sample
    from torch._dynamo.utils import counters
    blocks = model.transformer_blocks
    print(json.dumps({"max_diff": float((got - want).abs().max()), "scale": float(want.abs().max()),
                      "events": [e for _, e in precompiled.events(blocks[0])], "blocks": len(blocks),
                      "fell_back": [b.forward.fell_back for b in blocks],
                      "attn": type(blocks[0].attn1).__name__,
                      "traced_frames": counters["stats"].get("unique_graphs", 0)}))
""")


def test_transformer_blocks_precompile_share_one_function_and_load_in_a_new_process(tmp_path):
    # Opt-in (pipeline option transformer_unit=precompiled): diffusers' Attention.forward inspects its processor's
    # signature, which dynamo guards on a code object's identity that no saved function can keep; the blocks' attn1
    # calls the processor directly instead (direct_attention.py).
    env = dict(os.environ, PYTHONPATH=str(ROOT / "server"), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache"))

    def run(seed: int) -> dict:
        done = subprocess.run([sys.executable, "-c", TRANSFORMER_CHILD, str(seed)], env=env, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = run(seed=0)
    assert first["blocks"] >= 2 and not any(first["fell_back"]) and first["attn"] == "DirectAttention"
    assert first["events"] == ["built"]  # every block of one shape shares it
    assert first["max_diff"] < 1e-5 * max(1.0, first["scale"])
    second = run(seed=1)  # other weights, same shapes
    assert second["events"] == ["loaded"] and second["traced_frames"] == 0
    assert second["max_diff"] < 1e-5 * max(1.0, second["scale"])


def test_the_direct_attention_is_diffusers_call_and_the_key_names_the_processor():
    from diffusers import CogVideoXTransformer3DModel
    from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0

    from void_server.pipelines.void import precompiled
    from void_server.pipelines.void.accel import FastCogVideoXAttnProcessor
    from void_server.pipelines.void.direct_attention import make_direct
    from void_server.pipelines.void.tiny import TRANSFORMER_CONFIGS

    torch.manual_seed(0)
    block = CogVideoXTransformer3DModel(**TRANSFORMER_CONFIGS["tiny"]).eval().transformer_blocks[0]
    attn = block.attn1
    d = attn.heads * attn.to_q.weight.shape[0] // attn.heads
    x, text = torch.randn(1, 12, d), torch.randn(1, 5, d)
    with torch.no_grad():
        want = attn(hidden_states=x, encoder_hidden_states=text, image_rotary_emb=None)
        assert make_direct(attn) and not make_direct(attn)  # a DirectAttention is left as it is
        got = attn(hidden_states=x, encoder_hidden_states=text, image_rotary_emb=None)
    assert all(torch.equal(a, b) for a, b in zip(got, want))

    wrapper = precompiled.PrecompiledForward(block, "transformer-block")
    args = {"hidden_states": torch.zeros(1, 12, d), "encoder_hidden_states": torch.zeros(1, 5, d),
            "temb": torch.zeros(1, TRANSFORMER_CONFIGS["tiny"]["time_embed_dim"]), "image_rotary_emb": None}
    keys = []
    for processor in (CogVideoXAttnProcessor2_0(), FastCogVideoXAttnProcessor("math"),
                      FastCogVideoXAttnProcessor("efficient"), FastCogVideoXAttnProcessor("math")):
        block.attn1.set_processor(processor)
        keys.append(wrapper._key((), args))
    assert len(set(keys[:3])) == 3 and keys[3] == keys[1]  # a saved function keeps no identity checks


def test_an_unknown_transformer_unit_is_refused(tmp_path):
    from void_server.pipelines.void.loading import VoidModels
    from void_server.pipelines.void.tiny import build_random_model_dir
    from void_server.pipelines.void.weights import resolve_layout

    layout = resolve_layout(build_random_model_dir(tmp_path / "models", size="tiny"))
    with pytest.raises(ValueError, match="transformer_unit must be one of compiled, precompiled"):
        VoidModels(layout, torch.device("cpu"), transformer_unit="aot")
    assert VoidModels(layout, torch.device("cpu")).describe()["transformer_unit"] == "precompiled"  # the default


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU's transformer: bf16, fused GELU, FlashAttention-4")
def test_on_a_gpu_precompiled_blocks_give_what_torch_compile_gives(tmp_path, monkeypatch):
    # The server's default unit on a GPU: the same graph as the torch.compile unit, so the same numbers (a guard
    # or a key that let the wrong function run would not be). bf16, with the fused GELU and FlashAttention-4 where
    # installed, as a job runs them.
    from diffusers import CogVideoXTransformer3DModel

    from void_server.pipelines.void import precompiled
    from void_server.pipelines.void.accel import accelerate_transformer, fa4_usable
    from void_server.pipelines.void.tiny import TRANSFORMER_CONFIGS

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    dev = torch.device("cuda")
    cfg = TRANSFORMER_CONFIGS["tiny"]
    attention = "fa4" if fa4_usable(dev) else None
    outs = {}
    for unit in ("compiled", "precompiled"):
        torch.manual_seed(0)
        model = CogVideoXTransformer3DModel(**cfg).eval().requires_grad_(False).to(dev, torch.bfloat16)
        accelerate_transformer(model, attention=attention, compile_blocks=True, fuse_gelu=True, unit=unit)
        gen = torch.Generator(dev).manual_seed(1)
        latents = torch.randn(1, 2, cfg["in_channels"], 8, 14, generator=gen, device=dev, dtype=torch.bfloat16)
        text = torch.randn(1, 226, cfg["text_embed_dim"], generator=gen, device=dev, dtype=torch.bfloat16)
        with torch.no_grad():
            outs[unit] = model(latents, text, torch.tensor([500], device=dev)).sample.float()
        if unit == "precompiled":
            assert not any(b.forward.fell_back for b in model.transformer_blocks)
            assert [e for _, e in precompiled.events(model.transformer_blocks[0])] == ["built"]
    diff = float((outs["precompiled"] - outs["compiled"]).norm() / outs["compiled"].norm())
    print("precompiled vs compiled, rel. L2: %.3g (attention %s)" % (diff, attention or "sdpa"))
    assert diff < 1e-6
