"""``medcurate.datasets.load(name, version)``: a released version as Python objects for training.

>>> ds = load("medcurate-demo", "v2")                     # doctest: +SKIP
>>> ds.manifest                                           # one row per sample (DataFrame)
>>> ds.split("train")                                     # rows of one split
>>> ds.data_dicts("train")                                # MONAI dicts; pulls files on first use
>>> monai.data.Dataset(ds.data_dicts("train"), transforms)  # doctest: +SKIP

The manifest is read from the store and verified (file sha256, manifest digest, paths, and the
version's signature when ``MEDCURATE_STORE_KEY`` is set: ``ds.signature`` says which). Files are
pulled lazily, verified, into ``cache_dir`` (default
``$MEDCURATE_HOME/cache/datasets/<name>/<vN>``); versions pulled side by side share unchanged files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medcurate.config import zones
from medcurate.splits import ALL_SPLITS
from medcurate.store.manifest import data_dict
from medcurate.store.objects import ObjectStore, StoreError, open_store
from medcurate.store.publish import (
    VersionInfo,
    load_manifest,
    read_version_file,
    resolve,
    signature_status,
)
from medcurate.store.pull import PullResult, pull, pull_record
from medcurate.store.reports import full_card, list_reports


@dataclass
class Dataset:
    """One immutable version: its manifest, its splits, and MONAI-ready data dicts."""

    info: VersionInfo
    manifest: pd.DataFrame
    store: ObjectStore = field(repr=False)
    cache_dir: Path = field(repr=False)
    signature: str = ""  # "signature verified", "unsigned" or "signed, not verified (...)"

    @property
    def name(self) -> str:
        return self.info.dataset

    @property
    def version(self) -> str:
        return self.info.version

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def splits(self) -> list[str]:
        return [s for s in ALL_SPLITS if s in set(self.manifest["split"])]

    def split(self, name: str) -> pd.DataFrame:
        """Manifest rows of one split (``train``, ``validation``, ``test``, ``external``)."""
        if name not in ALL_SPLITS:
            raise ValueError(f"unknown split {name!r}: one of {', '.join(ALL_SPLITS)}")
        return self.manifest.loc[self.manifest["split"] == name].reset_index(drop=True)

    def fold(self, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Cross-validation fold ``k`` of train: (train rows without fold k, rows of fold k)."""
        train = self.split("train")
        return (
            train.loc[train["fold"] != k].reset_index(drop=True),
            train.loc[train["fold"] == k].reset_index(drop=True),
        )

    def pull(self, dest: str | os.PathLike[str] | None = None, fmt: str = "nifti") -> PullResult:
        """Pull the files (verified) to ``dest`` (default: the cache folder)."""
        return pull(self.store, self.info.ref, dest or self.cache_dir, fmt=fmt)

    def local_dir(self) -> Path:
        """The cache folder with this version's files, pulling it first when needed."""
        rec = pull_record(self.cache_dir)
        if rec is None or rec.get("digest") != self.info.digest or rec.get("format") != "nifti":
            self.pull(self.cache_dir)
        return self.cache_dir

    def data_dicts(self, split: str | None = None) -> list[dict[str, Any]]:
        """MONAI data dicts (``image``, ``label`` mask when present, ``class``, ``sample_id``,
        ``fold``) with absolute local paths, for one split or all."""
        base = self.local_dir()
        rows = self.manifest if split is None else self.split(split)
        return [data_dict(r, base) for r in rows.to_dict("records")]

    def datalist(self) -> dict[str, Any]:
        """The version's MONAI datalist (dataset.json) with paths relative to the pulled folder."""
        return dict(json.loads(read_version_file(self.store, self.info, "dataset.json")))

    def card(self) -> str:
        """The dataset card: the released card.md followed by the sections of the reports
        attached since (evaluation, augmentation), each verified."""
        return full_card(self.store, self.info)

    def reports(self) -> list[str]:
        """Kinds of the reports attached to this version (e.g. ``evaluation``)."""
        return list_reports(self.store, self.info)


def load(
    name: str,
    version: str = "latest",
    root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Open ``name`` at ``version`` (``vN`` or ``latest``) from the store at ``root``
    (folder or fsspec URL; default $MEDCURATE_STORE, else MEDCURATE_HOME/releases)."""
    if "@" in name:
        raise StoreError("pass the version separately: load('name', 'vN')")
    store = open_store(root, must_exist=True)
    info = resolve(store, f"{name}@{version}")
    manifest = load_manifest(store, info)  # refuses unsigned/forged versions under a store key
    if cache_dir is None:
        cache = zones().dataset_cache(info.dataset, info.version)
    else:
        cache = Path(cache_dir)
    signature = signature_status(store, info)
    return Dataset(info=info, manifest=manifest, store=store, cache_dir=cache, signature=signature)
