"""The dciodvfy output parser: errors only, values normalised away, compared as multisets."""

from __future__ import annotations

from collections import Counter

from medcurate.deid.validate_iod import damaged, new_errors, normalise, parse_errors

_LINES = [
    "Error - Orientation vector is not unit vector for  vector of VelocityEncodingDirection"
    " - values are 0\\0\\0",
    "Warning - Missing attribute or value that would be needed to build DICOMDIR - Patient ID",
    "EnhancedMRImage",
    "Error - Missing attribute Type 2 Required Element=<Manufacturer> Module=<GeneralEquipment>",
    "Error - Missing attribute Type 1 Required Element=<Manufacturer>"
    " Module=<EnhancedGeneralEquipment>",
    "Error - Value invalid for this VR - (0x0008,0x0020) DA Study Date  DA [1] = <1994.11.05>"
    " - Character invalid for this VR = '.' (0x2e)",
    "Error - Value invalid for this VR - (0x0010,0x0010) PN Patient's Name  PN [1] ="
    " <ZQXSURNAME^ZQX> - Length invalid for this VR = 70, expected <= 64",
    'Error - Illegal root for UID - "999.999.2.19941105" in (0x0020,0x000d) Study Instance UID',
    "Error - Number of items in PerFrameFunctionalGroupsSequence does not match NumberOfFrames"
    " - have 3 items - but 1 frames",
    "Error - Referenced SOP Instance is not listed in CurrentRequestedProcedureEvidenceSequence"
    " or PertinentOtherEvidenceSequence but have IMAGE ReferencedSOPInstanceUID 1.2.3.4",
    "Error - Unrecognized enumerated value <YBR_FULL> for value 1 of attribute"
    " <Photometric Interpretation>",
    "Error - Missing attribute Type 2 Required Element=<Manufacturer> Module=<GeneralEquipment>",
]
SAMPLE = "\n".join(_LINES) + "\n"


def test_parse_keeps_errors_only_and_counts_repeats() -> None:
    errors = parse_errors(SAMPLE)
    assert sum(errors.values()) == 10
    type2 = "Missing attribute Type 2 Required Element=<Manufacturer> Module=<GeneralEquipment>"
    assert errors[type2] == 2
    assert not any("DICOMDIR" in e or e == "EnhancedMRImage" for e in errors)
    # Type 1 and Type 2 stay apart; the enumerated term (not a value of the patient's) stays
    assert any("Type 1 Required Element=<Manufacturer>" in e for e in errors)
    assert any("<YBR_FULL>" in e for e in errors)


def test_values_are_normalised_away() -> None:
    text = "\n".join(parse_errors(SAMPLE))
    for value in ("ZQXSURNAME", "1994.11.05", "999.999", "1.2.3.4", "0\\0\\0", "'.'", "70", " 3 "):
        assert value not in text, value
    head = "Value invalid for this VR - (0x0008,0x0020) DA Study Date  DA [1] = "
    a = normalise(head + "<20010101x> - Character invalid for this VR = 'x' (0x78)")
    b = normalise(head + "<1994.11.05> - Character invalid for this VR = '.' (0x2e)")
    assert a == b and "Character invalid" in a


def test_new_errors_are_those_beyond_the_source() -> None:
    a, b, c = "Missing A", "Missing B", "Empty C"
    source = Counter({a: 1, b: 2})
    output = Counter({a: 1, b: 3, c: 1})
    assert new_errors(source, output) == Counter({b: 1, c: 1})
    assert not new_errors(output, source)


def test_damaged_sources_are_recognised() -> None:
    assert damaged(Counter({"Dicom dataset read failed": 1}))
    assert damaged(Counter({"PixelData has incorrect value length - expected # dec - got #": 1}))
    assert not damaged(parse_errors(SAMPLE))
