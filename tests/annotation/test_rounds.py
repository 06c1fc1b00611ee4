"""A whole annotation round against the real Label Studio: tasks -> simulated annotators (signed
up through the invite link) -> snapshot export -> consensus; idempotent at every step; nothing
sent to or stored by Label Studio carries the generator's PHI. Plus the pure parts of rounds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from annotation.adjudication import Thresholds, consensus_for_round
from annotation.agreement import dice
from annotation.client import LabelStudioClient
from annotation.export import export_round
from annotation.rle import rle_to_mask
from annotation.rounds import (
    SLICE_MAPPING,
    finding_slices,
    project_title,
    read_round_info,
    render_round,
    round_number,
    round_of,
    round_progress,
    slice_task_data,
    write_round_info,
)
from annotation.simulate import simulate_round, truth_for_volume, truth_index
from annotation.tasks import phi_hits
from medcurate.config import Zones
from medcurate.services.labelstudio import ServicePaths
from medcurate.synth.truth import planted_phi, planted_uids


def test_round_keys_and_titles() -> None:
    assert round_number("round-12") == 12 and round_number(12) == 12
    assert round_of(12) == "round-12"
    for bad in ("round-0", "round-x", "r-1", "round-1 ", 0):
        with pytest.raises(ValueError):
            round_number(bad)
    assert project_title("round-3") == "medcurate round-3"
    assert project_title("round-3", "adjudication") == "medcurate round-3 adjudication"


def test_render_round_maps_pre_annotations_onto_slices(tmp_path: Path) -> None:
    z = Zones(tmp_path)
    vol = np.random.default_rng(0).random((10, 8, 7)).astype(np.float32)
    z.volumes.mkdir(parents=True)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), z.volumes / "A1.nii.gz")
    pred = np.zeros(vol.shape, dtype=np.uint8)
    pred[2:5, 3:6, 3] = 1  # a candidate finding on slice 3, between the regular slices
    z.round_predictions("round-2").mkdir(parents=True)
    nib.save(nib.Nifti1Image(pred, np.eye(4)), z.round_prediction("round-2", "A1"))
    pd.DataFrame(
        [{"sample_id": "A1", "uncertainty": 0.2, "p_abnormal": 0.9, "model_version": "unet-x"}]
    ).to_parquet(z.round_scores("round-2"))
    vols = pd.DataFrame([{"sample_id": "A1", "nifti_path": "A1.nii.gz"}])
    slices, tasks = render_round(vols, ["A1"], z, "round-2", every=3)
    assert list(slices["slice_k"]) == [0, 3, 6]
    assert list(slices["candidate"]) == [False, True, False]
    assert (z.annotation / slices["image_relpath"][1]).exists()
    assert slices["image_relpath"][1] == "round-2/images/A1/A1_k0003.png"
    by_k = {t["data"]["slice_k"]: t for t in tasks}
    (p3,) = by_k[3]["predictions"]
    assert p3["model_version"] == "unet-x" and p3["score"] == pytest.approx(0.9)
    assert [r["type"] for r in p3["result"]] == ["choices", "brushlabels"]
    (p0,) = by_k[0]["predictions"]
    assert p0["result"][0]["value"]["choices"] == ["normal"]
    assert p0["score"] == pytest.approx(0.1)
    # radiological: voxels i 2..4, j 3..5 of a (10, 8) RAS slice are rows 7-5..7-3, cols 9-4..9-2
    brush = p3["result"][1]
    drawn = np.argwhere(rle_to_mask(brush["value"]["rle"], 8, 10))
    assert (drawn.min(axis=0).tolist(), drawn.max(axis=0).tolist()) == ([2, 5], [4, 7])
    assert set(slices["mapping"]) == {SLICE_MAPPING} and set(slices["plane"]) == {"axial"}
    data = by_k[3]["data"]
    assert data["context"] == "/data/local-files/?d=round-2/images/A1/A1_k0003_context.png"
    assert (z.annotation / slices["context_relpath"][1]).exists()
    assert (data["orientation"], data["left_side"], data["right_side"], data["top"]) == (
        "R | L  (A up)", "R", "L", "A",
    )  # fmt: skip
    assert data["mapping"] == SLICE_MAPPING
    assert data["window"]["name"] == "percentile" and data["window"]["units"] == "stored"
    # the slices table alone rebuilds every task's data (adjudication does)
    for row, task in zip(slices.to_dict("records"), tasks, strict=True):
        extra = slice_task_data(row)
        assert {k: task["data"][k] for k in extra} == extra


def test_render_round_without_model_output_and_with_ct_window(tmp_path: Path) -> None:
    """No prediction files (the model withheld them): tasks without pre-annotations; a CT volume
    shows in its series' window, recorded in HU; PNG bytes are the same on a second render."""
    z = Zones(tmp_path)
    hu = np.random.default_rng(1).normal(40, 100, (12, 10, 5))
    vol = np.clip((hu + 1000) / 2000, 0, 1).astype(np.float32)  # stored units, as normalized
    z.volumes.mkdir(parents=True)
    nib.save(nib.Nifti1Image(vol, np.diag([-1.0, -1.0, 2.0, 1.0])), z.volumes / "C1.nii.gz")
    vols = pd.DataFrame([{"sample_id": "C1", "nifti_path": "C1.nii.gz", "modality": "CT",
                          "window_center": 60.0, "window_width": 360.0}])  # fmt: skip
    slices, tasks = render_round(vols, ["C1"], z, "round-4", every=2)
    assert [t["predictions"] for t in tasks] == [[], [], []]
    assert list(slices["window_name"]) == ["series"] * 3
    assert (slices["window_center"][0], slices["window_width"][0]) == (60.0, 360.0)
    assert tasks[0]["data"]["window"] == {"name": "series", "center": 60.0, "width": 360.0,
                                          "units": "HU"}  # fmt: skip
    # an LPS-like affine (x and y reversed): still the patient's right on the image's left
    assert slices["mapping"][0].startswith("axial LPS:")
    assert tasks[0]["data"]["orientation"] == "R | L  (A up)"
    pngs = list(slices["image_relpath"]) + list(slices["context_relpath"])
    first = {p: (z.annotation / p).read_bytes() for p in pngs}
    render_round(vols, ["C1"], z, "round-4", every=2)
    assert first == {p: (z.annotation / p).read_bytes() for p in pngs}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.integration
