"""Loading a transformers model + processor pair from a local folder only (nothing is ever fetched), in bf16 on a
GPU and float32 elsewhere: the one loader the VLM, SAM2 and SAM3 share."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Tuple, Union


def load_local(model_cls: Any, processor_cls: Any, model_dir: Union[str, Path], device: str,
               dtype: Optional[Any] = None) -> Tuple[Any, Any, Any]:
    """-> (model in eval mode on `device`, processor, dtype)."""
    import torch

    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = model_cls.from_pretrained(model_dir, dtype=dtype, local_files_only=True).to(device).eval()
    processor = processor_cls.from_pretrained(model_dir, local_files_only=True)
    return model, processor, dtype
