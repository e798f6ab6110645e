"""A safetensors checkpoint read into a model's empty parameters in one copy.

Why: safetensors' `load_file` makes a few torch calls per tensor, and each one releases and retakes the GIL.
Beside a thread that holds the GIL (dynamo's tracing, a reasoning model, the server's own threads), every retake
waits up to Python's switch interval (5 ms), thousands of times: a pass transformer that loads in 1.7-1.9 s alone
took 33-35 s beside such a thread on an H100 (bench/bench_load.py, docs/performance.md). Here the file's data
section goes to the device in one copy and every parameter becomes a view of it, all made by one call: 1.3-1.7 s
alone, 3.9-5.6 s beside the same thread.

Only for files whose tensors all have the target dtype, lie back to back (what safetensors writes) at 16-byte
boundaries and match the model's parameters by name and shape; anything else is left to the tensor-by-tensor path,
which also says what does not match.
"""
from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
# Every view starts 16-byte aligned, as a tensor of its own would: cuBLAS and inductor's kernels assume it.
ALIGNMENT = 16


def read_header(path: Path) -> Tuple[Dict[str, dict], int]:
    """(tensor name -> {"dtype", "shape", "data_offsets"}, where the data section starts)."""
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header, 8 + size


def packed_layout(header: Dict[str, dict], params: Dict[str, torch.nn.Parameter],
                  dtype: torch.dtype) -> Optional[List[str]]:
    """The parameter names in file order where the file can be read in one piece into `params`; else None."""
    if set(header) != set(params):
        return None
    order = sorted(header, key=lambda k: header[k]["data_offsets"][0])
    end = 0
    for name in order:
        entry = header[name]
        start, stop = entry["data_offsets"]
        if (start != end or start % ALIGNMENT or _DTYPES.get(entry["dtype"]) is not dtype
                or tuple(entry["shape"]) != tuple(params[name].shape)):
            return None
        end = stop
    return order


def load_packed(model: torch.nn.Module, path: Path, device: torch.device, dtype: torch.dtype) -> bool:
    """Fill `model`'s parameters (e.g. on the meta device) from `path`, on `device`, without gradients. Returns
    False, having changed nothing, where the file is not laid out for it (see the module's docstring)."""
    header, data_start = read_header(path)
    params = dict(model.named_parameters())
    order = packed_layout(header, params, dtype)
    if order is None:
        return False
    nbytes = header[order[-1]]["data_offsets"][1] if order else 0
    data = torch.empty(nbytes, dtype=torch.uint8, device=device)
    # ACCESS_COPY: a private mapping, writable as torch.frombuffer wants it to be; the file is never written
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as mapped:
        data.copy_(torch.frombuffer(mapped, dtype=torch.uint8, offset=data_start, count=nbytes))  # GIL released
    views = torch._utils._unflatten_dense_tensors(data.view(dtype), [params[name] for name in order])
    for name, view in zip(order, views):
        owner, _, attr = name.rpartition(".")
        # what load_state_dict(assign=True) does, without a torch call per parameter
        model.get_submodule(owner)._parameters[attr] = torch.nn.Parameter(view, requires_grad=False)
    return True
