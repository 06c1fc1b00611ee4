"""Burned-in text: generated images with names, IDs and dates in their pixels come out cleaned (no
planted token readable, by OCR and by the ink each token was drawn with), clean controls come out
unchanged, deid-data's ultrasound comes out clean, and what cannot be cleaned is refused."""

from __future__ import annotations

import json
import re
import shutil
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from medcurate.deid import burnedin, deidentify_files
from medcurate.deid.burnedin import (
    CINE_TOO_LARGE,
    COLOUR_VIDEO,
    NO_PIXELS,
    OCR_UNAVAILABLE,
    clean_pixels,
    ocr_boxes,
    ocr_reason,
    to_8bit,
)
from medcurate.deid.policy import PixelMask, Policy
from medcurate.deid.verify import burned_in_unchecked
from medcurate.io import sha256_bytes
from tests.medcurate.deid.burnedin_data import Case, make_case, make_set, write_set

pytestmark = pytest.mark.skipif(shutil.which("tesseract") is None, reason="needs tesseract")

SALT = b"burnedin-test-salt"
_ALNUM = re.compile(r"[^A-Z0-9]")


def _frames(ds: Dataset) -> np.ndarray:
    a = np.asarray(ds.pixel_array)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return a.reshape(frames, int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel))


def _read(ds: Dataset) -> str:
    """What a second, independent OCR reading of every frame finds (upper case, alphanumerics)."""
    import pytesseract

    text = []
    for frame in _frames(ds):
        grey = to_8bit(frame, str(ds.PhotometricInterpretation))
        for psm in (11, 6):
            text.append(pytesseract.image_to_string(grey, config=f"--psm {psm}"))
    return _ALNUM.sub("", " ".join(text).upper())


def _ink_left(case: Case, ds: Dataset) -> int:
    """Pixels the planted text was drawn on that are not blanked in the output."""
    out = _frames(ds)
    blank = out.min(axis=(1, 2, 3), keepdims=True)
    return int((out != blank).any(axis=-1)[case.ink].sum())


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Case], Path, object]:
    root = tmp_path_factory.mktemp("burnedin")
    cases = write_set(make_set(12), root / "src")
    files = sorted((root / "src").glob("*.dcm"))
    res = deidentify_files(files, root / "dst", root / "restricted", SALT, workers=1)
    return cases, root, res


def _outputs(root: Path, cases: dict[str, Case]) -> dict[str, Dataset | None]:
    """Case name -> its output (found by source hash in the manifest), None when withheld."""
    import pandas as pd

    manifest = pd.read_parquet(root / "dst" / "deid.parquet")
    by_sha = dict(zip(manifest["source_sha256"], manifest["path"], strict=True))
    out: dict[str, Dataset | None] = {}
    for name in cases:
        sha = sha256_bytes((root / "src" / f"{name}.dcm").read_bytes())
        rel = by_sha.get(sha)
        out[name] = pydicom.dcmread(root / "dst" / rel) if rel else None
    return out


def test_generated_text_is_cleaned_not_withheld_and_unreadable(generated) -> None:  # type: ignore[no-untyped-def]
    cases, root, res = generated
    outputs = _outputs(root, cases)
    text_cases = [c for c in cases.values() if c.has_text]
    assert len(text_cases) == 9 and any(c.kind == "USCINE" for c in text_cases)
    assert any(c.ds.get("BurnedInAnnotation") != "YES" for c in text_cases)  # undeclared too
    cleaned = [c for c in text_cases if outputs[c.name] is not None]
    assert len(cleaned) / len(text_cases) >= 0.95
    for c in cleaned:
        ds = outputs[c.name]
        assert ds is not None
        assert _ink_left(c, ds) == 0, c.name
        read = _read(ds)
        for token in c.tokens:
            assert _ALNUM.sub("", token) not in read, c.name
        assert ds.BurnedInAnnotation == "NO"
        codes = {i.CodeValue for i in ds.DeidentificationMethodCodeSequence}
        assert "113101" in codes
    assert res.pixels_cleaned == len(cleaned) and res.verifier_hit_files == 0


def test_clean_controls_are_neither_changed_nor_withheld(generated) -> None:  # type: ignore[no-untyped-def]
    cases, root, _ = generated
    outputs = _outputs(root, cases)
    controls = [c for c in cases.values() if not c.has_text]
    assert len(controls) == 3
    changed = 0
    for c in controls:
        ds = outputs[c.name]
        if ds is None or ds.PixelData != c.ds.PixelData:
            changed += 1
        else:
            assert ds.BurnedInAnnotation == "NO"  # looked at, found clean
    assert changed / len(controls) <= 0.05


def test_pixel_record_has_boxes_not_words_and_new_uids(generated) -> None:  # type: ignore[no-untyped-def]
    cases, root, res = generated
    text = (root / "dst" / "deid.pixels.json").read_text()
    record = json.loads(text)
    assert len(record["cleaned"]) == res.pixels_cleaned
    for row in record["cleaned"]:
        assert row["boxes"] and all(len(b) == 5 for b in row["boxes"])
    for c in cases.values():
        for token in c.tokens:
            assert token not in text
    meta = res.metadata()
    assert meta["pixels_cleaned"] == res.pixels_cleaned and meta["pixel_boxes_blanked"] > 0
    # a cleaned object is a new instance: its UID is not the one the header mapping gives
    crosswalk = (root / "restricted" / "crosswalk" / "crosswalk.csv").read_text()
    for row in record["cleaned"]:
        assert row["path"].split("/")[-1][:-4] in crosswalk


