"""``annotation_model[round]`` materializes through Dagster: proposals in round 1, a trained
model from round 2, predictions in each volume's geometry, PHI-free metadata."""

from __future__ import annotations

import dagster as dg
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from assets.annotation_model import annotation_model
from assets.resources import MedcurateHome
from medcurate.config import Zones


def _write_home(z: Zones, n: int = 4) -> None:
    z.volumes.mkdir(parents=True, exist_ok=True)
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    rows = []
    for i in range(n):
        rng = np.random.default_rng(i)
        x, y, k = np.mgrid[:48, :48, :16]
        v = np.where((x - 24) ** 2 + (y - 24) ** 2 < 20**2, 0.53, 0.0).astype(np.float32)
        m = ((x - 20) ** 2 + (y - 26) ** 2 + (k - 8) ** 2 * 4 < 25).astype(np.uint8)
        if i % 2 == 0:
            v[m > 0] = 0.56  # 120 HU in 60 HU tissue
        v += rng.normal(0, 0.003, v.shape).astype(np.float32)
        sid = f"smp{i}"
        nib.save(nib.Nifti1Image(v, aff), z.volumes / f"{sid}.nii.gz")
        if i % 2 == 0:
            (z.labels / "masks").mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(m, aff), z.labels / "masks" / f"{sid}.nii.gz")
        rows.append(dict(sample_id=sid, patient=f"pt{i}", site="S-1", modality="CT",
                         nifti_path=f"{sid}.nii.gz", status="ok"))  # fmt: skip
    pd.DataFrame(rows).to_parquet(z.volumes_table)


def _materialize(
    z: Zones, instance: dg.DagsterInstance, key: str, **config: float
) -> dg.ExecuteInMemoryResult:
    cfg = {"epochs": 2, "steps_per_epoch": 4, **config}
    return dg.materialize(
        [annotation_model],
        partition_key=key,
        instance=instance,
        resources={"home": MedcurateHome(home=str(z.home))},
        run_config={"ops": {"annotation_model": {"config": cfg}}},
    )


@pytest.mark.integration
@pytest.mark.slow
def test_annotation_model_rounds(zones_tmp: Zones) -> None:
    z = zones_tmp
    _write_home(z)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("round", ["round-1", "round-2", "round-3"])

    r1 = _materialize(z, instance, "round-1")
    assert r1.success
    (mat,) = r1.asset_materializations_for_node("annotation_model")
    assert mat.metadata["method"].value == "proposal"
    assert mat.metadata["predictions"].value == 4
    assert mat.metadata["pre_annotations"].value.startswith("offered: intensity proposal")
    out1 = z.round_model("round-1")
    scores = pd.read_parquet(out1 / "scores.parquet")
    assert sorted(scores["sample_id"]) == ["smp0", "smp1", "smp2", "smp3"]
    pred = nib.load(out1 / "pred" / "smp0.nii.gz")
    assert np.array_equal(pred.affine, nib.load(z.volumes / "smp0.nii.gz").affine)
    assert np.asarray(pred.dataobj).sum() > 0  # the bright blob was proposed

    pd.DataFrame(
        [
            dict(sample_id="smp0", label="abnormal", mask_path="masks/smp0.nii.gz",
                 source_round="round-1", agreement=1.0),
            dict(sample_id="smp1", label="normal", mask_path=None, source_round="round-1",
                 agreement=1.0),
        ]
    ).to_parquet(z.labels_table)  # fmt: skip
    r2 = _materialize(z, instance, "round-2")
    assert r2.success
    (mat2,) = r2.asset_materializations_for_node("annotation_model")
    md = {k: v.value for k, v in mat2.metadata.items()}
    assert md["method"] == "unet" and md["train_size"] == 2 and md["scored"] == 2
    assert str(md["model_version"]).startswith("unet2d-")
    # one abnormal patient: nothing to validate on, so the default floor withholds the masks
    assert str(md["pre_annotations"]).startswith("withheld: no validation")
    assert md["predictions"] == 0 and md["min_validation_dice"] == 0.5
    # the first trained model has no parent; the metadata says so and why
    assert md["warm_start_from"] == "none" and md["warm_start"] == "fresh: no earlier model"
    assert int(md["epochs"]) >= 1
    out2 = z.round_model("round-2")
    assert (out2 / "model.pt").exists() and (out2 / "scores.parquet").exists()
    assert not (out2 / "pred").exists()

    r3 = _materialize(z, instance, "round-2", min_validation_dice=0.0)  # the floor switched off
    assert r3.success
    (mat3,) = r3.asset_materializations_for_node("annotation_model")
    assert mat3.metadata["pre_annotations"].value.startswith("offered")
    assert mat3.metadata["model_version"].value == md["model_version"]
    assert sorted(p.name for p in (out2 / "pred").iterdir()) == ["smp2.nii.gz", "smp3.nii.gz"]

    # round 3 on the same labels: warm-started from round 2's model, the parent in its metadata
    r4 = _materialize(z, instance, "round-3", min_validation_dice=0.0)
    assert r4.success
    (mat4,) = r4.asset_materializations_for_node("annotation_model")
    assert mat4.metadata["warm_start_from"].value == md["model_version"]
    assert mat4.metadata["model_version"].value != md["model_version"]
