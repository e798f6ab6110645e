"""HostCopy: the offload modes' weights lent to a device and restored without copying back (CPU stands in for the
GPU here; pinning needs CUDA and is skipped without it)."""
import numpy as np
import pytest
import torch

from void_server.pipelines.void.host_copy import HostCopy


class _Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 4)
        self.b.weight = self.a.weight  # shared: one host copy
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x):
        return self.b(self.a(x)) * self.scale


def test_lend_and_restore_keep_values_and_the_host_tensors():
    torch.manual_seed(0)
    m = _Tied()
    x = torch.randn(3, 4)
    before = m(x)
    home = HostCopy(m, pin=False)
    assert not home.pinned
    host_ptrs = [p.data_ptr() for p in m.parameters()] + [m.scale.data_ptr()]
    assert home.nbytes == (16 + 4 + 4) * 4 + 4  # the tied weight counted once

    home.lend(torch.device("cpu"))
    lent_ptrs = [p.data_ptr() for p in m.parameters()] + [m.scale.data_ptr()]
    assert not set(lent_ptrs) & set(host_ptrs)  # the module computes on copies
    assert m.b.weight is m.a.weight
    assert torch.equal(m(x), before)
    m.a.weight.data.add_(1.0)  # whatever happens to the lent copy...

    home.restore()
    assert [p.data_ptr() for p in m.parameters()] + [m.scale.data_ptr()] == host_ptrs
    assert torch.equal(m(x), before)  # ...the host copy is what the module has again


def test_a_dropped_model_leaves_the_placement_with_its_host_copy():
    # Placement keys the host copies weakly by module: the copy must not keep its own key alive.
    import gc
    import weakref

    from void_server.pipelines.void.loading import Placement

    placement = Placement(torch.device("cpu"), "gpu")
    m = torch.nn.Linear(3, 3)
    gone = weakref.ref(m)
    placement._host_copies[m] = HostCopy(m, pin=False)
    del m
    gc.collect()
    assert gone() is None and len(placement._host_copies) == 0


def test_the_host_copy_is_one_buffer_of_the_weights_size_every_tensor_a_view():
    from void_server.pipelines.void.host_copy import ALIGN, packed_homes

    tensors = [torch.randn(33, 7).bfloat16(), torch.randn(5), torch.arange(6), torch.tensor(True),
               torch.zeros(0, 3), torch.tensor(2.5), torch.randn(4, 6).t()]  # mixed dtypes, 0-d, empty, strided
    homes, pinned = packed_homes(tensors, pin=False)
    assert not pinned
    for t, h in zip(tensors, homes):
        assert h.dtype == t.dtype and h.shape == t.shape and h.is_contiguous() and torch.equal(h, t)
        assert h.data_ptr() % ALIGN == 0 or h.numel() == 0
    storages = {h.untyped_storage().data_ptr() for h in homes}
    assert len(storages) == 1  # one buffer...
    wanted = sum(t.numel() * t.element_size() for t in tensors)
    assert wanted <= homes[0].untyped_storage().nbytes() <= wanted + ALIGN * (len(tensors) + 1)  # ...of about their size


def test_weights_that_cannot_be_page_locked_stay_in_pageable_memory_with_a_warning(monkeypatch, caplog):
    import numpy as np

    from void_server.pipelines.void import host_copy

    # Without the runtime's error reset a failed registration would poison torch's next launch check: not tried.
    monkeypatch.setattr(host_copy, "_cuda_get_last_error", lambda: None)
    assert "clear" in host_copy._page_lock(np.empty(64, np.uint8))
    monkeypatch.setattr(host_copy, "_page_lock", lambda array: "cudaHostRegister failed with CUDA error 2")
    t = torch.randn(3, 3)
    homes, pinned = host_copy.packed_homes([t], pin=True)
    assert not pinned and torch.equal(homes[0], t)
    assert "cannot page-lock" in caplog.text and "error 2" in caplog.text


def test_to_host_gives_a_contiguous_host_copy_and_pinning_refused_is_none():
    from void_server.pipelines.void.host_copy import pinned_empty, to_host

    t = torch.arange(24.0).reshape(2, 3, 4).transpose(1, 2)  # not contiguous
    got = to_host(t)
    assert got.is_contiguous() and torch.equal(got, t)
    if not torch.cuda.is_available():  # no driver: page-locked memory is refused, the callers copy pageable
        assert pinned_empty((2, 3), torch.float32) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="page-locked copies from a GPU")
def test_on_a_gpu_frames_come_back_through_pinned_memory_or_pageable_where_refused(monkeypatch):
    from void_server.pipelines.void import decoded_frames, host_copy

    video = torch.rand(1, 3, 9, 16, 24, device="cuda")
    got = host_copy.to_host(video)
    assert got.is_pinned() and torch.equal(got, video.cpu())
    stream = decoded_frames.DecodedFrames()
    stream.add(0, video[:, :, :4])
    monkeypatch.setattr(host_copy, "pinned_empty", lambda shape, dtype: None)
    monkeypatch.setattr(decoded_frames, "pinned_empty", lambda shape, dtype: None)
    assert not host_copy.to_host(video).is_pinned() and torch.equal(host_copy.to_host(video), video.cpu())
    stream.add(4, video[:, :, 4:])  # refused: copied at once
    for i in range(9):
        assert np.array_equal(stream.frame(i), video[0, :, i].permute(1, 2, 0).cpu().numpy())
