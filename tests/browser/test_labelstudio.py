"""Label Studio as an annotator sees it: a round's task shows the slice in the radiological
orientation (checked from the pixels on screen) with its pre-annotation, and nobody can sign up
without the pipeline's invitation."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from annotation.client import LabelStudioClient
from annotation.rounds import project_title, render_round
from medcurate.config import Zones
from medcurate.services import labelstudio as ls

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RK = "round-81"
SAMPLE = "brw0000marker"
SHAPE = (40, 36, 5)  # i (x), j (y), k (z)
MARKER = (slice(2, 8), slice(26, 33))  # low i, high j: the patient's LEFT and ANTERIOR
PREDICTED = (slice(24, 32), slice(10, 18))  # high i, low j: the patient's right and posterior
PRED_K = 2


def _plant(z: Zones) -> pd.DataFrame:
    """A volume with a bright marker on the patient's left-anterior side and a model prediction
    on the right-posterior side of slice PRED_K. The affine is RAS+ with positive spacing, so
    voxel index i grows towards the patient's Right and j towards Anterior: low i is the left."""
    ii, jj, _ = np.indices(SHAPE)
    vol = np.zeros(SHAPE, np.float32)  # air
    body = ((ii - 19.5) / 17) ** 2 + ((jj - 17.5) / 15) ** 2 < 1
    vol[body] = 100.0 + np.random.default_rng(3).normal(0, 2, body.sum())
    vol[MARKER] = 400.0  # > 1% of voxels: the percentile window's top, pure white on screen
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(vol, affine), z.volumes / f"{SAMPLE}.nii.gz")
    pred = np.zeros(SHAPE, np.uint8)
    pred[(*PREDICTED, PRED_K)] = 1
    z.round_predictions(RK).mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(pred, affine), z.round_prediction(RK, SAMPLE))
    # MR: a percentile window from the volume itself (a CT's HU window would need HU values)
    return pd.DataFrame([{"sample_id": SAMPLE, "nifti_path": f"{SAMPLE}.nii.gz", "modality": "MR"}])


@pytest.fixture
def round_task(labelstudio, annotation_cohort) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(project id, task id of the slice with the pre-annotation) of a round in the session's
    Label Studio, its images in the cohort's home (the server's local-files root)."""
    z, _, _ = annotation_cohort
    volumes = _plant(z)
    _, tasks = render_round(volumes, [SAMPLE], z, RK, every=2)
    api = LabelStudioClient(labelstudio.url, labelstudio.api_key)
    pid, _ = api.ensure_project(project_title(RK), 1, z.round_dir(RK))
    api.sync_tasks(pid, tasks)
    (task,) = [t for t in api.tasks(pid) if t["data"]["slice_k"] == PRED_K]
    assert task["predictions"], "the task carries the model's pre-annotation"
    return pid, int(task["id"])


def _login(page: Any, server: ls.LabelStudioServer) -> None:
    """Log in as the admin through the login form (credentials as the server keeps them)."""
    creds, _ = ls.load_credentials(server.home, env={})
    page.goto(server.url + "/user/login/")
    page.fill("#email", creds.username)
    page.fill("#password", creds.password)
    page.click("button.login-button")
    page.wait_for_url(lambda u: "/user/login" not in u)


def _centre(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of a pixel mask's centre, as fractions of the image's width and height."""
    rows, cols = np.nonzero(mask)
    return float(cols.mean() + 0.5) / mask.shape[1], float(rows.mean() + 0.5) / mask.shape[0]


def test_task_shows_radiological_slice_with_pre_annotation(  # type: ignore[no-untyped-def]
    labelstudio, round_task, page, screenshots: Path, tmp_path: Path
) -> None:
    pid, task = round_task
    _login(page, labelstudio)
    page.goto(f"{labelstudio.url}/projects/{pid}/data?task={task}")
    # the slice as the editor draws it: the first image object (the neighbour strip is second)
    image = page.locator(".lsf-image").first
    image.locator("img").wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.lsf-image img')]"
        ".some(i => i.complete && i.naturalWidth > 0)"
    )
    page.get_by_text("R | L").first.wait_for()  # the orientation header from the task data
    regions = page.locator(".lsf-sidepanels").get_by_text("lesion", exact=True)
    regions.first.wait_for()  # the pre-annotated brush region is listed
    page.wait_for_timeout(500)  # the brush layer draws after the region list
    page.screenshot(path=screenshots / "labelstudio-task.png")

    # the tool controls float over the image's right edge: masked out of the pixels read here
    box = image.bounding_box()  # the slice's viewport as displayed, the brush layer included
    assert box is not None
    shot = page.screenshot(
        clip=box,
        mask=[page.locator(".lsf-tool__controls"), page.locator(".lsf-toolbar")],
        mask_color="#0000ff",
    )
    Image.open(io.BytesIO(shot)).save(tmp_path / "slice-as-displayed.png")  # for a failure
    rgb = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    white = (r > 235) & (g > 235) & (b > 235)  # the marker only (the body is mid-grey)
    red = (r > g + 60) & (r > b + 60)  # the pre-annotation's brush (#ff3b30 over grey)
    assert 0 < white.mean() < 0.1 and 0 < red.mean() < 0.2
    x, y = _centre(white)
    # radiological: the patient's left on the image's right, anterior at the top
    assert x > 0.6, f"the patient's-left marker is drawn at x={x:.2f} of the width, not right"
    assert y < 0.4, f"the anterior marker is drawn at y={y:.2f} of the height, not at the top"
    x, y = _centre(red)  # the prediction lies where the model put it: patient's right-posterior
    assert x < 0.5 and y > 0.5, f"the pre-annotation is drawn at ({x:.2f}, {y:.2f})"


def test_sign_up_without_invitation_is_refused(labelstudio, page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    api = LabelStudioClient(labelstudio.url, labelstudio.api_key)
    before = sorted(api.users().values())
    page.goto(labelstudio.url + "/user/signup/")
    page.fill("#email", "intruder@example.org")
    page.fill("#password", "Intruder-pass-123")
    with page.expect_response(
        lambda r: "/user/signup" in r.url and r.request.method == "POST"
    ) as answer:
        page.get_by_role("button", name="Create Account").click()
    assert answer.value.status == 403
    page.get_by_text("not permitted").wait_for()
    page.screenshot(path=tmp_path / "signup-refused.png")
    page.goto(labelstudio.url + "/projects/")
    assert "/user/login" in page.url  # not logged in: the projects stay closed
    assert sorted(api.users().values()) == before
