"""The augmentation stages on a zones home: GAN on train patches, checked synthetic samples that
enter the next release in train only, the split gate, and a stale generator refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest

from medcurate.augment.gan import GanConfig
from medcurate.augment.patches import CT_SOFT_TISSUE
from medcurate.augment.run import (
    AugmentConfig,
    AugmentError,
    check_synthetic,
    run_gan_model,
    run_synthetic_samples,
)
from medcurate.config import Zones
from medcurate.io import sha256_file
from medcurate.splits import SplitConfig
from medcurate.store.manifest import ManifestError
from medcurate.store.publish import load_manifest, resolve
from medcurate.store.run import (
    ReleaseSettings,
    fresh_synthetic,
    release_store,
    run_curate,
    run_release,
    run_splits,
)
from tests.evaluate_helpers import blob_volumes

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CFG = AugmentConfig(
    gan=GanConfig.small(channels=2, epochs=4),
    lesion_slices_per_sample=4,
    normal_per_sample=4,
    encoder_epochs=2,
    min_synthetic=6,
)


def _home(z: Zones, n: int = 40) -> None:
    """Blob CT volumes and masks in the zones, their tables, curated and split."""
    items = blob_volumes(z.volumes / "blobs", n, size=(48, 48, 8), seed=5, window=CT_SOFT_TISSUE)
    vols, labs = [], []
    for i, d in enumerate(items):
        (z.labels / "masks").mkdir(parents=True, exist_ok=True)
        mask = None
        if "label" in d:
            mask = f"masks/{d['sample_id']}.nii.gz"
            Path(d["label"]).rename(z.labels / mask)
        vols.append(
            {
                "sample_id": d["sample_id"],
                "patient": d["patient"],
                "study_uid": f"2.25.{i}",
                "series_uid": f"2.25.{i}.1",
                "modality": "CT",
                "manufacturer": "ACME",
                "site": d["site"],
                "sex": d["sex"],
                "age_years": d["age_years"],
                "out_shape": [48, 48, 8],
                "out_spacing": [1.5, 1.5, 2.0],
                "nifti_path": f"blobs/{Path(d['image']).name}",
                "nifti_sha256": sha256_file(d["image"]),
                "transform_config_hash": "cfg1",
            }
        )
        labs.append(
            {
                "sample_id": d["sample_id"],
                "label": d["class"],
                "mask_path": mask,
                "source_round": "round-1",
                "agreement": 0.9,
            }
        )
    pd.DataFrame(vols).to_parquet(z.volumes_table, index=False)
    pd.DataFrame(labs).to_parquet(z.labels_table, index=False)
    run_curate(z)
    run_splits(z, SplitConfig(folds=2), release_store(z), "blobs")


def test_gan_synthetic_release_and_gates(zones_tmp: Zones) -> None:
    z = zones_tmp
    _home(z)
    gan = run_gan_model(z, CFG)
    assert gan.path.is_file() and gan.n_lesion > 0 and gan.n_patches > gan.n_lesion
    latest = json.loads((z.gan_models / "latest.json").read_text())
    assert latest["checkpoint_id"] == gan.checkpoint_id and "seconds" not in json.dumps(latest)
    assert gan.metadata()["seconds_per_iteration"] > 0

    syn = run_synthetic_samples(z, CFG)
    assert syn.generated == 2 * syn.wanted and syn.written == syn.wanted - syn.skipped_empty
    assert syn.written > 0 and not syn.problems
    rows = pd.read_parquet(z.synthetic_table)
    assert (rows["split"] == "train").all() and rows["synthetic"].all()
    assert rows["patient"].str.startswith("SYN-").all()
    for r in rows.itertuples():
        img = nib.load(z.synthetic / r.nifti_path)
        mask = nib.load(z.synthetic / r.mask_path).get_fdata()
        assert img.shape == (48, 48, 1) and mask.sum() > 0
        assert sha256_file(z.synthetic / r.nifti_path) == r.nifti_sha256
    md = syn.metadata()
    assert {"quality_mmd", "quality_diversity"} <= set(md) and "![real vs synthetic]" in md[
        "samples"
    ]
    assert check_synthetic(z) == []
    privacy = json.loads((z.synthetic_report / "privacy.json").read_text())
    assert privacy["generated"] == syn.generated and privacy["dropped"] == syn.dropped

    store = release_store(z)
    published = run_release(z, ReleaseSettings("blobs"), store, "run-1")
    manifest = load_manifest(store, resolve(store, "blobs@v1"))
    released = manifest.loc[manifest["synthetic"]]
    assert len(released) == syn.written and (released["split"] == "train").all()
    assert released["mask"].notna().all() and published.metadata()["synthetic"].startswith(
        str(syn.written)
    )

    # the same inputs and seed give the same synthetic files
    before = {r.sample_id: r.nifti_sha256 for r in rows.itertuples()}
    run_synthetic_samples(z, CFG)
    again = pd.read_parquet(z.synthetic_table)
    assert {r.sample_id: r.nifti_sha256 for r in again.itertuples()} == before

    # samples made from another train split are stale: the release leaves them out and says so
    stale = again.assign(train_fingerprint="0" * 64)
    stale.to_parquet(z.synthetic_table, index=False)
    kept, note = fresh_synthetic(z, pd.read_parquet(z.splits_table))
    assert kept.empty and "another train split" in note

    # the split gate: a synthetic sample planted in test stops the release and fails the check
    planted = again.copy()
    planted.loc[planted.index[0], "split"] = "test"
    planted.to_parquet(z.synthetic_table, index=False)
    assert any("outside train (in test)" in p for p in check_synthetic(z))
    with pytest.raises(ManifestError, match="outside train"):
        run_release(z, ReleaseSettings("blobs"), store, "run-2")


def test_stale_generator_and_too_few_lesions(zones_tmp: Zones) -> None:
    z = zones_tmp
    _home(z, n=24)
    run_gan_model(z, replace(CFG, gan=GanConfig.small(channels=2, epochs=1)))
    splits = pd.read_parquet(z.splits_table)
    first_train = splits.index[splits["split"] == "train"][0]
    splits.loc[first_train, "split"] = "validation"  # the train split changed since the GAN ran
    splits.to_parquet(z.splits_table, index=False)
    with pytest.raises(AugmentError, match="another train split"):
        run_synthetic_samples(z, CFG)
    # no lesion in train (of this modality): nothing trained, nothing generated, release goes on
    splits.loc[splits["label"] == "abnormal", "label"] = "normal"
    splits.to_parquet(z.splits_table, index=False)
    gan = run_gan_model(z, CFG)
    assert gan.skipped and "lesion" in gan.summary_line()
    syn = run_synthetic_samples(z, CFG)
    assert syn.written == 0 and "lesion" in syn.summary_line()
    assert pd.read_parquet(z.synthetic_table).empty and check_synthetic(z) == []


def test_new_batch_warm_starts_the_generator_and_a_rerun_reuses_it(zones_tmp: Zones) -> None:
    z = zones_tmp
    _home(z, n=32)
    full = pd.read_parquet(z.splits_table)
    train = full.index[full["split"] == "train"]
    cfg = replace(CFG, gan=GanConfig.small(channels=2, epochs=2))
    # the first release lacks the last four train samples (the second batch brings them)
    full.drop(index=train[-4:]).to_parquet(z.splits_table, index=False)
    first = run_gan_model(z, cfg)
    assert not first.parent and not first.reused
    full.to_parquet(z.splits_table, index=False)
    second = run_gan_model(z, cfg)
    latest = json.loads((z.gan_models / "latest.json").read_text())
    assert second.parent == first.checkpoint_id == latest["parent"]
    assert second.checkpoint_id != first.checkpoint_id
    assert 0 < latest["steps"] < cfg.gan.total_steps(8 * second.n_patches)  # a share of a run
    # the same split and config again: the same generator, nothing trained
    third = run_gan_model(z, cfg)
    assert third.reused and third.checkpoint_id == second.checkpoint_id
    assert "reused" in third.summary_line() and third.metadata()["reused"] is True
    # synthetic_samples reads gan_model's patches instead of the volumes, with the same result
    syn = run_synthetic_samples(z, cfg)
    (z.gan_models / next(z.gan_models.glob("patches-*.npz")).name).unlink()
    again = run_synthetic_samples(z, cfg)
    assert (syn.generated, syn.written) == (again.generated, again.written)
    assert syn.quality.equals(again.quality)
    # a sample the generator saw left train: it starts from scratch
    moved = full.copy()
    moved.loc[train[0], "split"] = "validation"
    moved.to_parquet(z.splits_table, index=False)
    cold = run_gan_model(z, cfg)
    assert not cold.parent and not cold.reused
