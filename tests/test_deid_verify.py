"""The verifier finds what should be gone, and stays quiet about what the profile keeps."""

from io import BytesIO

from deid_helpers import ct_instance, item, seq
from pydicom.dataset import Dataset

from medcurate.deid.engine import Deidentifier
from medcurate.deid.verify import verify


def _bytes(ds: Dataset) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _source() -> Dataset:
    ds = ct_instance()
    ds.ReferencedStudySequence = seq(
        item(ReferencedSOPInstanceUID="1.2.826.0.1.3680043.9.7777.77.1")
    )
    ds.OperatorsName = "ZQXOPERATOR"
    return ds


def test_clean_output_has_no_hits() -> None:
    src = _bytes(_source())
    out = _source()
    Deidentifier(b"verify-salt-1").deidentify(out)
    res = verify(src, _bytes(out), "P-0/2.25.1/2.25.2/2.25.3.dcm", source_name="ZQXNAME_file.dcm")
    assert res.clean and res.checked > 10, res.describe()


def test_untouched_output_is_caught() -> None:
    src = _bytes(_source())
    res = verify(src, src, "a/b.dcm")
    assert res.hits >= 5
    assert {"PN", "UI", "DA"} <= set(res.kinds)
    assert "ZQX" not in res.describe()


def test_each_leak_kind_is_caught() -> None:
    src = _bytes(_source())
    clean = _source()
    Deidentifier(b"verify-salt-1").deidentify(clean)
    for attr, value in [
        ("OperatorsName", "ZQXOPERATOR"),
        ("StudyDate", "20210305"),
        ("ImageComments", "about ZQXSURNAME"),
    ]:
        leaky = _source()
        Deidentifier(b"verify-salt-1").deidentify(leaky)
        setattr(leaky, attr, value)
        assert verify(src, _bytes(leaky), "a/b.dcm").hits >= 1, attr
    assert verify(src, _bytes(clean), "ZQXSURNAME/b.dcm").hits >= 1  # path
    assert verify(src, _bytes(clean), "a/b.dcm", source_name="ZQXFILETOKEN.dcm").clean
    leaky = _source()
    Deidentifier(b"verify-salt-1").deidentify(leaky)
    leaky.ContentLabel = "ZQXFILETOKEN"
    assert verify(src, _bytes(leaky), "a/b.dcm", source_name="ZQXFILETOKEN.dcm").hits == 1


def test_kept_values_are_not_hits() -> None:
    src_ds = _source()
    src_ds.PatientComments = "F 061Y"  # removed, but its words equal kept sex/age values
    src = _bytes(src_ds)
    out = _source()
    out.PatientComments = "F 061Y"
    Deidentifier(b"verify-salt-1").deidentify(out)
    assert verify(src, _bytes(out), "a/b.dcm").clean
