"""A mask sent to the real Label Studio as a pre-annotation comes back voxel for voxel, and
nothing that reaches the server carries patient data."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from annotation.client import LabelStudioClient
from annotation.export import union_mask
from annotation.label_config import LABEL_CONFIG
from annotation.render import (
    CT_SOFT_TISSUE,
    candidate_slices,
    masks_to_volume,
    render_volume,
    select_slices,
    volume_mask_slice,
)
from annotation.tasks import build_task, phi_hits, prediction
from medcurate.services.labelstudio import LabelStudioServer, ServicePaths

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _phi_values(rng: np.random.Generator) -> list[str]:
    """PHI-like values of a made-up patient, as the source DICOM would carry them."""
    n = int(rng.integers(10_000, 99_999))
    return [
        f"TESTPATIENT^ALICE{n}",
        f"MRN{n}77",
        f"19{n % 100:02d}0412",
        f"1.2.826.0.1.3680043.8.498.{n}1234",
        f"St. Testington Hospital {n}",
        f"scan_{n}_original.dcm",
    ]


def test_mask_round_trip_and_no_phi(labelstudio: LabelStudioServer) -> None:
    rng = np.random.default_rng(11)
    phi = _phi_values(rng)
    sample_id = "S-3f9c2a"
    volume = rng.normal(40, 150, size=(64, 48, 7)).astype(np.float32)  # (i, j, k)
    lesion = np.zeros(volume.shape, dtype=bool)
    ii, jj = np.indices(volume.shape[:2])
    for k, (ci, cj, r) in {2: (20, 15, 6.5), 3: (21, 16, 8.2), 5: (45, 30, 3.1)}.items():
        lesion[:, :, k] = (ii - ci) ** 2 + (jj - cj) ** 2 < r * r
    lesion[10, 40, 3] = True  # a lone voxel and an edge voxel: nothing may be smoothed away
    lesion[63, 0, 5] = True

    root = ServicePaths(labelstudio.home).document_root
    slices = select_slices(volume.shape[2], every=3, candidates=candidate_slices(lesion))
    assert slices == [0, 2, 3, 5, 6]
    rendered = render_volume(volume, sample_id, root, "round-1/images", slices, CT_SOFT_TISSUE)
    tasks = [
        build_task(
            sample_id,
            r.k,
            r.relpath,
            [
                prediction(
                    "proposal-v1",
                    0.8,
                    choice="abnormal" if lesion[:, :, r.k].any() else "normal",
                    mask=volume_mask_slice(lesion, r.k),
                )
            ],
        )
        for r in rendered
    ]
    title = "round-1 (roundtrip test)"
    sent = {
        "title": title,
        "config": LABEL_CONFIG,
        "tasks": tasks,
        "files": [r.relpath for r in rendered],
    }
    assert phi_hits(sent, phi) == []

    client = LabelStudioClient(labelstudio.url, labelstudio.api_key)
    project = client.create_project(title)
    client.add_local_storage(project, root / "round-1")
    assert client.import_tasks(project, tasks) == len(tasks)

    # the image is served from the local-files root, byte for byte
    url = labelstudio.url + tasks[1]["data"]["image"]
    req = urllib.request.Request(url, headers={"Authorization": f"Token {labelstudio.api_key}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.read() == (root / rendered[1].relpath).read_bytes()

    exported = client.snapshot_export(project)
    assert sorted(t["data"]["task_key"] for t in exported) == sorted(
        t["data"]["task_key"] for t in tasks
    )
    height, width = volume.shape[1], volume.shape[0]
    per_slice = {}
    for t in exported:
        (pred,) = t["predictions"]
        assert (pred["model_version"], pred["score"]) == ("proposal-v1", 0.8)
        per_slice[t["data"]["slice_k"]] = union_mask(pred["result"], height, width)
    back = masks_to_volume(per_slice, volume.shape)
    assert np.array_equal(back.astype(bool), lesion)  # voxel for voxel, every rendered slice

    assert phi_hits(exported, phi) == []
    data = ServicePaths(labelstudio.home).data
    stored = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    stored += ServicePaths(labelstudio.home).log_file.read_bytes()
    assert sample_id.encode() in stored  # the scan does read what the server stored
    assert [v for v in phi if v.lower().encode() in stored.lower()] == []
    assert json.dumps(exported).count(sample_id) >= len(tasks)  # the scan does see task data
