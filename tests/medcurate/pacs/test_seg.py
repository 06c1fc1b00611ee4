"""Consensus masks as DICOM SEG: geometry back onto the source frames, identity, determinism,
dciodvfy, the stage over a real home (ingest, de-identification, normalization) and STOW-RS."""

from __future__ import annotations

import json
import shutil
from io import BytesIO
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from medcurate.config import Zones
from medcurate.deid.pseudonyms import Keyer
from medcurate.deid.run import run_deid
from medcurate.deid.uids import UIDMapper
from medcurate.deid.validate_iod import validate
from medcurate.ingest import claim_inbox, run_ingest
from medcurate.io import write_nifti
from medcurate.normalize import run_normalize
from medcurate.normalize.assembly import read_instance, sample_id
from medcurate.normalize.phantom import PhantomSeries, write_series
from medcurate.pacs import seg as segmod
from medcurate.pacs.seg import (
    build_seg,
    mask_on_frames,
    run_label_segs,
    seg_bytes,
    source_plan,
    verify_seg,
    volume_sources,
)
from medcurate.synth import generate_studies
from tests.conftest import TEST_SALT

PSEUDONYM = "P-0123456789ab"
RADIUS_MM = 5.0


# --------------------------------------------------------------------------- phantom (fast)


def _pseudonymize(paths: list[Path]) -> None:
    """What de-identification leaves: the pseudonym as name and ID, its marks, shifted dates."""
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.PatientName = ds.PatientID = PSEUDONYM
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "Basic Application Confidentiality Profile"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20200102"
        ds.ContentTime = "101010"
        ds.save_as(p, enforce_file_format=True)


def _phantom(root: Path, s: PhantomSeries) -> tuple[list[Path], dict[str, Any]]:
    """A phantom series made to look de-identified (pseudonym, dates) and its volumes row."""
    paths = write_series(root, s)
    _pseudonymize(paths)
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    row = {"sample_id": sample_id(str(ds.SeriesInstanceUID), ""), "patient": PSEUDONYM,
           "study_uid": str(ds.StudyInstanceUID), "series_uid": str(ds.SeriesInstanceUID),
           "part": ""}  # fmt: skip
    return paths, row


def _ball_mask(center_ras: np.ndarray, origin: np.ndarray, shape: tuple[int, int, int]):  # type: ignore[no-untyped-def]
    """A RAS-oriented 1.5 x 1.5 x 2 mm grid (as normalization writes) with a ball at a point."""
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = origin
    ijk = np.indices(shape).reshape(3, -1).T
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    inside = np.linalg.norm(world - center_ras, axis=1) <= RADIUS_MM
    return inside.reshape(shape).astype(np.uint8), affine


