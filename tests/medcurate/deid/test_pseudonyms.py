"""Keyed pseudonyms: stable per salt, different across salts, salt never shown."""

from medcurate.deid.pseudonyms import Keyer, dummy_id, patient_key, patient_pseudonym, site_code


def test_pseudonym_is_keyed_and_stable() -> None:
    k1, k2 = Keyer(b"salt-one-123"), Keyer(b"salt-two-456")
    key = patient_key("PID1", "ISSUER", "", "", "")
    assert patient_pseudonym(k1, key) == patient_pseudonym(Keyer(b"salt-one-123"), key)
    assert patient_pseudonym(k1, key) != patient_pseudonym(k2, key)
    assert patient_pseudonym(k1, key).startswith("P-") and len(patient_pseudonym(k1, key)) == 14
    assert "salt-one" not in repr(k1)


def test_patient_key_fallbacks() -> None:
    assert patient_key(" PID ", "", "N^M", "1990", "1.2") == ("id", "", "PID")
    assert patient_key("", "", "n^m", "1990", "1.2") == ("name", "N^M", "1990")
    assert patient_key("", "", "", "", "1.2") == ("study", "1.2")


def test_site_code() -> None:
    k = Keyer(b"salt-one-123")
    assert site_code(k, "") == "S-unknown"
    assert site_code(k, "General  hospital") == site_code(k, "GENERAL HOSPITAL")
    assert len(site_code(k, "X")) == 8
    assert dummy_id(k, "acc", "A1") != dummy_id(k, "acc", "A2")
