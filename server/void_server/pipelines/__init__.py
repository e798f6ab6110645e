"""The pipeline registry: `load_pipeline(name, config)` for "void", "preview" and "testing".

Imports are lazy so a server runs the testing or preview pipeline without the VOID stack importable.
`config` is the server's `void_server.config.ServerConfig` (model_dir, memory_mode, options, ...).
"""
from __future__ import annotations

from typing import Any

from .base import Pipeline, PipelineUnavailable

NAMES = ("void", "preview", "testing")
DOWNLOAD_HINT = "run `void-server download` to fetch the VOID weights into the model directory"


def _check_weights(config: Any) -> None:
    """Missing or truncated weights are reported before anything heavy is imported."""
    try:
        from .void.weights import check_model_dir
    except ImportError:
        return  # the import below reports a broken install
    problems = check_model_dir(config.model_dir)
    if problems:
        raise PipelineUnavailable("the VOID weights in %s are missing or incomplete (%s); %s"
                                  % (config.model_dir, "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else ""),
                                     DOWNLOAD_HINT))


def load_pipeline(name: str, config: Any) -> Pipeline:
    """The named pipeline, loaded once (models resident); PipelineUnavailable says why it cannot run here."""
    if name == "testing":
        from .testing import TestingPipeline

        return TestingPipeline(config)
    if name == "preview":
        from .preview import PreviewPipeline

        return PreviewPipeline(config)
    if name == "void":
        _check_weights(config)
        try:
            from .void.pipeline import VoidPipeline
        except ImportError as e:
            raise PipelineUnavailable("the VOID pipeline cannot be imported (%s): reinstall the server extras, then %s"
                                      % (e, DOWNLOAD_HINT))
        try:
            return VoidPipeline.from_config(config)
        except PipelineUnavailable as e:
            message = str(e)
            if "void-server download" not in message:
                message = "%s; %s" % (message, DOWNLOAD_HINT)
            raise PipelineUnavailable(message)
        except (FileNotFoundError, OSError) as e:
            raise PipelineUnavailable("VOID weights missing or unreadable (%s): %s" % (e, DOWNLOAD_HINT))
    raise ValueError("unknown pipeline '%s': one of %s" % (name, ", ".join(NAMES)))