def _pixel_world_lps(ds: pydicom.Dataset, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    iop = np.asarray(ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    return (
        np.asarray(ds.ImagePositionPatient, float)
        + np.outer(c * dc, iop[:3])
        + np.outer(r * dr, iop[3:])
    )


@pytest.mark.parametrize(
    "series",
    [
        PhantomSeries(name="axial"),  # LPS rows and columns: both flipped in RAS
        PhantomSeries(
            name="reversed",
            slice_step=-3.0,
            origin=(-20.0, -24.0, 15.0),
            reverse_instance_numbers=True,
        ),
        PhantomSeries(
            name="coronal",
            row_dir=(1.0, 0.0, 0.0),
            col_dir=(0.0, 0.0, -1.0),
            origin=(-20.0, -15.0, 30.0),
        ),
    ],
    ids=lambda s: s.name,
)
def test_mask_lands_on_the_source_pixels_at_its_world_position(
    tmp_path: Path, series: PhantomSeries
) -> None:
    """A ball drawn in a RAS grid comes back on exactly the source pixels whose centres lie in
    it (LPS <-> RAS, slice order and orientation handled), and nowhere else."""
    paths, row = _phantom(tmp_path / "src", series)
    plan = source_plan(paths, row)
    assert series.marker_lps is not None
    center = np.array([-series.marker_lps[0], -series.marker_lps[1], series.marker_lps[2]])
    mask, affine = _ball_mask(center, center - [30.0, 30.0, 30.0], (41, 41, 31))
    frames = mask_on_frames(mask, affine, plan.instances)
    assert frames.shape == (len(plan.instances), series.rows, series.cols)
    inside = outside = 0
    for inst, plane in zip(plan.instances, frames, strict=True):
        ds = pydicom.dcmread(inst.path, stop_before_pixels=True)
        r, c = np.indices(plane.shape).reshape(2, -1)
        lps = _pixel_world_lps(ds, r.astype(float), c.astype(float))
        d = np.linalg.norm(lps * [-1, -1, 1] - center, axis=1).reshape(plane.shape)
        # nearest neighbour on a 1.5-2 mm grid: certain inside the ball less a voxel diagonal
        assert plane[d < RADIUS_MM - 1.6].all()
        assert not plane[d > RADIUS_MM + 1.6].any()
        inside += int(plane.sum())
        outside += int((~plane).sum())
    assert inside > 10 and outside > inside


def test_projection_frames_use_the_detector_grid(tmp_path: Path) -> None:
    """A one-frame projection has no patient geometry: the mask's i runs along columns and its j
    down rows, as normalization stacked it."""
    from medcurate.normalize.phantom import write_projection

    path = write_projection(tmp_path / "cr", rows=12, cols=10)
    info = read_instance(path)
    assert info is not None
    mask = np.zeros((10, 12, 1), dtype=np.uint8)
    mask[7, 2, 0] = 1  # column 7, row 2
    frames = mask_on_frames(mask, np.diag([0.5, 0.5, 1.0, 1.0]), [info], kind="projection2d")
    assert frames.shape == (1, 12, 10)
    assert frames[0, 2, 7] and frames.sum() == 1
    # and as a SEG: it references the image and passes dciodvfy
    _pseudonymize([path])
    write_nifti(tmp_path / "m.nii.gz", mask, np.diag([0.5, 0.5, 1.0, 1.0]), dtype="uint8")
    row = {"sample_id": sample_id(info.series_uid, ""), "series_uid": info.series_uid}
    out = tmp_path / "seg.dcm"
    out.write_bytes(seg_bytes(build_seg(tmp_path / "m.nii.gz", [path], row)))
    pixels = hd.seg.segread(out).get_pixels_by_source_instance([info.sop_uid], segment_numbers=[1])
    assert pixels[0, 2, 7, 0] and pixels.sum() == 1
    assert validate(out) == {}


def _seg_for(tmp_path: Path, series: PhantomSeries | None = None, radius_shift: float = 0.0):  # type: ignore[no-untyped-def]
    series = series or PhantomSeries(name="axial")
    paths, row = _phantom(tmp_path / "src", series)
    assert series.marker_lps is not None
    center = np.array([-series.marker_lps[0], -series.marker_lps[1], series.marker_lps[2]])
    mask, affine = _ball_mask(center + radius_shift, center - 30.0, (41, 41, 31))
    mask_path = tmp_path / "mask.nii.gz"
    write_nifti(mask_path, mask, affine, dtype="uint8")
    return build_seg(mask_path, paths, row), paths, row, mask_path


def test_seg_reads_back_references_every_source_and_is_deterministic(tmp_path: Path) -> None:
    seg, paths, row, mask_path = _seg_for(tmp_path)
    blob = seg_bytes(seg)
    back = hd.seg.segread(BytesIO(blob))
    plain = pydicom.dcmread(BytesIO(blob))
    sops = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}
    (ref,) = plain.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == row["series_uid"]
    assert {i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence} == sops
    assert plain.StudyInstanceUID == row["study_uid"] and plain.PatientID == PSEUDONYM
    assert 0 < int(plain.NumberOfFrames) < len(paths)  # frames without the ball are left out
    (segment,) = back.SegmentSequence
    assert segment.SegmentLabel == "lesion" and segment.SegmentAlgorithmType == "MANUAL"
    assert (plain.ContentDate, plain.ContentTime) == ("20200102", "101010")
    assert plain.InstanceCreationDate == "20200102"
    # same mask and sources: the same bytes; another mask: another instance of the same series
    again = build_seg(mask_path, paths, row)
    assert seg_bytes(again) == blob
    other, *_ = _seg_for(tmp_path / "b", radius_shift=1.5)
    assert other.SeriesInstanceUID == seg.SeriesInstanceUID
    assert other.SOPInstanceUID != seg.SOPInstanceUID


def test_seg_passes_dciodvfy(tmp_path: Path) -> None:
    seg, *_ = _seg_for(tmp_path)
    out = tmp_path / "seg.dcm"
    out.write_bytes(seg_bytes(seg))
    assert validate(out) == {}


def test_verify_seg_accepts_the_pseudonym_and_flags_planted_identity(tmp_path: Path) -> None:
    seg, paths, *_ = _seg_for(tmp_path)
    src = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert verify_seg(seg, [src]) == []
    planted = pydicom.dcmread(BytesIO(seg_bytes(seg)))
    planted.PatientName = "DOE^JANE"
    assert "PatientName is not the pseudonym" in verify_seg(planted, [src])
    planted = pydicom.dcmread(BytesIO(seg_bytes(seg)))
    planted.OperatorsName = "SMITH^ANN"
    planted.AccessionNumber = "A12345678"
    planted.add_new(0x00291010, "LO", "private")
    problems = verify_seg(planted, [src])
    assert "OperatorsName holds a person name" in problems
    assert "AccessionNumber differs from the de-identified source" in problems
    assert "private attributes are present" in problems
    # messages name attributes, never the values
    assert not any("DOE" in p or "SMITH" in p or "A12345678" in p for p in problems)


def test_build_refuses_changed_sources(tmp_path: Path) -> None:
    paths, row = _phantom(tmp_path / "src", PhantomSeries(name="axial"))
    with pytest.raises(segmod.SegError, match="changed"):
        source_plan(paths, {**row, "source_digest": "0" * 64})
    with pytest.raises(segmod.SegError, match="not found"):
        source_plan(paths[:1], row)  # one slice does not make the volume


# --------------------------------------------------------------------------- real chain (slow)


@pytest.fixture(scope="module")
def chain_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Zones, Path]:
    """One generated patient with lesions (its first CT study: an axial and a coronal series)
    through claim, ingest, de-identification and normalization. Read-only: copy to change."""
    root = tmp_path_factory.mktemp("seg-chain")
    z = Zones(root / "home").ensure()
    truth = root / "truth"
    generate_studies(z.inbox, patients=1, seed=1, truth=truth)
    (patient,) = [p for p in z.inbox.iterdir() if p.is_dir()]
    for study in sorted(patient.iterdir())[1:]:
        shutil.rmtree(study)
    batch = claim_inbox(z)
    assert batch is not None
    run_ingest(z, batch, workers=1)
    assert run_deid(z, batch, TEST_SALT.encode()).written > 0
    assert run_normalize(z, batch).written == 2
    return z, truth


