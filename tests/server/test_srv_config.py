"""Settings merge as documented: defaults < config file < VOID_* environment < flags."""
from __future__ import annotations

from pathlib import Path

import pytest

from void_server.cli import build_parser, config_from
from void_server.config import DEFAULT_HOST, ConfigError, load_config


def test_precedence_file_env_flags(tmp_path):
    cfg = tmp_path / "void.yaml"
    cfg.write_text("port: 9000\nconcurrency: 2\ntoken: from-file\nallowed_roots: [/mnt/a]\noptions: {step_delay: 0.5}\n")
    config = load_config({"port": 9100, "options": {"x": 1}}, cfg, {"VOID_TOKEN": "from-env", "VOID_CONCURRENCY": "3"})
    assert config.port == 9100  # flag beats all
    assert config.concurrency == 3 and config.token == "from-env"  # environment beats the file
    assert config.allowed_roots == [Path("/mnt/a")] and config.options == {"step_delay": 0.5, "x": 1}
    assert config.host == DEFAULT_HOST == "127.0.0.1"  # loopback unless told otherwise


def test_cli_flags_reach_the_config(tmp_path):
    args = build_parser().parse_args(["serve", "--pipeline", "testing", "--data-dir", str(tmp_path),
                                      "--allowed-root", "/a", "--allowed-root", "/b", "--pipeline-option", "step_delay=0.1"])
    config = config_from(args)
    assert config.pipeline == "testing" and config.data_dir == tmp_path
    assert config.allowed_roots == [Path("/a"), Path("/b")] and config.options == {"step_delay": 0.1}


@pytest.mark.parametrize("text, words", [
    ("pipline: testing\n", "unknown setting(s) pipline"),
    ("port: many\n", "port must be a number"),
    ("memory_mode: lots\n", "memory_mode 'lots' is not one of"),
])
def test_bad_config_file_names_the_setting(tmp_path, text, words):
    cfg = tmp_path / "void.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config({}, cfg, {})
    assert words in str(e.value)


def test_warm_up_flags_and_environment(tmp_path):
    parse = build_parser().parse_args
    base = ["serve", "--pipeline", "testing", "--data-dir", str(tmp_path)]
    assert config_from(parse(base)).warm_up is None  # the pipeline decides: on where it runs on a GPU
    assert config_from(parse(base + ["--warm-up"])).warm_up is True
    assert config_from(parse(base + ["--no-warm-up"])).warm_up is False
    assert load_config({}, None, {"VOID_WARM_UP": "no"}).warm_up is False
    with pytest.raises(ConfigError, match="warm_up must be true or false"):
        load_config({}, None, {"VOID_WARM_UP": "later"})
