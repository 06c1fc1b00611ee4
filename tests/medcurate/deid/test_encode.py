"""The fast encoder writes exactly the bytes pydicom's ``save_as`` writes, file by file."""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from medcurate.deid.encode import encode
from medcurate.deid.engine import Deidentifier
from tests.deid_helpers import ct_instance, item, seq


def _save_as(ds: Dataset) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _deidentified(data: bytes, engine: Deidentifier) -> Dataset | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(BytesIO(data), force=True)
            engine.deidentify(ds)
        except Exception:
            return None  # the run quarantines these; nothing to encode
    return ds


def _compare(paths: list[Path]) -> int:
    engine = Deidentifier(b"encode-salt")
    compared = 0
    for path in paths:
        ds = _deidentified(path.read_bytes(), engine)
        if ds is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fast = encode(ds)
            except Exception as exc:  # must fail the same way pydicom does
                with pytest.raises(type(exc)):
                    _save_as(ds)
                continue
            assert fast == _save_as(ds), path.name
        compared += 1
    return compared


def test_same_bytes_as_save_as_for_generated_studies(synth_studies: tuple[Path, Path]) -> None:
    files = sorted(p for p in synth_studies[0].rglob("*") if p.is_file())
    assert _compare(files) == len(files)


def test_same_bytes_as_save_as_for_pydicom_test_files() -> None:
    files = [Path(p) for p in get_testdata_files() if Path(p).is_file()]
    # implicit and explicit VR, big endian, compressed, undefined-length sequences and items
    assert _compare(files) > 50


def test_implicit_vr_with_undefined_length_sequences() -> None:
    ds = ct_instance()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.ProcedureCodeSequence = seq(
        item(CodeValue="CT01", CodingSchemeDesignator="99X", CodeMeaning="CT CHEST"),
        item(CodeValue="CT02", CodingSchemeDesignator="99X", CodeMeaning="CT ABDOMEN"),
    )
    raw = dcmread(BytesIO(_save_as(ds)), force=True)
    elem = raw["ProcedureCodeSequence"]
    elem.is_undefined_length = True
    elem.value[0].is_undefined_length_sequence_item = True
    out = _deidentified(_save_as(raw), Deidentifier(b"encode-salt"))
    assert out is not None
    kept = out["ProcedureCodeSequence"]
    assert kept.is_undefined_length and len(kept.value) == 2
    blob = encode(out)
    assert blob == _save_as(out)
    assert b"\xfe\xff\xdd\xe0" in blob and b"\xfe\xff\x0d\xe0" in blob  # both delimiters


def test_big_endian_goes_the_general_way() -> None:
    data = Path(get_testdata_file("MR_small_bigendian.dcm")).read_bytes()
    ds = _deidentified(data, Deidentifier(b"encode-salt"))
    assert ds is not None
    assert encode(ds) == _save_as(ds)


def test_file_meta_carries_each_files_own_instance_uid() -> None:
    engine = Deidentifier(b"encode-salt")
    blobs = []
    for sop in ("1.2.826.0.1.3680043.9.7777.1.1.1.1", "1.2.826.0.1.3680043.9.7777.1.1.1.2"):
        ds = ct_instance(sop_uid=sop)
        engine.deidentify(ds)
        blob = encode(ds)
        assert blob == _save_as(ds)
        assert str(ds.SOPInstanceUID).encode() in blob[:400]
        blobs.append(blob)
    assert blobs[0][:400] != blobs[1][:400]