def _copy(home: tuple[Zones, Path], tmp_path: Path) -> tuple[Zones, Path]:
    z, truth = home
    shutil.copytree(z.home, tmp_path / "seg-home")
    return Zones(tmp_path / "seg-home"), truth


def _truth_rows(z: Zones, truth: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(volumes, truth labels, truth lesions), the truth keyed by the de-identified series UID."""
    new_uid = UIDMapper(Keyer(TEST_SALT.encode()))
    vols = pd.read_parquet(z.volumes_table)
    labels = pd.read_parquet(truth / "labels.parquet")
    lesions = pd.read_parquet(truth / "lesions.parquet")
    labels["series_uid"] = [new_uid(u) for u in labels["series_uid"]]
    lesions["series_uid"] = [new_uid(u) for u in lesions["series_uid"]]
    return vols, labels, lesions


def _consensus_from_truth(z: Zones, truth: Path, vol: dict[str, Any], mask_file: str) -> str:
    """The truth mask (source grid) carried into the volume's grid, nearest neighbour, written
    as consensus writes it: ``labels/masks/<sample_id>.nii.gz`` with the volume's affine."""
    img = nib.load(truth / mask_file)
    tm = np.asarray(img.dataobj) > 0
    affine = np.asarray(vol["affine"], float).reshape(4, 4)
    shape = tuple(int(v) for v in vol["out_shape"])
    ijk = np.indices(shape).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:4]
    inv = np.linalg.inv(img.affine)
    src = np.floor(inv[:3, :3] @ world + inv[:3, 3:4] + 0.5).astype(int)
    ok = np.all((src >= 0) & (src < np.array(tm.shape)[:, None]), axis=0)
    out = np.zeros(ijk.shape[1], dtype=np.uint8)
    out[ok] = tm[src[0, ok], src[1, ok], src[2, ok]]
    rel = f"masks/{vol['sample_id']}.nii.gz"
    z.label_file(rel).parent.mkdir(parents=True, exist_ok=True)
    write_nifti(z.label_file(rel), out.reshape(shape), affine, dtype="uint8")
    return rel


