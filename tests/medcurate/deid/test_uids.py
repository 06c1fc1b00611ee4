"""2.25 UIDs: deterministic, valid, registry UIDs untouched."""

import re

from medcurate.deid.pseudonyms import Keyer
from medcurate.deid.uids import UIDMapper, keeps_uid


def test_new_uids() -> None:
    m = UIDMapper(Keyer(b"uid-salt-123"))
    new = m("1.2.3.4.5")
    assert new == m("1.2.3.4.5 ") == UIDMapper(Keyer(b"uid-salt-123"))("1.2.3.4.5")
    assert re.fullmatch(r"2\.25\.[1-9]\d{0,38}", new) and len(new) <= 64
    assert new != m("1.2.3.4.6") != UIDMapper(Keyer(b"other-salt-1"))("1.2.3.4.5")
    assert m("1.2.840.10008.5.1.4.1.1.2") == "1.2.840.10008.5.1.4.1.1.2"


def test_keeps_class_uids() -> None:
    assert (
        keeps_uid("SOPClassUID")
        and keeps_uid("ReferencedSOPClassUID")
        and keeps_uid("TransferSyntaxUID")
    )
    assert not keeps_uid("SOPInstanceUID") and not keeps_uid("FrameOfReferenceUID")
