"""DICOM writing: the cached encoder writes what pydicom writes; DS strings; per-vendor pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from medcurate.synth import dicom_writer as w
from medcurate.synth.plan import plan_cohort
from medcurate.synth.render import render_series


@pytest.fixture(scope="module")
def cohort():  # type: ignore[no-untyped-def]
    return plan_cohort(4, seed=9)


def test_cached_encoder_writes_the_bytes_pydicom_writes(cohort) -> None:  # type: ignore[no-untyped-def]
    p = cohort.patients[0]
    st = p.studies[0]
    se = st.series[0]
    stored, _ = render_series(9, p, st, se)
    ds = w.base_dataset(p, st, se)
    w.set_instance(ds, se, 0, stored[0], se.geometry.normal)
    enc = w._SeriesEncoder(ds)
    for k in (0, 1, se.geometry.slices - 1):
        w.set_instance(ds, se, k, stored[k], se.geometry.normal)
        ref = io.BytesIO()
        ds.save_as(ref, enforce_file_format=True)
        assert enc.encode() == ref.getvalue()


def test_ds_number_fits_and_has_no_negative_zero() -> None:
    assert w.ds_number(-0.00001) == "0"
    assert w.ds_number(2.96875, 6) == "2.96875"
    assert w.ds_number(-1234.56789) == "-1234.5679"
    assert all(len(w.ds_number(v, 6)) <= 16 for v in (-99999.123456, 0.978148, 1e5 / 3))


def test_every_vendor_encodes_hounsfield_units(tmp_path: Path) -> None:
    c = plan_cohort(20, seed=0)
    seen = set()
    for p in c.patients:
        for st in p.studies:
            for se in st.series:
                if se.kind != "ct_axial" or p.site.key in seen:
                    continue
                seen.add(p.site.key)
                stored, _ = render_series(0, p, st, se)
                paths = w.write_series(tmp_path / se.uid, p, st, se, stored)
                ds = pydicom.dcmread(paths[0])
                hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                assert ds.PixelRepresentation == p.site.vendor.ct_pixel_representation
                assert -1030 < np.median(hu[:3, :3]) < -950  # air in the corner
                assert 30 < np.percentile(hu, 95) < 400  # soft tissue and contrast
    assert len(seen) == 4


def test_projection_images_have_their_own_sop_class_and_no_patient_geometry(tmp_path: Path) -> None:
    c = plan_cohort(12, seed=0)
    found = set()
    for p in c.patients:
        for st in p.studies:
            if st.kind != "XR":
                continue
            se = st.series[0]
            stored, _ = render_series(0, p, st, se)
            ds = pydicom.dcmread(w.write_series(tmp_path / se.uid, p, st, se, stored)[0])
            assert ds.SOPClassUID == w.SOP_CLASS[ds.Modality]
            assert "ImagePositionPatient" not in ds and ds.ViewPosition == "PA"
            assert ds.PhotometricInterpretation == p.site.vendor.xr_photometric
            found.add(ds.Modality)
    assert found


def test_fixed_uids_are_the_ones_pydicom_knows() -> None:
    """The UIDs written into every file: pydicom's implementation UID (spelled from its root so
    the bytes do not follow a pydicom upgrade) and the retired Detached Study Management class."""
    assert w.IMPLEMENTATION_UID == "1.2.826.0.1.3680043.8.498.1" == PYDICOM_IMPLEMENTATION_UID
    assert UID(w.STUDY_COMPONENT_SOP).keyword == "DetachedStudyManagement"
    assert {str(u) for u in w.SOP_CLASS.values()} == {
        "1.2.840.10008.5.1.4.1.1.2",
        "1.2.840.10008.5.1.4.1.1.4",
        "1.2.840.10008.5.1.4.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.1",
    }