@pytest.mark.slow
def test_seg_of_a_normalized_volume_matches_the_truth_on_its_source_frames(
    chain_home: tuple[Zones, Path], tmp_path: Path
) -> None:
    z, truth = chain_home
    vols, labels, lesions = _truth_rows(z, truth)
    for vol in vols.to_dict("records"):
        t = labels[labels["series_uid"] == vol["series_uid"]].iloc[0]
        paths = volume_sources(z, vol)
        # normalization flipped an axis of the series (LPS to RAS): source index -> volume index
        # has a negative step, so this is not the identity case
        plan = source_plan(paths, vol)
        src = np.eye(4)
        src[:3, :] = np.diag([-1.0, -1.0, 1.0]) @ np.column_stack(
            [np.asarray(plan.first.iop[:3]) * plan.first.pixel_spacing[1],
             np.asarray(plan.first.iop[3:]) * plan.first.pixel_spacing[0],
             np.asarray(plan.instances[1].ipp) - np.asarray(plan.first.ipp),
             np.asarray(plan.first.ipp)]
        )  # fmt: skip
        steps = (np.linalg.inv(np.asarray(vol["affine"], float).reshape(4, 4)) @ src)[:3, :3]
        assert (steps < -1e-6).any()
        rel = _consensus_from_truth(z, truth, vol, str(t["mask_file"]))
        seg = build_seg(z.label_file(rel), paths, vol)
        out = tmp_path / f"{vol['sample_id']}.dcm"
        out.write_bytes(seg_bytes(seg))
        back = hd.seg.segread(out)
        plain = pydicom.dcmread(out)
        assert plain.ReferencedSeriesSequence[0].SeriesInstanceUID == vol["series_uid"]
        assert plain.StudyInstanceUID == vol["study_uid"] and plain.PatientID == vol["patient"]
        by_number = {}
        for p in paths:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            by_number[int(ds.InstanceNumber)] = str(ds.SOPInstanceUID)
        refs = plain.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        assert {r.ReferencedSOPInstanceUID for r in refs} == set(by_number.values())
        # the truth (generator's own [c, r, k] masks) against the SEG, frame by frame
        tm = np.asarray(nib.load(truth / str(t["mask_file"])).dataobj) > 0
        numbers = sorted(by_number)
        pixels = back.get_pixels_by_source_instance(
            source_sop_instance_uids=[by_number[n] for n in numbers], segment_numbers=[1]
        )[..., 0].astype(bool)
        want = np.stack([tm[:, :, n - 1].T for n in numbers])
        dice = 2 * (want & pixels).sum() / (want.sum() + pixels.sum())
        assert dice > 0.9, dice
        for les in lesions[lesions["series_uid"] == vol["series_uid"]].to_dict("records"):
            k = round(les["index_k"])
            plane = pixels[numbers.index(k + 1)]
            assert plane[round(les["index_r"]), round(les["index_c"])]  # the lesion's centre
            assert not plane[0, 0] and not plane[-1, -1]  # far away: background
        assert validate(out) == {}  # dciodvfy: no errors (warnings are fine)


