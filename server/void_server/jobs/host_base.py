"""What every pipeline host shares (the single-machine PipelineHost, the Ray ClusterHost): it loads once, in the
background, and the API and job manager ask whether it is ready."""
from __future__ import annotations

import threading
from typing import Any, Dict, Optional


class BackgroundHost:
    pipeline: Optional[Any] = None
    problem: Optional[str] = None

    def __init__(self) -> None:
        self._done = threading.Event()
        self._start_lock = threading.Lock()
        self._started = False

    def load(self) -> None:
        """Load (subclasses); must end with `self._done.set()` whatever happens."""
        raise NotImplementedError

    def start_loading(self) -> None:
        # The CLI and the app's start-up may both ask: the models must load once, not twice at the same time.
        with self._start_lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self.load, name="%s-loader" % type(self).__name__, daemon=True).start()

    @property
    def loading(self) -> bool:
        return not self._done.is_set()

    @property
    def ready(self) -> bool:
        return self.pipeline is not None

    @property
    def loading_message(self) -> str:
        """What health says while the host loads."""
        return "loading the '%s' pipeline" % getattr(self, "name", "?")

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._done.wait(timeout)


class HostView:
    """What `host.pipeline` is where no one pipeline object stands for the host (several slots, a Ray cluster):
    health's `models` is its describe(); it runs no jobs."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self.name = host.name

    @property
    def label(self) -> str:
        return self.host.label

    def describe(self) -> Dict[str, object]:
        raise NotImplementedError
