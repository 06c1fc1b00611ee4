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
from annotation.rounds import (
    finding_slices,
    project_title,
    read_round_info,
    render_round,
    round_number,
    round_of,
    round_progress,
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
