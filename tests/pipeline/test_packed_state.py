"""packed_state.py: a pass checkpoint read into the empty transformer in one copy equals safetensors' own reading,
and anything it cannot read in one piece is left, untouched, to the tensor-by-tensor path."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from safetensors.torch import load_file, save_file  # noqa: E402

from void_server.pipelines.void.loading import load_transformer, transformer_skeleton  # noqa: E402
from void_server.pipelines.void.packed_state import load_packed, packed_layout, read_header  # noqa: E402
from void_server.pipelines.void.weights import resolve_layout  # noqa: E402


def test_a_pass_checkpoint_read_in_one_copy_equals_safetensors(tiny_model_dir):
    layout = resolve_layout(tiny_model_dir)
    path = layout.pass_files[1]
    model = transformer_skeleton(layout)
    assert load_packed(model, path, torch.device("cpu"), torch.float32)
    want = load_file(str(path))
    got = dict(model.named_parameters())
    assert set(got) == set(want)
    for name, value in want.items():
        assert torch.equal(got[name], value), name
        assert not got[name].requires_grad and not got[name].is_meta
    # one buffer holds them all: the parameters are views of it
    storages = {p.untyped_storage().data_ptr() for p in got.values()}
    assert len(storages) == 1


def test_load_transformer_takes_the_packed_path_and_gives_the_same_model(tiny_model_dir, monkeypatch):
    from void_server.pipelines.void import loading

    layout = resolve_layout(tiny_model_dir)
    packed = load_transformer(layout, 2, torch.device("cpu"), torch.float32)
    monkeypatch.setattr(loading, "load_packed", lambda *a: False)  # the tensor-by-tensor path
    plain = load_transformer(layout, 2, torch.device("cpu"), torch.float32)
    for (name, a), (_, b) in zip(sorted(packed.state_dict().items()), sorted(plain.state_dict().items())):
        assert torch.equal(a, b), name
    assert not packed.training and not any(p.requires_grad for p in packed.parameters())


@pytest.mark.parametrize("change", ["another dtype", "a missing tensor", "an extra tensor", "another shape", "a gap"])
def test_what_cannot_be_read_in_one_piece_is_left_to_the_plain_path(tiny_model_dir, tmp_path, change):
    layout = resolve_layout(tiny_model_dir)
    state = load_file(str(layout.pass_files[1]))
    name = sorted(state)[3]
    if change == "another dtype":
        state[name] = state[name].half()
    elif change == "a missing tensor":
        del state[name]
    elif change == "an extra tensor":
        state["extra.weight"] = torch.zeros(2)
    elif change == "another shape":
        state[name] = state[name].unsqueeze(0)
    path = tmp_path / "void_pass1.safetensors"
    save_file(state, str(path))
    if change == "a gap":  # tensors not back to back: move one entry's offsets past the end
        header, _ = read_header(path)
        end = max(v["data_offsets"][1] for v in header.values())
        header[name]["data_offsets"] = [end + 8, end + 8 + header[name]["data_offsets"][1] - header[name]["data_offsets"][0]]
        params = dict(transformer_skeleton(layout).named_parameters())
        assert packed_layout(header, params, torch.float32) is None
        return
    model = transformer_skeleton(layout)
    assert not load_packed(model, path, torch.device("cpu"), torch.float32)
    assert all(p.is_meta for p in model.parameters())  # untouched


def test_a_tensor_off_a_16_byte_boundary_is_left_to_the_plain_path():
    # A view there would be misaligned where a tensor of its own never is (cuBLAS and inductor assume 16 bytes).
    params = {"a": torch.nn.Parameter(torch.empty(3, device="meta")), "b": torch.nn.Parameter(torch.empty(4, device="meta"))}
    header = {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
              "b": {"dtype": "F32", "shape": [4], "data_offsets": [12, 28]}}
    assert packed_layout(header, params, torch.float32) is None
    params["a"] = torch.nn.Parameter(torch.empty(4, device="meta"))
    header["a"], header["b"] = ({"dtype": "F32", "shape": [4], "data_offsets": [16, 32]},
                                {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]})
    assert packed_layout(header, params, torch.float32) == ["b", "a"]
