"""The one settings file: per-modality merge over defaults, and hashes that move with settings."""

from __future__ import annotations

from pathlib import Path

from medcurate.normalize.config import CODE_VERSION, load_config, settings_hash


def test_packaged_config_has_ct_window_mr_zscore_and_2d_projections() -> None:
    cfg = load_config()
    assert cfg.settings("CT")["intensity"]["kind"] == "hu_window"
    assert cfg.settings("mr")["intensity"]["kind"] == "percentile_zscore"
    assert cfg.settings("CR")["spacing"] is None
    assert cfg.settings("PT")["spacing"] == cfg.defaults["spacing"]  # no section: the defaults
    assert "CR" in cfg.assembly.projection_modalities and cfg.assembly.min_slices == 2


def test_hash_is_per_modality_and_follows_settings(tmp_path: Path) -> None:
    cfg = load_config()
    assert cfg.config_hash("CT") == load_config().config_hash("CT")
    assert cfg.config_hash("CT") != cfg.config_hash("MR")
    text = (
        next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
        / "medcurate"
        / "data"
        / "normalize.yaml"
    ).read_text()
    changed = tmp_path / "n.yaml"
    changed.write_text(text.replace("a_max: 1000.0", "a_max: 400.0"))
    other = load_config(changed)
    assert other.config_hash("CT") != cfg.config_hash("CT")
    assert other.config_hash("MR") == cfg.config_hash("MR")
    assert settings_hash({"a": 1}) != settings_hash({"a": 2}) and CODE_VERSION


def test_settings_are_copies() -> None:
    cfg = load_config()
    cfg.settings("CT")["intensity"]["a_min"] = 0
    assert cfg.settings("CT")["intensity"]["a_min"] == -1000.0
