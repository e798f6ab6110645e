"""Text-prompted segmentation for objects the VLM names but does not locate: SAM3 finds every instance of the name.

As the reference does, SAM3 runs on every `every`-th frame (keyframes 0, every, 2*every, ...). The reference then
holds each keyframe's mask up to the next one; the caller here hands the keyframes to SAM2 as mask prompts
instead, which tracks the object through the frames between (auto.py). It keeps only pieces near the target
(segment.keep_near): a name like "cup" matches every cup in the shot.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence, Union

import numpy as np


class Sam3TextSegmenter:
    """Sam3Model + Sam3Processor from a local folder (facebook/sam3 layout; its sam3_video config loads too)."""

    def __init__(self, model: Any, processor: Any, device: str, dtype: Any, threshold: float = 0.5,
                 mask_threshold: float = 0.5, batch: int = 4) -> None:
        self.model, self.processor, self.device, self.dtype = model, processor, device, dtype
        self.threshold, self.mask_threshold = threshold, mask_threshold  # instance score, mask logit (sigmoid)
        self.batch = batch  # keyframes per forward pass: bounds the ViT's activation memory at 1008 px

    @classmethod
    def from_pretrained(cls, model_dir: Union[str, Path], device: str = "cuda") -> "Sam3TextSegmenter":
        from transformers import Sam3Model, Sam3Processor

        from .local_models import load_local

        model, processor, dtype = load_local(Sam3Model, Sam3Processor, model_dir, device)
        return cls(model, processor, device, dtype)

    def keyframes(self, frames: Sequence[np.ndarray], name: str, every: int = 5) -> Dict[int, np.ndarray]:
        """uint8 RGB frames (T, H, W, 3) and an object's name -> keyframe index -> (H, W) bool, the union of the
        instances SAM3 finds there (all False where it finds none)."""
        import torch

        t, h, w = len(frames), frames[0].shape[0], frames[0].shape[1]
        every = max(1, int(every))
        keys = list(range(0, t, every))
        out = {k: np.zeros((h, w), bool) for k in keys}
        with torch.inference_mode():
            for start in range(0, len(keys), self.batch):
                chunk = keys[start:start + self.batch]
                inputs = self.processor(images=[frames[k] for k in chunk], text=[name] * len(chunk),
                                        return_tensors="pt").to(self.device)
                inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
                outputs = self.model(**inputs)
                results = self.processor.post_process_instance_segmentation(
                    outputs, threshold=self.threshold, mask_threshold=self.mask_threshold,
                    target_sizes=[(h, w)] * len(chunk))
                for k, result in zip(chunk, results):
                    masks = result["masks"]
                    if len(masks):
                        out[k] = masks.bool().any(dim=0).cpu().numpy()
        return out

    def unload(self) -> None:
        self.model = None
        self.processor = None
