"""The verifier finds what should be gone, and stays quiet about what the profile keeps."""

import warnings
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

import medcurate.deid.verify as verify_mod
from medcurate.deid.engine import Deidentifier
from medcurate.deid.verify import verify
from tests.deid_helpers import ct_instance, item, seq


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


# -- the verifier's own reader of the source ---------------------------------------------------
def _collect_both(data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    fast = verify_mod.collect(data, "x/ZQXFILE.dcm")
    with monkeypatch.context() as m:
        m.setattr(verify_mod, "_read", lambda source: None)  # pydicom's reader instead
        slow = verify_mod.collect(data, "x/ZQXFILE.dcm")
    return fast, slow


def _comparable(collected: tuple[dict[bytes, tuple[str, bytes]], bytes, list[bytes]]) -> object:
    tokens, kept, bulk = collected
    # pydicom's reader leaves a few short binary values decoded (Pixel Representation: b"\0\0"
    # becomes 0); kept entries of two bytes or fewer cannot hold a token (3 characters or more)
    return tokens, sorted(k for k in kept.split(b"\n") if len(k) > 2), bulk


def test_own_reader_collects_what_pydicom_reading_collects(
    synth_studies: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = sorted(p for p in synth_studies[0].rglob("*") if p.is_file())
    test_files = [Path(p) for p in get_testdata_files() if Path(p).is_file()]
    fast_read = 0
    for path in generated + test_files:
        data = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fast, slow = _collect_both(data, monkeypatch)
            except Exception:
                continue  # unreadable either way: the run quarantines it before verifying
            assert _comparable(fast) == _comparable(slow), path.name  # type: ignore[arg-type]
        fast_read += verify_mod._read(data) is not None
    assert all(verify_mod._read(p.read_bytes()) is not None for p in generated)
    assert fast_read > len(generated) + 30  # implicit and explicit VR test files too


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "JPEG2000.dcm", "image_dfl.dcm"])
def test_other_encodings_are_read_by_pydicom(name: str) -> None:
    data = Path(get_testdata_file(name)).read_bytes()
    assert verify_mod._read(data) is None
    tokens, _, _ = verify_mod.collect(data)
    assert tokens  # still collected, the general way


def test_planted_value_in_undefined_length_implicit_items_is_found() -> None:
    ds = _source()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.OtherPatientIDsSequence = seq(
        item(PatientID="ZQXOTHERID77", IssuerOfPatientID="ZQXISSUER"),
    )
    ds.ProcedureCodeSequence = seq(  # kept, judged item by item
        item(CodeValue="CT01", CodingSchemeDesignator="99X", PersonName="ZQXPLANTEDWORD^ZQXG")
    )
    reread = pydicom.dcmread(BytesIO(_bytes(ds)), force=True)
    for kw in ("OtherPatientIDsSequence", "ProcedureCodeSequence"):
        reread[kw].is_undefined_length = True
        reread[kw].value[0].is_undefined_length_sequence_item = True
    src = _bytes(reread)
    assert verify_mod._read(src) is not None
    tokens = verify_mod.collect(src)[0]
    assert {b"zqxotherid77", b"zqxissuer", b"zqxplantedword"} <= set(tokens)
    res = verify(src, src, "a/b.dcm")
    assert res.hits >= 3


def test_non_ascii_names_are_found_in_the_sources_character_set() -> None:
    def source() -> Dataset:
        ds = ct_instance(name="MÜLLER^JÖRG")
        ds.SpecificCharacterSet = "ISO_IR 192"
        return ds

    src = _bytes(source())
    clean = source()
    Deidentifier(b"verify-salt-1").deidentify(clean)
    assert verify(src, _bytes(clean), "a/b.dcm").clean
    for leaked in ("MÜLLER", "JÖRG", "Herr Müller"):  # UTF-8 in the output, as in the source
        leaky = source()
        Deidentifier(b"verify-salt-1").deidentify(leaky)
        leaky.ImageComments = leaked
        res = verify(src, _bytes(leaky), "a/b.dcm")
        assert res.hits >= 1, leaked
        assert "LLER" not in res.describe()
