from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError


def test_defaults_load_and_validate():
    config = load_config()
    assert config.decode.fps == 2.0 and config.embed.model == "sscd_distilled"
    assert config.align.method == "tn"


def test_user_file_overrides_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("decode:\n  fps: 1\nembed:\n  model: sscd\n")
    config = load_config(path)
    assert config.decode.fps == 1.0 and isinstance(config.decode.fps, float)
    assert config.embed.model == "sscd"
    assert config.decode.short_side == load_config().decode.short_side


@pytest.mark.parametrize(
    "text",
    [
        "decode:\n  fsp: 2\n",  # typo
        "decode:\n  fps: fast\n",  # wrong type
        "decode:\n  fps: 0\n",  # out of range
        "embed:\n  model: torchscript\n",  # path missing
        "align: 3\n",  # not a mapping
        "- a\n- b\n",  # not a mapping at all
    ],
)
def test_bad_configs_are_rejected(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_config(path)


@pytest.mark.parametrize("profile", ["fast", "compact", "sscd"])
def test_shipped_profiles_load(profile):
    from pipeline.config import DEFAULT_CONFIG

    config = load_config(DEFAULT_CONFIG.parent / f"{profile}.yaml")
    assert config != load_config()
