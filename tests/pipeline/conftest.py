import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
try:
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
except ImportError:  # the client-only install has no torch
    torch = None

SAMPLES = Path(os.environ["VOID_SHARED_DIR"]) / "fixtures" / "void-samples"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-weight model dir in the real layout (tiny configs, random RAFT weights)."""
    pytest.importorskip("diffusers")
    from void_server.pipelines.void.tiny import build_random_model_dir

    return build_random_model_dir(tmp_path_factory.mktemp("models"), size="tiny", raft=True)


def _read(path: Path, frames: int, size) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < frames:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size, interpolation=cv2.INTER_AREA))
    cap.release()
    if not out:
        pytest.skip("cannot decode %s" % path)
    return np.stack(out)


@pytest.fixture(scope="session")
def bigben():
    """(plate uint8 (T, 90, 136, 3), quadmask uint8 (T, 90, 136)): BigBen downscaled 4x, first 12 frames."""
    root = SAMPLES / "BigBen"
    if not (root / "input_video.mp4").is_file():
        pytest.skip("no BigBen sample at %s" % root)
    plate = _read(root / "input_video.mp4", 12, (136, 90))
    mask = _read(root / "trimask_quadmask.mp4", 12, (136, 90))[..., 0]
    return plate, mask