@pytest.mark.slow
def test_full_round_with_simulated_annotators(labelstudio, annotation_cohort) -> None:  # type: ignore[no-untyped-def]
    z, truth, salt = annotation_cohort
    rk = "round-51"
    volumes = pd.read_parquet(z.volumes_table)
    samples = sorted(volumes["sample_id"])[:4]
    api = LabelStudioClient(labelstudio.url, labelstudio.api_key)

    slices, tasks = render_round(volumes, samples, z, rk, every=2)
    assert len(tasks) == 4 * 5  # 9 slices, every 2nd: 0, 2, 4, 6, 8
    slices.to_parquet(z.round_slices(rk), index=False)
    pid, created = api.ensure_project(project_title(rk), 3, z.round_dir(rk))
    assert created and api.sync_tasks(pid, tasks) == (20, 0)
    write_round_info(z, rk, pid, 3, slices)
    # again: the same project, no duplicate task
    again, created = api.ensure_project(project_title(rk), 3, z.round_dir(rk), known_id=pid)
    assert (again, created) == (pid, False)
    assert api.sync_tasks(pid, tasks) == (0, 20)
    assert len(api.tasks(pid)) == 20
    info = read_round_info(z, rk)
    assert info is not None and round_progress(api, info) == (0, 20)

    index = truth_index(truth, salt)
    truths = {}
    for row in volumes[volumes["sample_id"].isin(samples)].to_dict("records"):
        t = truth_for_volume(row, index, truth, z.volumes / row["nifti_path"])
        assert t is not None  # found through the salt's UID map
        truths[row["sample_id"]] = t
    secrets_file = ServicePaths(z.home).sim_annotators_file
    summary = simulate_round(api, pid, truths, 3, "moderate", secrets_file)
    assert (summary.submitted, summary.skipped_existing, summary.tasks) == (60, 0, 20)
    assert round_progress(api, info) == (20, 20)
    summary = simulate_round(api, pid, truths, 3, "moderate", secrets_file)
    assert (summary.submitted, summary.skipped_existing) == (0, 60)

    rows, complete = export_round(api, z, rk, info, salt)
    assert complete == 20 and len(rows) == 60
    first = _digest(z.round_annotations(rk))
    export_round(api, z, rk, info, salt)  # a second sync changes nothing
    assert _digest(z.round_annotations(rk)) == first
    table = pd.read_parquet(z.round_annotations(rk))
    assert table["annotator"].nunique() == 3
    assert table["annotator"].str.fullmatch(r"ann-[0-9a-f]{10}").all()
    assert table.groupby("task_key").size().eq(3).all()
    assert (table["lead_time"] > 0).all()

    rc = consensus_for_round(z, rk, Thresholds(method="staple"))
    assert rc.kappa is not None and 0.5 < rc.kappa <= 1.0
    consensus_dice, single_dice = [], []
    for s in rc.samples:
        t = truths[s.sample_id]
        ks = sorted(s.slice_classes)
        assert s.label == t.label
        if not t.mask.any():
            continue
        consensus_dice.append(dice(s.mask[:, :, ks], t.mask[:, :, ks]))
        for (sid, _), m in rc.maps.items():
            if sid == s.sample_id:
                single_dice.append(dice(m[:, :, ks], t.mask[:, :, ks]))
    assert len(consensus_dice) == 3 and len(single_dice) == 9
    assert np.mean(consensus_dice) >= np.mean(single_dice)
    assert np.mean(single_dice) < 1.0  # the noise did something

    # PHI: nothing sent, stored or exported carries the generator's identifying values
    phi = sorted(planted_phi(truth) | planted_uids(truth))
    exported = json.loads(z.round_export(rk).read_text())
    sent = {"titles": [project_title(rk)], "tasks": tasks, "export": exported}
    assert phi_hits(sent, phi) == []
    assert phi_hits(table.to_dict("records"), phi) == []
    paths = ServicePaths(labelstudio.home)
    stored = b"".join(p.read_bytes() for p in paths.data.rglob("*") if p.is_file())
    stored += paths.log_file.read_bytes()
    assert samples[0].encode() in stored  # the scan reads what the server holds
    assert [v for v in phi if v.lower().encode() in stored.lower()] == []
    names = [str(p.relative_to(z.annotation)) for p in z.annotation.rglob("*")]
    assert phi_hits(names, phi) == []


