"""HostCopy: the offload modes' weights lent to a device and restored without copying back (CPU stands in for the
GPU here; pinning needs CUDA and is skipped without it)."""
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
