"""Shared fixtures: a throwaway MEDCURATE_HOME, a test salt, and generated studies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medcurate.config import Zones

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

TEST_SALT = "medcurate-test-salt-not-a-secret"


@pytest.fixture
def zones_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Zones:
    """An empty MEDCURATE_HOME with its zones, set in the environment for the test."""
    home = tmp_path / "home"
    monkeypatch.setenv("MEDCURATE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    return Zones(home).ensure()


@pytest.fixture
def salt(monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setenv("MEDCURATE_DEID_SALT", TEST_SALT)
    return TEST_SALT.encode()


@pytest.fixture(scope="session")
def synth_studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small generated cohort shared by the session: (studies folder, truth folder). Read-only."""
    from medcurate.synth import generate_studies

    root = tmp_path_factory.mktemp("synth")
    out, truth = root / "studies", root / "truth"
    generate_studies(out, patients=6, seed=1, truth=truth)
    return out, truth


@pytest.fixture
def release_cohort():  # type: ignore[no-untyped-def]
    """Factory for the store/release tests: writes tiny NIfTI volumes (and masks for abnormal
    samples) under ``root/volumes`` and ``root/labels`` and returns (volumes, labels) tables in
    the volumes.parquet / labels.parquet contract. Patients ``p{start}..``; deterministic."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    def make(root: Path, patients: int = 12, start: int = 0, seed: int = 0, variant: int = 0):  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(seed + start)
        vol_root, lab_root = root / "volumes", root / "labels"
        vols, labs = [], []
        for i in range(start, start + patients):
            sex = ["F", "M"][i % 2]
            site = ["site-a", "site-b", "site-c"][i % 3]
            age = 20 + (i * 7) % 70
            for j in range(1 + i % 2):
                sid = f"s{i:04d}{j}"
                arr = rng.integers(0, 255, size=(8, 8, 4)).astype(np.int16) + variant * i
                rel = f"p{i:04d}/{sid}.nii.gz"
                (vol_root / rel).parent.mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(arr, np.eye(4)), vol_root / rel)
                from medcurate.hashing import sha256_file

                vols.append(
                    {
                        "sample_id": sid,
                        "patient": f"p{i:04d}",
                        "study_uid": f"2.25.{i}",
                        "series_uid": f"2.25.{i}.{j}",
                        "modality": ["CT", "MR"][j % 2],
                        "manufacturer": "ACME",
                        "site": site,
                        "sex": sex,
                        "age_years": float(age),
                        "out_shape": [8, 8, 4],
                        "out_spacing": [1.0, 1.0, 2.5],
                        "nifti_path": rel,
                        "nifti_sha256": sha256_file(vol_root / rel),
                        "transform_config_hash": "cfg1",
                    }
                )
                label = ["normal", "abnormal", "normal", "unreadable"][(i + j) % 4]
                mask = None
                if label == "abnormal":
                    mask = f"masks/{sid}.nii.gz"
                    (lab_root / "masks").mkdir(parents=True, exist_ok=True)
                    m = (arr > 128).astype(np.uint8)
                    nib.save(nib.Nifti1Image(m, np.eye(4)), lab_root / mask)
                labs.append(
                    {
                        "sample_id": sid,
                        "label": label,
                        "mask_path": mask,
                        "source_round": "round-1",
                        "agreement": 0.8,
                    }
                )
        return pd.DataFrame(vols), pd.DataFrame(labs)

    return make


@pytest.fixture(scope="session")
def labelstudio(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real Label Studio for the session, in a throwaway MEDCURATE_HOME on a free port.

    Started from the pre-migrated template (seconds), with generated credentials (the calling
    environment's LABEL_STUDIO_* values are ignored), stopped after the session.
    """
    from medcurate.services import labelstudio as ls

    home = tmp_path_factory.mktemp("labelstudio-home")
    server = ls.start(home=home, port=ls.free_port(), env={})
    try:
        yield server
    finally:
        ls.stop(home)