def test_finding_slices_one_per_finding_largest_first() -> None:
    pred = np.zeros((20, 20, 12), dtype=np.uint8)
    pred[2:10, 2:10, 2:7] = 1  # big: slices 2..6 ...
    pred[10:14, 2:10, 5] = 1  # ... widest on slice 5
    pred[15:17, 15:17, 9] = 1  # small, on slice 9
    pred[15, 2, 11] = 1  # tiny, on slice 11
    assert finding_slices(pred, 3) == [5, 9, 11]
    assert finding_slices(pred, 2) == [5, 9]  # the tiny one is dropped first
    assert finding_slices(pred, 1) == [5]
    assert finding_slices(np.zeros_like(pred), 4) == []


def test_progress_summary_newest_round_first() -> None:
    from annotation.rounds import RoundProgress, progress_summary

    progress = [RoundProgress("round-2", 7, 80, 117), RoundProgress("round-10", 9, 5, 5),
                RoundProgress("round-1", 3, 40, 40)]  # fmt: skip
    line = progress_summary(["round-1", "round-2", "round-10", "round-11"], progress, {"round-1"})
    assert line == (
        "round-11: no tasks yet (run annotation_round); round-10: 5/5 tasks done; "
        "round-2: 80/117 tasks done; round-1: exported"
    )
    assert progress_summary([], [], set()).startswith("no annotation round yet")
