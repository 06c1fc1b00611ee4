"""Normalization settings: one YAML file for every modality, and the hash that versions them.

The hash of a modality's effective settings (plus :data:`CODE_VERSION`, bumped when the code
changes what it writes) goes into every volume row, so incremental runs recompute exactly the
series whose settings changed and nothing else.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medcurate.io import sha256_text

# Bump when the transform code changes its output for the same settings.
CODE_VERSION = "normalize-1"

DEFAULT_CONFIG_RESOURCE = "normalize.yaml"


@dataclass(frozen=True)
class AssemblyConfig:
    """Tolerances for turning instances into a regular stack of slices."""

    spacing_abs_tol_mm: float = 0.01
    spacing_rel_tol: float = 0.01
    collinear_tol_mm: float = 0.1
    min_slices: int = 2
    projection_modalities: tuple[str, ...] = ("CR", "DX", "MG", "RF", "XA", "PX", "IO")


@dataclass(frozen=True)
class NormalizeConfig:
    """The parsed config file: assembly tolerances and per-modality transform settings."""

    assembly: AssemblyConfig
    defaults: dict[str, Any]
    modalities: dict[str, dict[str, Any]] = field(default_factory=dict)

    def settings(self, modality: str) -> dict[str, Any]:
        """Effective transform settings for a modality: its section merged over the defaults."""
        merged = copy.deepcopy(self.defaults)
        for key, value in self.modalities.get(modality.upper(), {}).items():
            merged[key] = copy.deepcopy(value)
        return merged

    def config_hash(self, modality: str) -> str:
        """Short hash of what decides a volume's bytes for this modality (settings + code)."""
        return settings_hash(self.settings(modality))


def settings_hash(settings: dict[str, Any]) -> str:
    blob = json.dumps({"code": CODE_VERSION, "settings": settings}, sort_keys=True)
    return sha256_text(blob)[:16]


def load_config(path: Path | None = None) -> NormalizeConfig:
    """Read the config file (default: the packaged ``medcurate/data/normalize.yaml``)."""
    if path is None:
        text = (resources.files("medcurate") / "data" / DEFAULT_CONFIG_RESOURCE).read_text()
    else:
        text = Path(path).read_text()
    raw = yaml.safe_load(text) or {}
    asm = raw.get("assembly", {}) or {}
    assembly = AssemblyConfig(
        spacing_abs_tol_mm=float(asm.get("spacing_abs_tol_mm", 0.01)),
        spacing_rel_tol=float(asm.get("spacing_rel_tol", 0.01)),
        collinear_tol_mm=float(asm.get("collinear_tol_mm", 0.1)),
        min_slices=int(asm.get("min_slices", 2)),
        projection_modalities=tuple(
            str(m).upper()
            for m in asm.get("projection_modalities", AssemblyConfig.projection_modalities)
        ),
    )
    defaults = raw.get("defaults", {}) or {}
    modalities = {str(k).upper(): dict(v or {}) for k, v in (raw.get("modalities") or {}).items()}
    return NormalizeConfig(assembly=assembly, defaults=dict(defaults), modalities=modalities)