def test_cleaning_is_deterministic(tmp_path: Path) -> None:
    case = make_case(0, "US", text=True, declare=False)
    write_set([case], tmp_path / "src")
    files = [tmp_path / "src" / f"{case.name}.dcm"]
    a = deidentify_files(files, tmp_path / "a", tmp_path / "ra", SALT)
    b = deidentify_files(files, tmp_path / "b", tmp_path / "rb", SALT)
    assert a.rows[0]["sha256"] == b.rows[0]["sha256"] and a.pixels_cleaned == 1
    c = deidentify_files(files, tmp_path / "c", tmp_path / "rc", SALT + b"x")
    assert c.rows[0]["sop_uid"] != a.rows[0]["sop_uid"]


def test_deid_data_ultrasound_comes_out_clean(tmp_path: Path) -> None:
    deid_data = pytest.importorskip("deid_data")
    folder = Path(deid_data.__file__).parent / "data" / "ultrasounds"
    files = [folder / "GREYSCALE_IMAGE.dcm", folder / "RGB_IMAGE.dcm"]
    planted = ["DOWNTIME", "00047431395", "120907058", "CLEVELAND", "00079241539", "08291951"]
    res = deidentify_files(files, tmp_path / "dst", tmp_path / "r", SALT)
    assert res.written == 2 and res.pixels_cleaned == 2 and res.verifier_hit_files == 0
    for row in res.rows:
        ds = pydicom.dcmread(tmp_path / "dst" / row["path"])
        read = _read(ds)
        assert not [t for t in planted if t in read]
        assert ds.BurnedInAnnotation == "NO"


def test_selection_follows_modality_not_the_header() -> None:
    ds = make_case(1, "DX", text=True, declare=False).ds
    assert "BurnedInAnnotation" not in ds and ocr_reason(ds, Policy()) is not None
    ds.Modality = "CT"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    assert ocr_reason(ds, Policy()) is None
    us = make_case(2, "US", text=False, declare=False).ds
    assert ocr_reason(us, Policy(burned_in_allow=frozenset({"US"}))) is None


def test_what_cannot_be_cleaned_is_refused_with_a_code(monkeypatch: pytest.MonkeyPatch) -> None:
    cine = make_case(3, "USCINE", text=True, declare=True).ds
    assert clean_pixels(cine, Policy(max_cine_frames=2)).reason == CINE_TOO_LARGE
    video = make_case(4, "US", text=False, declare=False).ds
    video.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
    assert clean_pixels(video, Policy()).reason == COLOUR_VIDEO
    pdf = make_case(5, "SC", text=False, declare=False).ds
    del pdf.PixelData
    pdf.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    assert clean_pixels(pdf, Policy()).reason == NO_PIXELS
    monkeypatch.setattr(burnedin, "ocr_available", lambda: False)
    us = make_case(6, "US", text=True, declare=False).ds
    before = us.PixelData
    result = clean_pixels(us, Policy())
    assert result.reason == OCR_UNAVAILABLE and us.PixelData == before


def test_vendor_masks_are_blanked_before_ocr() -> None:
    mask = PixelMask.parse("US:0,0,1,0.25")
    assert mask == PixelMask("US", (0.0, 0.0, 1.0, 0.25))
    with pytest.raises(ValueError):
        PixelMask.parse("US:0,0,2")
    policy = Policy.from_env({"MEDCURATE_DEID_PIXEL_MASKS": "US:0,0,1,0.25; DX@ACME:0,0,1,1"})
    assert policy.pixel_masks[0] == mask and policy.pixel_masks[1].manufacturer == "ACME"
    case = make_case(7, "US", text=True, declare=False)  # text in the header band
    result = clean_pixels(case.ds, Policy(pixel_masks=(mask,)))
    assert result.reason is None and result.masked == 1
    out = _frames(case.ds)
    assert (out[:, : 480 // 4] == 0).all()


def test_ocr_finds_no_text_in_a_blank_frame() -> None:
    assert ocr_boxes(np.zeros((200, 300), np.uint8), Policy()) == []


def test_verifier_refuses_risky_images_not_said_clean() -> None:
    case = make_case(8, "US", text=False, declare=True)
    buf = BytesIO()
    case.ds.save_as(buf, enforce_file_format=True)
    source = buf.getvalue()
    assert burned_in_unchecked(source, source)  # as received: not checked
    assert not burned_in_unchecked(source, source, frozenset({"US"}))  # allowed by the policy
    said = make_case(8, "US", text=False, declare=True).ds
    said.BurnedInAnnotation = "NO"
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "113101", "DCM", "x"
    said.DeidentificationMethodCodeSequence = [item]
    out = BytesIO()
    said.save_as(out, enforce_file_format=True)
    assert not burned_in_unchecked(source, out.getvalue())
