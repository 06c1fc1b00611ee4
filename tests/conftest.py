"""Shared fixtures: a throwaway MEDCURATE_HOME, a test salt, and generated studies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medcurate.config import Zones
from medcurate.deid.pseudonyms import Keyer
from medcurate.deid.uids import UIDMapper
from medcurate.io import sha256_file
from medcurate.services import labelstudio as ls
from medcurate.synth import generate_studies

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

TEST_SALT = "medcurate-test-salt-not-a-secret"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``longest`` (minutes each) first: pytest-xdist hands tests out in collection
    order, so one worker runs them while the others take everything else, instead of them
    starting last and running alone."""
    items.sort(key=lambda item: item.get_closest_marker("longest") is None)


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
    root = tmp_path_factory.mktemp("synth")
    out, truth = root / "studies", root / "truth"
    generate_studies(out, patients=6, seed=1, truth=truth)
    return out, truth


@pytest.fixture
def release_cohort():  # type: ignore[no-untyped-def]
    """Factory for the store/release tests: writes tiny NIfTI volumes (and masks for abnormal
    samples) under ``root/volumes`` and ``root/labels`` and returns (volumes, labels) tables in
    the volumes.parquet / labels.parquet contract. Patients ``p{start}..``; deterministic."""

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
    home = tmp_path_factory.mktemp("labelstudio-home")
    server = ls.start(home=home, port=ls.free_port(), env={})
    try:
        yield server
    finally:
        ls.stop(home)


@pytest.fixture(scope="session")
def annotation_cohort(labelstudio):  # type: ignore[no-untyped-def]
    """Eight tiny normalized CT volumes in the session Label Studio's MEDCURATE_HOME (its
    ``annotation/`` is the server's local-files root) and a generator-style truth folder for them:
    masks in a flipped (LPS-like) series geometry, labels keyed by ORIGINAL series UIDs (the
    volumes table holds the salt's new UIDs), planted PHI in phi.json and in the truth table's
    folder names. Returns (zones, truth folder, salt bytes)."""
    z = Zones(labelstudio.home).ensure()
    salt = TEST_SALT.encode()
    new_uid = UIDMapper(Keyer(salt))
    truth = z.restricted / "test-truth"
    (truth / "masks").mkdir(parents=True, exist_ok=True)
    z.volumes.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    shape = (40, 36, 9)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = [-30.0, -27.0, 12.0]
    # the series geometry: i and j run the other way (as LPS does), same voxel centres
    series_affine = np.diag([-1.5, -1.5, 3.0, 1.0])
    series_affine[:3, 3] = affine[:3, 3] + [1.5 * (shape[0] - 1), 1.5 * (shape[1] - 1), 0.0]
    ii, jj, kk = np.indices(shape)
    phi, vols, labs = [], [], []
    for n in range(8):
        mask = np.zeros(shape, dtype=np.uint8)
        if n % 4 != 3:  # three of four abnormal: one big lesion, sometimes a small one too
            ci, cj = 12 + 2 * n, 14 + n
            mask[((ii - ci) / 6.5) ** 2 + ((jj - cj) / 5.5) ** 2 + ((kk - 4) / 2.6) ** 2 < 1] = 1
            if n % 2:
                mask[30:32, 26:28, 2:4] = 1
        vol = rng.normal(0.55, 0.05, shape).astype(np.float32)
        vol[mask > 0] -= 0.2
        sid = f"{n:02d}c0ffee{n:08x}"
        original = f"1.2.826.0.1.3680043.8.498.777{n}.{1000 + n}"
        name = f"TESTPATIENT^ANNOTATOR{n:03d}"
        folder = f"TESTPATIENT_ANNOTATOR{n:03d}_MRN9{n}4412"
        phi += [name, folder, f"MRN9{n}4412"]
        nib.save(nib.Nifti1Image(vol, affine), z.volumes / f"{sid}.nii.gz")
        mask_file = f"masks/{folder}/S1_SE001.nii.gz"
        (truth / mask_file).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(mask[::-1, ::-1, :].copy(), series_affine), truth / mask_file)
        vols.append(
            {"sample_id": sid, "patient": f"P-{n:04d}", "series_uid": new_uid(original),
             "modality": "CT", "site": f"S-0{n % 2}", "sex": "F", "age_years": 50.0,
             "nifti_path": f"{sid}.nii.gz", "status": "ok"}
        )  # fmt: skip
        labs.append(
            {"series_uid": original, "label": "abnormal" if mask.any() else "normal",
             "mask_file": mask_file, "series_dir": f"{folder}/20200101_CT/SE001",
             "patient_key": folder}
        )  # fmt: skip
    pd.DataFrame(vols).to_parquet(z.volumes / "volumes.parquet", index=False)
    pd.DataFrame(labs).to_parquet(truth / "labels.parquet", index=False)
    doc = {"phi": sorted(phi), "uids": {"all": [r["series_uid"] for r in labs]}, "patients": {}}
    (truth / "phi.json").write_text(json.dumps(doc))
    return z, truth, salt
