"""Asking a VLM about the clip: the local transformers backend, and the ask-parse-retry loop any backend uses.

Messages are our own small format: [{"role": "system"|"user"|"assistant", "content": [blocks]}] with blocks
{"type": "text", "text": str} or {"type": "image", "image": uint8 RGB ndarray}. Images are always in-memory
arrays we rendered: transformers never gets a path or URL to load, and the model's text only ever goes to the
parser.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Union

import numpy as np

from .prompt import SYSTEM_PROMPT, retry_prompt
from .schema import Answer, ParseError

Message = Dict[str, Any]

# config.json model_type -> transformers class name (the VLMs the prompt was written and tested for).
MODEL_CLASSES = {
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
}


class VLMBackend(Protocol):
    name: str

    def chat(self, messages: List[Message]) -> str:
        """The assistant's reply text to the conversation."""


def model_class_for(model_dir: Path) -> Any:
    """The transformers model class for a checkpoint folder, from its config.json's model_type."""
    import transformers

    cfg_path = Path(model_dir) / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError("%s has no config.json: not a transformers checkpoint folder" % model_dir)
    model_type = json.loads(cfg_path.read_text()).get("model_type", "")
    # Anything else that declares itself image-text-to-text is tried through the auto class.
    return getattr(transformers, MODEL_CLASSES.get(model_type, "AutoModelForImageTextToText"))


class LocalVLM:
    """A transformers VLM from a local folder (Qwen3-VL-8B-Instruct by default). Never downloads anything."""

    def __init__(self, model: Any, processor: Any, name: str, max_new_tokens: int = 1536) -> None:
        self.model, self.processor, self.name, self.max_new_tokens = model, processor, name, max_new_tokens

    @classmethod
    def from_pretrained(cls, model_dir: Union[str, Path], device: str = "cuda", dtype: Optional[str] = None,
                        max_new_tokens: int = 1536) -> "LocalVLM":
        import torch
        from transformers import AutoProcessor

        from .local_models import load_local

        model_dir = Path(model_dir)
        model, processor, _ = load_local(model_class_for(model_dir), AutoProcessor, model_dir, device,
                                         getattr(torch, dtype) if dtype else None)
        return cls(model, processor, model_dir.name, max_new_tokens)

    def chat(self, messages: List[Message]) -> str:
        import torch
        from PIL import Image

        images = [Image.fromarray(b["image"]) for m in messages for b in m["content"] if b["type"] == "image"]
        # Image blocks go to the template as bare placeholders; the pixels go to the processor directly.
        template_msgs = [
            {"role": m["role"], "content": [{"type": "image"} if b["type"] == "image" else b for b in m["content"]]}
            for m in messages
        ]
        text = self.processor.apply_chat_template(template_msgs, tokenize=False, add_generation_prompt=True)
        inputs = self.processor(text=[text], images=images or None, return_tensors="pt").to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0]

    def unload(self) -> None:
        self.model = None
        self.processor = None


@dataclasses.dataclass
class AskResult:
    answer: Optional[Answer]  # None: malformed twice
    replies: List[str]  # the raw replies, for the job log
    error: str = ""  # the last parse error when answer is None


def ask(backend: VLMBackend, images: List[np.ndarray], prompt: str, parse: Callable[[str], Answer]) -> AskResult:
    """One question with the frames; a malformed answer is asked again once, with the parse error quoted."""
    messages: List[Message] = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": [{"type": "image", "image": im} for im in images] + [{"type": "text", "text": prompt}]},
    ]
    replies: List[str] = []
    error = ""
    for attempt in range(2):
        reply = backend.chat(messages)
        replies.append(reply)
        try:
            return AskResult(parse(reply), replies)
        except ParseError as e:
            error = str(e)
        messages = messages + [
            {"role": "assistant", "content": [{"type": "text", "text": reply[:4000]}]},
            {"role": "user", "content": [{"type": "text", "text": retry_prompt(error)}]},
        ]
    return AskResult(None, replies, error)
