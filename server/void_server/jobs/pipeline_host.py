"""Loads the server's one pipeline once, in the background, and keeps it resident between jobs."""
from __future__ import annotations

import dataclasses
import gc
import logging
import sys
import threading
from typing import Any, Optional

from ..pipelines import load_pipeline
from ..pipelines.base import Pipeline, PipelineUnavailable
from .host_base import BackgroundHost

log = logging.getLogger("void_server")


class PipelineHost(BackgroundHost):
    def __init__(self, name: str, config: Any) -> None:
        super().__init__()
        self.name, self.config = name, config
        self.pipeline: Optional[Pipeline] = None
        self.problem: Optional[str] = None
        self._reload_lock = threading.Lock()

    def load(self) -> None:
        try:
            self.pipeline = load_pipeline(self.name, self.config)
            log.info("pipeline '%s' loaded: %s", self.name, self.pipeline.label)
        except PipelineUnavailable as e:
            self.problem = str(e)
        except Exception as e:  # a broken install must show in /v1/health, not kill the server
            log.exception("loading pipeline '%s' failed", self.name)
            self.problem = "loading the '%s' pipeline failed: %s: %s" % (self.name, type(e).__name__, e)
        if self.problem:
            log.error("pipeline '%s' is NOT available: %s", self.name, self.problem)
        self._done.set()

    @property
    def label(self) -> str:
        return self.pipeline.label if self.pipeline is not None else self.name

    def reload(self, memory_mode: str) -> Pipeline:
        """The pipeline again in another memory mode (after running out of GPU memory); later jobs keep it."""
        with self._reload_lock:
            close = getattr(self.pipeline, "close", None)
            if close is not None:  # a multi-GPU pipeline's other ranks hold GPU memory in processes of their own
                close()
            self.pipeline = None
            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.config = dataclasses.replace(self.config, memory_mode=memory_mode)
            self.pipeline = load_pipeline(self.name, self.config)
            log.warning("pipeline '%s' reloaded with memory mode %s", self.name, memory_mode)
            return self.pipeline
