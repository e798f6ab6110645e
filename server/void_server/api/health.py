"""What /v1/health and `void-server doctor` report about this machine."""
from __future__ import annotations

import sys
from typing import Dict, List


def server_version() -> str:
    try:
        from importlib.metadata import version

        return version("void-for-nuke")
    except Exception:  # running from a source tree that was never installed
        return "0+unknown"


def gpu_info(import_torch: bool = True) -> List[Dict[str, object]]:
    """One entry per CUDA device with its free and total memory; empty without CUDA (or without torch).

    With `import_torch` False only an already imported torch is asked: importing it takes seconds, too long for
    a health request (the serve command imports it in the background for the GPU pipelines).
    """
    torch = sys.modules.get("torch")
    if torch is None and import_torch:
        try:
            import torch
        except ImportError:
            return []
    if torch is None:
        return []
    try:
        if not torch.cuda.is_available():
            return []
        gpus = []
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            gpus.append({"index": i, "name": torch.cuda.get_device_name(i),
                         "free_vram_gib": round(free / 2**30, 2), "total_vram_gib": round(total / 2**30, 2)})
        return gpus
    except (AttributeError, ImportError):  # torch still being imported by the serve command's background thread
        return []
