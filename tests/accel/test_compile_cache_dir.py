"""The compile cache folder a server is given (DATA_DIR/compile-cache) is the one inductor uses, though torch sets
TORCHINDUCTOR_CACHE_DIR to its /tmp default itself as soon as torch._dynamo is imported; a folder named in the
server's own environment wins. Each case runs in a fresh interpreter: the import order is what is tested."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SERVER = str(Path(__file__).resolve().parents[2] / "server")
PROBE = """
import sys
sys.path.insert(0, {server!r})
import void_server
import torch._dynamo  # what importing diffusers does: torch picks its default folder and sets the variable
from pathlib import Path
from torch._inductor.runtime.cache_dir_utils import cache_dir
from void_server.pipelines.void.accel import compile_cache_dir
print(compile_cache_dir(Path({root!r})))
print(cache_dir())
import os
print(os.environ.get("FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED"), os.environ.get("FLASH_ATTENTION_CUTE_DSL_CACHE_DIR"))
"""


def _probe(root: Path, env_dir: str = None, **more: str) -> list:
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR" and not k.startswith("FLASH_ATTENTION")}
    if env_dir is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = env_dir
    env.update(more)
    out = subprocess.run([sys.executable, "-c", PROBE.format(server=SERVER, root=str(root))], env=env,
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_the_servers_folder_is_used_though_torch_set_its_default_first(tmp_path):
    root = tmp_path / "data" / "compile-cache"
    used, inductor, fa4_on, fa4_dir = _probe(root)
    assert used == inductor == str(root)
    assert root.is_dir()
    # FlashAttention-4's kernels are kept in the same folder
    assert (fa4_on, fa4_dir) == ("1", str(root / "flash-attn-4"))


def test_a_flashattention_cache_setting_of_the_users_own_wins(tmp_path):
    _, _, fa4_on, fa4_dir = _probe(tmp_path / "cc", FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED="0",
                                   FLASH_ATTENTION_CUTE_DSL_CACHE_DIR=str(tmp_path / "theirs"))
    assert (fa4_on, fa4_dir) == ("0", str(tmp_path / "theirs"))


def test_a_folder_named_in_the_environment_at_start_wins(tmp_path):
    mine = tmp_path / "mine"
    used, inductor, _, _ = _probe(tmp_path / "data" / "compile-cache", env_dir=str(mine))
    assert used == inductor == str(mine)


def test_torchs_own_default_passed_on_by_a_parent_process_does_not_count(tmp_path):
    # A launcher (or this test run) that imported torch._dynamo has the variable set to torch's default and hands
    # it to the server it starts: that is not a choice, and the server's folder is used.
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    root = tmp_path / "data" / "compile-cache"
    used, inductor, _, _ = _probe(root, env_dir=default_cache_dir())
    assert used == inductor == str(root)
