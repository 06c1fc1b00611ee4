"""IOD-aware actions: compound codes and removals resolved per (SOP class, attribute path)."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    EnhancedMRImageStorage,
    RTDoseStorage,
)

from medcurate.deid.engine import Deidentifier
from medcurate.deid.iod import iod_types, path_key, provenance
from medcurate.deid.table import Action, action_table, keep_conformant, resolve_compound
from medcurate.deid.verify import verify
from tests.deid_helpers import ct_instance, item, seq

SALT = b"iod-test-salt-0001"
UNKNOWN_SOP = "1.2.826.0.1.3680043.9.7777.999.1"  # not a standard SOP class


def _as(sop_class: str, modality: str = "MR") -> Dataset:
    ds = ct_instance()
    ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.Modality = modality
    ds.DeviceSerialNumber = "ZQXSERIAL77"
    ds.OperatorsName = "ZQXOPERATOR^ZQXTECH"
    ds.StationName = "ZQXSTATION"
    ds.AcquisitionContextSequence = seq(item(CodeMeaning="ZQXCONTEXT"))
    ds.ContributingEquipmentSequence = seq(item(DeviceSerialNumber="ZQXOTHERSERIAL"))
    return ds


def _bytes(ds: Dataset) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_vendored_types_have_provenance_and_the_known_cases() -> None:
    prov = provenance()
    assert prov["source"] == "dicom_standard-0.1.0-py3-none-any.whl"
    assert len(prov["sha256"]) == 64 and prov["built"]
    mr = iod_types(EnhancedMRImageStorage)
    assert mr is not None and mr.iod == "enhanced-mr-image"
    assert mr.type_of((0x00181000,)) == "1"  # Enhanced General Equipment
    assert mr.type_of((0x00400555,)) == "2"  # Acquisition Context
    assert mr.type_of((0x0018A001, 0x00181000)) is None  # Type 3 inside Contributing Equipment
    rt = iod_types(RTDoseStorage)
    assert rt is not None and rt.type_of((0x00081070,)) == "2"  # RT Series
    ct = iod_types(CTImageStorage)
    assert ct is not None and ct.type_of((0x00181000,)) is None  # General Equipment: Type 3
    assert mr.text_type(0x00080104, nested=True) == "1"  # Code Meaning, in any sequence
    assert mr.text_type(0x00080070) == "1"  # Manufacturer, top level (Enhanced Equipment)
    assert iod_types(UNKNOWN_SOP) is None


def test_overlay_groups_are_read_as_60xx() -> None:
    assert path_key((0x60023000,)) == "60003000"
    assert path_key((0x00400555, 0x0040A043)) == "00400555:0040a043"
    rs = iod_types(RTDoseStorage)  # Overlay Plane: U module
    assert rs is not None and rs.type_of((0x60043000,)) == "1"


@pytest.mark.parametrize(
    ("code", "kind", "expected"),
    [
        ("X/Z", None, Action.REMOVE),
        ("X/Z", "3", Action.REMOVE),
        ("X/Z", "2", Action.EMPTY),
        ("X/Z", "2C", Action.EMPTY),
        ("X/Z", "1", Action.EMPTY),  # the strongest this code allows
        ("X/D", None, Action.REMOVE),
        ("X/D", "1C", Action.DUMMY),
        ("X/D", "2", Action.DUMMY),
        ("Z/D", None, Action.EMPTY),
        ("Z/D", "2", Action.EMPTY),
        ("Z/D", "1", Action.DUMMY),
        ("X/Z/D", None, Action.REMOVE),
        ("X/Z/D", "2C", Action.EMPTY),
        ("X/Z/D", "1", Action.DUMMY),
        ("X/Z/D", "1C", Action.DUMMY),
    ],
)
def test_compound_codes(code: str, kind: str | None, expected: Action) -> None:
    assert resolve_compound(code, kind) is expected


def test_removals_keep_the_object_conformant_except_type1_sequences() -> None:
    assert keep_conformant(Action.REMOVE, None) is Action.REMOVE
    assert keep_conformant(Action.REMOVE, "2C") is Action.EMPTY
    assert keep_conformant(Action.REMOVE, "1") is Action.DUMMY
    assert keep_conformant(Action.REMOVE, "1", sequence=True) is Action.REMOVE
    assert keep_conformant(Action.REMOVE, "2", sequence=True) is Action.EMPTY
    assert keep_conformant(Action.CLEAN, "1") is Action.CLEAN


def test_table_resolves_per_sop_class_and_path() -> None:
    t = action_table()
    mr, ct = iod_types(EnhancedMRImageStorage), iod_types(CTImageStorage)
    serial = 0x00181000
    assert t.lookup_in_iod(serial, (serial,), None) is Action.REMOVE  # unknown: as before
    assert t.lookup_in_iod(serial, (serial,), ct) is Action.REMOVE
    assert t.lookup_in_iod(serial, (serial,), mr) is Action.DUMMY
    assert t.lookup_in_iod(serial, (0x0018A001, serial), mr) is Action.REMOVE
    assert t.lookup_in_iod(0x00400555, (0x00400555,), mr, sequence=True) is Action.EMPTY
    assert t.depends_on_iod(serial) and t.depends_on_iod(0x60023000)
    assert not t.depends_on_iod(0x0020000D)  # a UID: U whatever the IOD


def test_enhanced_mr_keeps_what_its_iod_needs_and_nothing_readable() -> None:
    ds = _as(EnhancedMRImageStorage)
    Deidentifier(SALT).deidentify(ds)
    assert ds.DeviceSerialNumber and "ZQX" not in str(ds.DeviceSerialNumber)  # Type 1: dummy
    assert "AcquisitionContextSequence" in ds and len(ds.AcquisitionContextSequence) == 0
    assert "OperatorsName" not in ds  # Type 3 in General Series
    assert "StationName" not in ds
    # inside Contributing Equipment the serial number is Type 3: removed
    assert "DeviceSerialNumber" not in ds.ContributingEquipmentSequence[0]


def test_rt_dose_keeps_operators_name_empty() -> None:
    ds = _as(RTDoseStorage, modality="RTDOSE")
    Deidentifier(SALT).deidentify(ds)
    assert "OperatorsName" in ds and not ds.OperatorsName
    assert "DeviceSerialNumber" not in ds


def test_unknown_sop_class_behaves_as_before() -> None:
    ds = _as(UNKNOWN_SOP)
    Deidentifier(SALT).deidentify(ds)
    for kw in ("DeviceSerialNumber", "OperatorsName", "AcquisitionContextSequence"):
        assert kw not in ds


def test_type1_text_that_fails_cleaning_gets_a_dummy_not_an_empty_value() -> None:
    ds = _as(EnhancedMRImageStorage)
    ds.Manufacturer = "ZQXSURNAME SCANNERS"  # the patient's surname: not kept
    ds.RescaleType = "ZQXSURNAME"  # enumerated where it is Type 1: its dummy is US
    Deidentifier(SALT).deidentify(ds)
    assert ds.Manufacturer and "ZQX" not in str(ds.Manufacturer)
    assert "ZQX" not in str(ds.get("RescaleType", ""))
    dx = _as("1.2.840.10008.5.1.4.1.1.1.1", modality="DX")  # DX: Rescale Type is Type 1
    dx.RescaleType = "ZQXSURNAME"
    Deidentifier(SALT).deidentify(dx)
    assert dx.RescaleType == "US"
    unknown = _as(UNKNOWN_SOP)
    unknown.Manufacturer = "ZQXSURNAME SCANNERS"
    Deidentifier(SALT).deidentify(unknown)
    assert "Manufacturer" in unknown and not unknown.Manufacturer  # as before: emptied


def test_verifier_accepts_kept_dummies_and_still_catches_leaks() -> None:
    src = _as(EnhancedMRImageStorage)
    src.ReferencedPerformedProcedureStepSequence = seq(
        item(
            ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.3",
            ReferencedSOPInstanceUID="1.2.826.0.1.3680043.9.7777.5.5",
        )
    )
    data = _bytes(src)
    out = _as(EnhancedMRImageStorage)
    out.ReferencedPerformedProcedureStepSequence = src.ReferencedPerformedProcedureStepSequence
    Deidentifier(SALT).deidentify(out)
    # Type 1C here: kept (D), its instance UID replaced, its class UID kept
    pps = out.ReferencedPerformedProcedureStepSequence
    assert len(pps) == 1 and pps[0].ReferencedSOPInstanceUID != "1.2.826.0.1.3680043.9.7777.5.5"
    res = verify(data, _bytes(out), "P-1/2.25.1/2.25.2/2.25.3.dcm")
    assert res.clean, res.describe()
    pps[0].ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.9.7777.5.5"  # a leak inside it
    out.DeviceSerialNumber = "ZQXSERIAL77"  # and the dummy replaced by the source value
    res = verify(data, _bytes(out), "P-1/2.25.1/2.25.2/2.25.3.dcm")
    assert res.hits >= 2
