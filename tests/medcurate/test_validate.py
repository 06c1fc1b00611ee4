"""Validation of single files: each check alone, then validate_file on real and broken DICOM."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medcurate import validate as v
from medcurate.dicomwalk import inspect


@pytest.fixture
def ct(tmp_path: Path) -> Path:
    """A valid, uncompressed CT image (pydicom's CT_small)."""
    dst = tmp_path / "ct.dcm"
    shutil.copyfile(get_testdata_file("CT_small.dcm"), dst)
    return dst


def _rewrite(src: Path, dst: Path, edit) -> Path:
    ds = pydicom.dcmread(src)
    edit(ds)
    ds.save_as(dst, enforce_file_format=False)
    return dst


def _code(path: Path) -> str | None:
    r = v.validate_file(path).reason
    return r.code if r else None


# --- the small checks ---------------------------------------------------------------------------


def test_check_file_size() -> None:
    assert v.check_file_size(0) == v.Reason(v.EMPTY_FILE, "EMPTY_FILE: the file has zero bytes")
    assert v.check_file_size(1) is None


def test_part10_prefix() -> None:
    assert v.has_part10_prefix(b"\0" * 128 + b"DICM")
    assert not v.has_part10_prefix(b"\0" * 128 + b"DICX")
    assert not v.has_part10_prefix(b"DICM")


@pytest.mark.parametrize(
    ("uid", "ok"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", True),
        ("1.2.03.4", False),  # leading zero in a component
        ("1.2.a.4", False),
        ("1..2", False),
        ("1." + "1" * 63, False),  # 65 characters
    ],
)
def test_check_uid_syntax(uid: str, ok: bool) -> None:
    r = v.check_uid_syntax("SOPInstanceUID", uid)
    assert (r is None) == ok
    if r:
        assert r.code == v.INVALID_VALUE and "SOPInstanceUID" in r.message


def test_check_sop_class() -> None:
    assert v.check_sop_class(pydicom.uid.CTImageStorage) is None
    assert v.check_sop_class(pydicom.uid.DigitalXRayImageStorageForPresentation) is None
    for uid in (
        pydicom.uid.ComprehensiveSRStorage,
        pydicom.uid.RTStructureSetStorage,
        pydicom.uid.SegmentationStorage,
        pydicom.uid.RTDoseStorage,
    ):
        r = v.check_sop_class(uid)
        assert r is not None and r.code == v.NOT_AN_IMAGE
    assert v.check_sop_class("1.2.3.4.5.6.7") is None  # unknown: judged by its pixel data


def test_check_pixel_data_present() -> None:
    assert v.check_pixel_data_present({0x00080018, 0x7FE00010}) is None
    assert v.check_pixel_data_present({0x7FE00008}) is None
    r = v.check_pixel_data_present({0x00080018})
    assert r is not None and r.code == v.NO_PIXEL_DATA


def test_check_required_attributes_names_the_attribute() -> None:
    ds = Dataset()
    ds.SOPClassUID = pydicom.uid.CTImageStorage
    ds.SOPInstanceUID = "1.2.3"
    ds.StudyInstanceUID = "1.2.4"
    ds.SeriesInstanceUID = ""
    r = v.check_required_attributes(ds, v.IDENTITY_ATTRIBUTES)
    assert r is not None and r.code == v.MISSING_ATTRIBUTE and "SeriesInstanceUID" in r.message
    ds.SeriesInstanceUID = "1.2.5"
    r = v.check_required_attributes(ds, v.IDENTITY_ATTRIBUTES)
    assert r is not None and "Modality" in r.message
    ds.Modality = "CT"
    assert v.check_required_attributes(ds, v.IDENTITY_ATTRIBUTES) is None


def test_check_image_plane_module() -> None:
    ds = Dataset()
    assert v.check_image_plane_module(ds) is None  # projection images carry no plane geometry
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    assert v.check_image_plane_module(ds) is None
    ds.ImageOrientationPatient = [2, 0, 0, 0, 1, 0]
    assert v.check_image_plane_module(ds).code == v.INVALID_VALUE  # type: ignore[union-attr]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0, 0]
    assert v.check_image_plane_module(ds).code == v.INVALID_VALUE  # type: ignore[union-attr]
    ds.PixelSpacing = [0.5, 0.5]
    ds.ImagePositionPatient = [0, 0]
    assert v.check_image_plane_module(ds).code == v.INVALID_VALUE  # type: ignore[union-attr]


def test_check_image_pixel_module() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    assert v.check_image_pixel_module(ds) is None
    ds.BitsStored = 20
    assert v.check_image_pixel_module(ds).code == v.INVALID_VALUE  # type: ignore[union-attr]


def test_check_transfer_syntax() -> None:
    assert v.check_transfer_syntax(pydicom.uid.ExplicitVRLittleEndian) is None
    assert v.check_transfer_syntax(pydicom.uid.JPEG2000Lossless) is None  # pylibjpeg installed
    r = v.check_transfer_syntax("1.2.826.0.1.3680043.9.9999.1")
    assert r is not None and r.code == v.UNSUPPORTED_TRANSFER_SYNTAX


# --- whole files --------------------------------------------------------------------------------


def test_valid_ct_is_ok_with_header(ct: Path) -> None:
    res = v.validate_file(ct)
    assert res.ok, res.reason
    h = res.header
    assert h["modality"] == "CT"
    assert h["rows"] == 128 and h["columns"] == 128 and h["number_of_frames"] == 1
    assert h["transfer_syntax_uid"] == pydicom.uid.ExplicitVRLittleEndian
    assert len(h["image_position_patient"]) == 3 and len(h["image_orientation_patient"]) == 6
    assert h["sop_uid"] and h["series_uid"] and h["study_uid"]


def test_zero_byte(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert _code(tmp_path / "empty") == v.EMPTY_FILE


def test_text_is_not_dicom(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("this is a referral letter, not an image\n" * 20)
    assert _code(tmp_path / "notes.txt") == v.NOT_DICOM


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm"])
def test_cut_in_half_is_truncated(tmp_path: Path, name: str) -> None:
    data = Path(get_testdata_file(name)).read_bytes()
    (tmp_path / "half.dcm").write_bytes(data[: len(data) // 2 + 7])
    assert _code(tmp_path / "half.dcm") == v.TRUNCATED


def test_cut_inside_header_is_truncated(tmp_path: Path, ct: Path) -> None:
    (tmp_path / "cut.dcm").write_bytes(ct.read_bytes()[:1000])
    assert _code(tmp_path / "cut.dcm") == v.TRUNCATED


def test_no_pixel_data(tmp_path: Path, ct: Path) -> None:
    def drop(ds: Dataset) -> None:
        del ds.PixelData

    assert _code(_rewrite(ct, tmp_path / "nopix.dcm", drop)) == v.NO_PIXEL_DATA


def test_unknown_transfer_syntax(tmp_path: Path, ct: Path) -> None:
    def ts(ds: Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.9.9999.1"

    out = _rewrite(ct, tmp_path / "uts.dcm", ts)
    res = v.validate_file(out)
    assert res.reason is not None and res.reason.code == v.UNSUPPORTED_TRANSFER_SYNTAX
    assert "1.2.826.0.1.3680043.9.9999.1" in res.reason.message


@pytest.mark.parametrize("keyword", ["SeriesInstanceUID", "Rows"])
def test_missing_attribute_named(tmp_path: Path, ct: Path, keyword: str) -> None:
    def drop(ds: Dataset) -> None:
        delattr(ds, keyword)

    res = v.validate_file(_rewrite(ct, tmp_path / "missing.dcm", drop))
    assert res.reason is not None and res.reason.code == v.MISSING_ATTRIBUTE
    assert keyword in res.reason.message


def test_invalid_uid(tmp_path: Path, ct: Path) -> None:
    def bad(ds: Dataset) -> None:
        ds.SOPInstanceUID = "1.2.0003.4"

    assert _code(_rewrite(ct, tmp_path / "baduid.dcm", bad)) == v.INVALID_VALUE


def test_dicomdir() -> None:
    assert _code(Path(get_testdata_file("DICOMDIR"))) == v.DICOMDIR


def test_structured_report_is_not_an_image() -> None:
    assert _code(Path(get_testdata_file("test-SR.dcm"))) == v.NOT_AN_IMAGE


def test_corrupt_compressed_pixels_fail_decode(tmp_path: Path) -> None:
    """Wipe the JPEG 2000 codestream header (SOC, SIZ): the DICOM reads, decoding fails."""
    data = bytearray(Path(get_testdata_file("MR_small_jp2klossless.dcm")).read_bytes())
    soc = data.index(b"\xff\x4f\xff\x51")
    data[soc : soc + 40] = b"\x00" * 40
    (tmp_path / "bad.dcm").write_bytes(bytes(data))
    assert _code(tmp_path / "bad.dcm") == v.PIXEL_DECODE_FAILED
    assert _code(Path(get_testdata_file("JPEG-lossy.dcm"))) == v.PIXEL_DECODE_FAILED


def test_unexpected_exception_becomes_unreadable(ct: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(v.pydicom, "dcmread", boom)
    res = v.validate_file(ct)
    assert res.reason is not None and res.reason.code == v.UNREADABLE
    assert "RuntimeError" in res.reason.message


EXPECTED = {
    "CT_small.dcm": None,
    "JPEG2000.dcm": None,
    "MR_small_RLE.dcm": None,
    "SC_rgb_jpeg_dcmtk.dcm": None,
    "MR_truncated.dcm": v.TRUNCATED,
    "rtplan_truncated.dcm": v.TRUNCATED,
    "meta_missing_tsyntax.dcm": v.MISSING_ATTRIBUTE,
    "test-SR.dcm": v.NOT_AN_IMAGE,
    "rtstruct.dcm": v.NO_FILE_META,
    "no_meta.dcm": v.NOT_DICOM,
    "README.txt": v.NOT_DICOM,
    "emri_small_jpeg_2k_lossless_too_short.dcm": v.TRUNCATED,
}


def test_every_pydicom_test_file_gets_an_answer() -> None:
    """pydicom's and pydicom-data's files, some broken on purpose: none raises, each is ok or has
    a known reason code and a message."""
    files = [Path(f) for f in get_testdata_files() if Path(f).is_file()]
    assert len(files) > 200
    seen: dict[str, str | None] = {}
    for f in files:
        res = v.validate_file(f)
        if res.reason is not None:
            assert res.reason.code in v.REASON_CODES
            assert res.reason.message.startswith(res.reason.code)
        seen.setdefault(f.name, res.reason.code if res.reason else None)
    for name, code in EXPECTED.items():
        assert seen[name] == code, name
    assert sum(c is None for c in seen.values()) > 50  # most images are fine


# --- the cheap header walk (medcurate.dicomwalk) -----------------------------------------------


def _nested_ct(ct: Path, dst: Path, depth: int, implicit: bool, undefined: bool) -> Path:
    """CT_small with ContentSequence nested ``depth`` deep, written by pydicom."""

    ds = pydicom.dcmread(ct)
    inner = Dataset()
    inner.CodeMeaning = "leaf"
    for _ in range(depth):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        outer.ContentSequence.is_undefined_length = undefined
        for item in outer.ContentSequence:
            item.is_undefined_length_sequence_item = undefined
        inner = outer
    ds.ContentSequence = inner.ContentSequence
    if implicit:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.save_as(dst, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    return dst


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("undefined", [True, False])
def test_walk_counts_sequence_depth_in_every_encoding(
    tmp_path: Path, ct: Path, implicit: bool, undefined: bool
) -> None:

    deep = _nested_ct(ct, tmp_path / "deep.dcm", 40, implicit, undefined)
    assert pydicom.dcmread(deep).ContentSequence[0].ContentSequence  # a readable file
    assert inspect(deep).code == v.SEQUENCE_TOO_DEEP
    assert inspect(deep, max_depth=40).code is None
    assert inspect(deep, max_depth=39).code == v.SEQUENCE_TOO_DEEP
    assert v.validate_file(deep, max_depth=64).ok
