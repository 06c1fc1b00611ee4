"""The study generator end to end: determinism, geometry, truth, PHI, readability."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest

from medcurate.io import sha256_file
from medcurate.synth import generate_studies, planted_phi, planted_uids


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _series_dirs(out: Path) -> list[Path]:
    return sorted({p.parent for p in out.rglob("*.dcm")})


def _read_series(d: Path) -> list[pydicom.Dataset]:
    dss = [pydicom.dcmread(p) for p in sorted(d.glob("*.dcm"))]
    return sorted(dss, key=lambda ds: int(ds.InstanceNumber))


def _labels(truth: Path):  # type: ignore[no-untyped-def]
    return pq.read_table(truth / "labels.parquet").to_pandas()


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = generate_studies(tmp_path / "a" / "out", patients=2, seed=5, truth=tmp_path / "a" / "t")
    generate_studies(tmp_path / "b" / "out", patients=2, seed=5, truth=tmp_path / "b" / "t")
    generate_studies(tmp_path / "c" / "out", patients=2, seed=6, truth=tmp_path / "c" / "t")
    da, db = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert len(da) == a.files + 3 + sum(a.modalities.values())  # + tables, phi.json, masks
    assert da == db
    dc = _tree_digest(tmp_path / "c")
    assert set(da.values()).isdisjoint(dc.values())


def test_summary_counts_and_no_phi(synth_studies: tuple[Path, Path], tmp_path: Path) -> None:
    out, truth = synth_studies
    files = list(out.rglob("*.dcm"))
    s = generate_studies(tmp_path / "o", patients=1, seed=1)
    text = str(s)
    assert "1 patients" in text and f"{s.files} files" in text
    assert s.files == len(list((tmp_path / "o").rglob("*.dcm")))
    assert not any(v in text for v in planted_phi(truth))
    assert len(files) == int(_labels(truth).n_instances.sum())


def test_truth_never_inside_out(synth_studies: tuple[Path, Path], tmp_path: Path) -> None:
    out, truth = synth_studies
    assert {p.suffix for p in out.rglob("*") if p.is_file()} == {".dcm"}
    assert not truth.resolve().is_relative_to(out.resolve())
    with pytest.raises(ValueError, match="truth folder"):
        generate_studies(tmp_path / "o", patients=1, seed=1, truth=tmp_path / "o" / "truth")


def test_cohort_has_every_kind_of_series(synth_studies: tuple[Path, Path]) -> None:
    out, truth = synth_studies
    lab = _labels(truth)
    assert set(lab.modality) >= {"CT", "MR"} and set(lab.modality) & {"CR", "DX"}
    assert set(lab.series_kind) >= {"ct_axial", "ct_coronal", "mr_t1_axial"}
    assert lab.groupby("patient_key").study_index.max().max() >= 1  # repeat studies
    assert lab.patient_has_lesion.any() and not lab.patient_has_lesion.all()
    assert len(set(lab.site)) >= 3
    sop = {pydicom.dcmread(next(d.glob("*.dcm")), stop_before_pixels=True).SOPClassUID
           for d in _series_dirs(out)}  # fmt: skip
    assert {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"} <= sop
    assert sop & {"1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1"}


def test_slices_advance_along_the_normal_by_the_spacing(synth_studies: tuple[Path, Path]) -> None:
    out, _ = synth_studies
    seen_non_axial = seen_reversed = seen_negative_cosine = False
    for d in _series_dirs(out):
        dss = _read_series(d)
        if len(dss) == 1:
            continue
        iop = np.array(dss[0].ImageOrientationPatient, dtype=float)
        row, col = iop[:3], iop[3:]
        assert abs(np.dot(row, col)) < 1e-5 and np.allclose([row @ row, col @ col], 1, atol=1e-5)
        normal = np.cross(row, col)
        ipp = np.array([ds.ImagePositionPatient for ds in dss], dtype=float)
        proj = ipp @ normal
        steps = np.diff(proj)
        spacing = float(dss[0].SpacingBetweenSlices)
        assert np.allclose(np.abs(steps), spacing, atol=1e-3)
        assert np.all(np.sign(steps) == np.sign(steps[0]))
        # in-plane position does not drift between slices
        assert np.allclose(ipp - ipp[0] - np.outer(proj - proj[0], normal), 0, atol=1e-3)
        assert len({ds.FrameOfReferenceUID for ds in dss}) == 1
        assert float(dss[0].SliceThickness) > 0 and len(dss[0].PixelSpacing) == 2
        seen_non_axial |= abs(normal[2]) < 0.99
        seen_reversed |= steps[0] < 0
        seen_negative_cosine |= bool((iop < 0).any())
    assert seen_non_axial and seen_reversed and seen_negative_cosine


def test_lesion_center_is_inside_its_mask(synth_studies: tuple[Path, Path]) -> None:
    out, truth = synth_studies
    lab = _labels(truth)
    les = pq.read_table(truth / "lesions.parquet").to_pandas()
    checked = 0
    for row in lab[lab.has_lesion & lab.modality.isin(["CT", "MR"])].itertuples():
        dss = _read_series(out / row.series_dir)
        iop = np.array(dss[0].ImageOrientationPatient, dtype=float)
        dr, dc = (float(v) for v in dss[0].PixelSpacing)
        p0 = np.array(dss[0].ImagePositionPatient, dtype=float)
        step = np.array(dss[1].ImagePositionPatient, dtype=float) - p0
        a = np.column_stack([iop[:3] * dc, iop[3:] * dr, step])  # LPS = p0 + a @ (c, r, k)
        mask = nib.load(truth / row.mask_file)
        ras = np.diag([-1.0, -1.0, 1.0])
        assert np.allclose(mask.affine[:3, :3], ras @ a, atol=1e-3)
        assert np.allclose(mask.affine[:3, 3], ras @ p0, atol=1e-3)
        data = np.asarray(mask.dataobj)
        assert data.shape == (int(dss[0].Columns), int(dss[0].Rows), len(dss))
        for lr in les[les.series_uid == row.series_uid].itertuples():
            center = np.array([lr.center_x, lr.center_y, lr.center_z])
            assert list(center.round(3)) in [list(c) for c in row.lesion_centers_lps]
            c, r, k = np.rint(np.linalg.solve(a, center - p0)).astype(int)
            assert data[c, r, k] == lr.lesion_id
            checked += 1
        assert sorted(np.unique(data[data > 0]).tolist()) == sorted(row.lesion_ids)
    assert checked >= 2


def test_lesions_differ_from_surrounding_tissue(synth_studies: tuple[Path, Path]) -> None:
    out, truth = synth_studies
    lab = _labels(truth)
    row = lab[lab.has_lesion & (lab.series_kind == "ct_axial")].iloc[0]
    dss = _read_series(out / row.series_dir)
    hu = np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in dss]
    )
    assert hu.min() >= -1024 and np.median(hu[:, :4, :4]) < -900  # air in the corners
    mask = np.transpose(np.asarray(nib.load(truth / row.mask_file).dataobj), (2, 1, 0))
    inside = hu[mask > 0].mean()
    ring = _dilate(mask > 0) & (mask == 0)
    assert abs(inside - hu[ring].mean()) > 15


def _dilate(m: np.ndarray, n: int = 2) -> np.ndarray:
    out = m.copy()
    for _ in range(n):
        grown = out.copy()
        for ax in range(3):
            grown |= np.roll(out, 1, ax) | np.roll(out, -1, ax)
        out = grown
    return out


def test_labels_table_one_row_per_series(synth_studies: tuple[Path, Path]) -> None:
    out, truth = synth_studies
    lab = _labels(truth)
    dirs = {d.relative_to(out).as_posix() for d in _series_dirs(out)}
    assert set(lab.series_dir) == dirs and len(lab) == len(dirs)
    assert lab.series_uid.is_unique
    assert ((lab.label == "abnormal") == lab.has_lesion).all()
    assert (lab.n_lesions == lab.lesion_ids.map(len)).all()
    assert all((truth / m).is_file() for m in lab.mask_file)
    for row in lab.itertuples():
        ds = pydicom.dcmread(next((out / row.series_dir).glob("*.dcm")), stop_before_pixels=True)
        assert ds.SeriesInstanceUID == row.series_uid and ds.StudyInstanceUID == row.study_uid
        assert ds.Modality == row.modality


def test_phi_planted_where_promised(synth_studies: tuple[Path, Path]) -> None:
    out, truth = synth_studies
    phi = planted_phi(truth)
    uids = planted_uids(truth)
    assert phi and uids and phi.isdisjoint(uids)
    blob = b"".join(p.read_bytes() for p in sorted(out.rglob("*.dcm")))
    paths = "\n".join(p.relative_to(out).as_posix() for p in out.rglob("*"))
    missing = [s for s in phi if s.encode() not in blob and s not in paths]
    assert missing == []
    for d in _series_dirs(out):
        ds = pydicom.dcmread(next(d.glob("*.dcm")), stop_before_pixels=True)
        name = str(ds.PatientName)
        assert name in phi and ds.PatientID in phi and ds.AccessionNumber in phi
        assert ds.PatientID in d.relative_to(out).parts[0]
        assert ds.PatientBirthDate in phi and ds.PatientAddress in phi
        creators = [e for e in ds if e.tag.is_private_creator]
        assert creators
        group = creators[0].tag.group
        block = ds.private_block(group, str(creators[0].value))
        assert block[0x01].value == name and block[0x02].value == ds.PatientID
        req = ds.RequestAttributesSequence[0]
        assert req.RequestedProcedureID in phi and req.ScheduledProcedureStepID in phi
        deep = req.ScheduledProtocolCodeSequence[0].ProtocolContextSequence[0].PersonName
        assert str(deep) in phi
        assert ds.OtherPatientIDsSequence[0].PatientID in phi
        assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID in uids
        assert ds.InstitutionName in phi and str(ds.ReferringPhysicianName) in phi
        assert ds.StudyInstanceUID in uids and ds.SOPInstanceUID in uids
        # age agrees with birth date and study date
        b = dt.datetime.strptime(ds.PatientBirthDate, "%Y%m%d").date()
        s = dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date()
        years = s.year - b.year - ((s.month, s.day) < (b.month, b.day))
        assert ds.PatientAge == f"{years:03d}Y"


@pytest.mark.slow
def test_monai_reads_a_series_with_the_mask_geometry(synth_studies: tuple[Path, Path]) -> None:
    monai = pytest.importorskip("monai")
    from monai.data import PydicomReader
    from monai.transforms import LoadImage

    out, truth = synth_studies
    lab = _labels(truth)
    assert monai is not None
    loader = LoadImage(reader=PydicomReader(), ensure_channel_first=True)
    for kind in ("ct_axial", "ct_coronal"):
        row = lab[lab.series_kind == kind].iloc[0]
        img = loader(str(out / row.series_dir))
        mask = nib.load(truth / row.mask_file)
        assert tuple(img.shape) == (1, *mask.shape)
        assert np.allclose(np.asarray(img.affine), mask.affine, atol=1e-3)
        assert float(img.min()) >= -1024 and float(img.max()) > 300  # HU: air .. bone
