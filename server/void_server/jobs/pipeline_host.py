"""Loads the server's one pipeline once, in the background, and keeps it resident between jobs."""
from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from ..pipelines import load_pipeline
from ..pipelines.base import Pipeline, PipelineUnavailable

log = logging.getLogger("void_server")


class PipelineHost:
    def __init__(self, name: str, config: Any) -> None:
        self.name, self.config = name, config
        self.pipeline: Optional[Pipeline] = None
        self.problem: Optional[str] = None
        self._done = threading.Event()

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

    def start_loading(self) -> None:
        threading.Thread(target=self.load, name="pipeline-loader", daemon=True).start()

    @property
    def loading(self) -> bool:
        return not self._done.is_set()

    @property
    def ready(self) -> bool:
        return self.pipeline is not None

    @property
    def label(self) -> str:
        return self.pipeline.label if self.pipeline is not None else self.name

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._done.wait(timeout)
