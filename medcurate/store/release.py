"""One call from a split samples table to a published version (manifest, datalist, card)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medcurate.store.card import render_card
from medcurate.store.manifest import build_manifest, datalist
from medcurate.store.objects import ObjectStore
from medcurate.store.publish import PublishResult, VersionInfo, publish


def release_dataset(
    store: ObjectStore,
    dataset: str,
    assigned: pd.DataFrame,
    volumes_root: str | Path,
    labels_root: str | Path | None = None,
    synthetic_root: str | Path | None = None,
    config: Mapping[str, Any] | None = None,
    lineage: Mapping[str, Any] | None = None,
    description: str = "",
) -> PublishResult:
    """Build the manifest of ``assigned`` (samples with split and fold) and publish it.

    ``config`` and ``lineage`` go into the card only, never into the manifest digest.
    """
    manifest, sources = build_manifest(assigned, volumes_root, labels_root, synthetic_root)

    def render(info: VersionInfo, m: pd.DataFrame) -> dict[str, bytes]:
        dl = datalist(m, dataset, info.id)
        card = render_card(m, info.id, dataset, config, lineage, description)
        return {
            "dataset.json": (json.dumps(dl, indent=2) + "\n").encode(),
            "card.md": card.encode(),
        }

    return publish(store, dataset, manifest, sources, render)
