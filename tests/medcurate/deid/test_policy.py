"""Options, codes and the burned-in allow-list from the environment."""

from medcurate.deid.policy import Options, Policy, safe_private_allow_list


def test_codes_follow_options() -> None:
    assert [c for c, _ in Options().codes()] == ["113100", "113107", "113105", "113108", "113111"]
    assert [c for c, _ in Options(False, False, False, False).codes()] == ["113100"]
    assert all(len(v) <= 64 for v in Options().method_values())  # LO limit
    text = Options().profile_text()
    assert "Basic Application Confidentiality Profile" in text and "Clean Descriptors" in text


def test_burned_in_allow_from_env() -> None:
    p = Policy.from_env({"MEDCURATE_DEID_BURNED_IN_ALLOW": "US, 1.2.840.10008.5.1.4.1.1.7"})
    assert p.burned_in_allow == {"US", "1.2.840.10008.5.1.4.1.1.7"}
    assert Policy.from_env({}).burned_in_allow == frozenset()


def test_safe_private_list_is_numeric_only() -> None:
    pairs, vrs = safe_private_allow_list()
    assert ("siemens mr header", 0x0C) in pairs
    assert vrs.isdisjoint({"LO", "SH", "PN", "LT", "UN", "OB"})


def test_pixel_masks_from_env_and_ocr_defaults() -> None:
    p = Policy.from_env({"MEDCURATE_DEID_PIXEL_MASKS": "US:0,0,1,0.1;US@ACME:0,0.9,1,1"})
    assert [m.modality for m in p.pixel_masks] == ["US", "US"]
    assert p.pixel_masks[1].applies("US", "ACME MEDICAL", 480, 640)
    assert not p.pixel_masks[1].applies("US", "OTHER", 480, 640)
    assert Policy.from_env({}).pixel_masks == ()
    assert {"DX", "CR", "MG", "US", "SC", "OT"} <= Policy().ocr_modalities
    assert not {"CT", "MR", "PT"} & Policy().ocr_modalities