@pytest.mark.slow
def test_verifier_finds_an_original_identifier_in_a_seg(
    chain_home: tuple[Zones, Path], tmp_path: Path
) -> None:
    z, truth = _copy(chain_home, tmp_path)
    vols, labels, _ = _truth_rows(z, truth)
    vol = vols.to_dict("records")[0]
    t = labels[labels["series_uid"] == vol["series_uid"]].iloc[0]
    rel = _consensus_from_truth(z, truth, vol, str(t["mask_file"]))
    paths = volume_sources(z, vol)
    plan = source_plan(paths, vol)
    seg = build_seg(z.label_file(rel), paths, vol, plan=plan)
    originals = segmod.originals_of(z, str(vol["batch"]), [Path(i.path) for i in plan.instances])
    src = [pydicom.dcmread(plan.first.path, stop_before_pixels=True)]
    assert verify_seg(seg, src, originals, "labels/seg/x.dcm") == []
    phi = json.loads((truth / "phi.json").read_text())
    name = next(v for v in phi["phi"] if "^" in v)  # the patient's DICOM name
    seg.SeriesDescription = f"lesion {name.split('^')[0]}"
    (problem,) = verify_seg(seg, src, originals, "labels/seg/x.dcm")
    assert problem.startswith("de-identification verifier: ") and name not in problem


def _labels(z: Zones, rows: list[dict[str, Any]]) -> None:
    z.labels.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["sample_id", "label", "mask_path"]).to_parquet(z.labels_table)


@pytest.mark.slow
def test_stage_writes_skips_and_reports_bad_samples(
    chain_home: tuple[Zones, Path], tmp_path: Path
) -> None:
    z, truth = _copy(chain_home, tmp_path)
    vols, labels, _ = _truth_rows(z, truth)
    rows = []
    for vol in vols.to_dict("records"):
        t = labels[labels["series_uid"] == vol["series_uid"]].iloc[0]
        mask = _consensus_from_truth(z, truth, vol, str(t["mask_file"]))
        rows.append({"sample_id": vol["sample_id"], "label": "abnormal", "mask_path": mask})
    rows += [
        {"sample_id": "feedfacefeedface", "label": "normal", "mask_path": None},
        {"sample_id": "0badc0de0badc0de", "label": "abnormal", "mask_path": "masks/x.nii.gz"},
    ]
    first_id = rows[0]["sample_id"]
    broken = vols.copy()
    broken.loc[broken["sample_id"] == first_id, "source_digest"] = "0" * 64
    _labels(z, rows)
    r = run_label_segs(z)
    assert (r.labelled, r.written, r.without_mask, r.without_volume, r.failed) == (4, 2, 1, 1, 0)
    assert r.problems == [] and r.seg_bytes > 0 and "2 SEG written" in r.summary_line()
    files = sorted((z.labels / "seg").glob("*.dcm"))
    assert [f.stem for f in files] == sorted(v for v in vols["sample_id"])
    blobs = [f.read_bytes() for f in files]
    again = run_label_segs(z)
    assert (again.written, again.unchanged) == (0, 2)
    assert [f.read_bytes() for f in files] == blobs
    # one bad sample (its sources no longer match its volume) never stops the others
    broken.to_parquet(z.volumes_table)
    other = next(f for f in files if f.stem != first_id)
    other.unlink()
    bad = run_label_segs(z)
    assert (bad.written, bad.failed) == (1, 1)
    (problem,) = bad.problems
    assert problem.startswith(f"sample {first_id}: ") and "changed" in problem
    assert other.read_bytes() in blobs
    # labels gone: their SEGs go too
    _labels(z, rows[2:])
    assert run_label_segs(z).removed == 2
    assert not list((z.labels / "seg").glob("*.dcm"))


