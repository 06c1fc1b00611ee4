"""Retain Safe Private: allow-listed numeric elements stay with their creator; the rest goes."""

from pydicom.dataset import Dataset

from medcurate.deid.private import filter_private


def test_filter_private() -> None:
    ds = Dataset()
    ds.PatientSex = "F"
    ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
    ds.add_new(0x0019100C, "IS", "1000")  # b-value: kept
    ds.add_new(0x00191008, "CS", "ZQX")  # same block, not listed: removed
    ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
    ds.add_new(0x00291010, "OB", b"ZQX CSA")
    ds.add_new(0x00430010, "LO", "GEMS_PARM_01")
    ds.add_new(0x00431039, "LO", "ZQXTEXT")  # listed but text VR: removed
    ds.add_new(0x00090001, "LO", "bad private")  # outside any block
    assert filter_private(ds) == 1
    assert sorted(int(t) for t in ds._dict if t.group & 1) == [0x00190010, 0x0019100C]
    assert ds.PatientSex == "F"


def test_no_private() -> None:
    ds = Dataset()
    ds.PatientSex = "M"
    assert filter_private(ds) == 0 and "PatientSex" in ds
