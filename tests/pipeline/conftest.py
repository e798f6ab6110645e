import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
try:
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
except ImportError:  # the client-only install has no torch
    pass
