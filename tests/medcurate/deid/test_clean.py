"""Clean Descriptors: kept only when every word is safe."""

from medcurate.deid.clean import clean_text, is_safe_token, safe_terms


def test_safe_descriptions_kept() -> None:
    for text in ("CT HEAD W/O CONTRAST", "AX T1 POST GAD 3D", "Chest PA", "DWI B1000", "5.0 mm"):
        assert clean_text(text) == text, text


def test_unsafe_descriptions_removed() -> None:
    for text in ("CT HEAD DR SMITH", "MRI for John", "ACC 12345678", "ST MARY HOSPITAL"):
        assert clean_text(text) is None, text


def test_vocabulary() -> None:
    terms = safe_terms()
    assert {"HEAD", "CONTRAST", "AXIAL"} <= terms and "SMITH" not in terms
    assert is_safe_token("120") and not is_safe_token("123456")