@pytest.mark.slow
@pytest.mark.integration
def test_segs_are_stored_in_the_research_pacs(
    chain_home: tuple[Zones, Path], tmp_path: Path, research_pacs: Any
) -> None:
    z, truth = _copy(chain_home, tmp_path)
    vols, labels, _ = _truth_rows(z, truth)
    vol = vols.to_dict("records")[0]
    t = labels[labels["series_uid"] == vol["series_uid"]].iloc[0]
    rel = _consensus_from_truth(z, truth, vol, str(t["mask_file"]))
    _labels(z, [{"sample_id": vol["sample_id"], "label": "abnormal", "mask_path": rel}])
    session = requests.Session()
    session.trust_env = False
    session.auth = (research_pacs.username, research_pacs.password)
    client = DICOMwebClient(research_pacs.dicomweb, session=session)
    r = run_label_segs(z, client)
    assert (r.written, r.stored, r.problems) == (1, 1, [])
    seg = pydicom.dcmread(z.labels / "seg" / f"{vol['sample_id']}.dcm")
    found = client.search_for_series(search_filters={"SeriesInstanceUID": seg.SeriesInstanceUID})
    assert len(found) == 1 and found[0]["00080060"]["Value"] == ["SEG"]
    (inst,) = client.search_for_instances(
        study_instance_uid=seg.StudyInstanceUID, series_instance_uid=seg.SeriesInstanceUID
    )
    assert inst["00080018"]["Value"] == [seg.SOPInstanceUID]
    uids = (seg.StudyInstanceUID, seg.SeriesInstanceUID, seg.SOPInstanceUID)
    back = client.retrieve_instance(*uids)
    assert back.PatientID == vol["patient"]
    assert run_label_segs(z, client).stored == 0  # stored once, not again


def test_a_label_drawn_between_two_source_frames_reaches_them() -> None:
    """Axial frames 3 mm apart; the mask (1 mm grid) labelled on one slice 1 mm above a frame
    and 2 mm below the next: nearest voxel at the pixel centres sees nothing, the frames' slabs
    do. The slab of the nearer frame only."""
    from medcurate.normalize.assembly import InstanceInfo

    frames = [
        InstanceInfo(
            path=f"{z}.dcm", sop_uid=f"1.2.{n}", series_uid="1.2", rows=8, cols=8,
            pixel_spacing=(1.0, 1.0), iop=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), ipp=(0.0, 0.0, z),
        )
        for n, z in enumerate((0.0, 3.0, 6.0))
    ]  # fmt: skip
    # voxel (i, j, k) -> RAS (-i, -j, k) = LPS (i, j, k): column i, row j, z = k mm
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    mask = np.zeros((8, 8, 7), dtype=np.uint8)
    mask[:, :, 4] = 1  # z = 4 mm: 1 mm from the frame at 3 mm, 2 mm from the one at 6 mm
    got = mask_on_frames(mask, affine, frames)
    assert [bool(p.any()) for p in got] == [False, True, False]
    assert got[1].all()
    one = np.zeros_like(mask)
    one[2, 5, 3] = 1  # on the frame's own slice: column 2, row 5 of that frame only
    hit = mask_on_frames(one, affine, frames)
    assert hit.sum() == 1 and hit[1, 5, 2]
