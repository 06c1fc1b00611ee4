"""Fictional people, sites and devices for the study generator.

Everything here is made up: first and last names are combined at random from short built-in lists,
addresses use invented streets, phone numbers use the 555-01xx block reserved for fiction, and the
institutions and vendors do not exist. The point is that the strings *look* like the real thing,
in every form the real world writes them (DICOM ``LAST^FIRST``, plain ``First Last``, folder
``LAST_FIRST``), so de-identification has something honest to find.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

import numpy as np

FIRST_NAMES_F = (
    "Alice", "Beatrix", "Clara", "Delphine", "Edith", "Flora", "Greta", "Helena", "Ingrid",
    "Josefine", "Katrin", "Leonie", "Marisol", "Noemi", "Ottilie", "Paloma", "Rosalind", "Sibylle",
    "Theodora", "Ursula", "Valérie", "Wilhelmina", "Yvonne", "Zoë",
)  # fmt: skip
FIRST_NAMES_M = (
    "Aurelio", "Bastian", "Cornelius", "Dorian", "Emeric", "Fabian", "Gideon", "Horatio", "Ignaz",
    "Jasper", "Konrad", "Leopold", "Magnus", "Nikolai", "Osvald", "Percival", "Quentin", "Rupert",
    "Severin", "Tobias", "Ulrich", "Vinzenz", "Wendelin", "José",
)  # fmt: skip
LAST_NAMES = (
    "Abernathy", "Brightwater", "Castellano", "Drummond", "Eckhardt", "Fairweather", "Grimaldi",
    "Holloway", "Ingersoll", "Jankowski", "Kettleby", "Lindqvist", "Montague", "Nightingale",
    "Oyelaran", "Pemberton", "Quaresma", "Rosenkranz", "Sandoval", "Thistlewood", "Underhill",
    "Vasquez", "Wetherby", "Yarborough", "Zellweger", "Müller", "Okonkwo-Reyes", "Van der Berg",
)  # fmt: skip
STREETS = (
    "Maplewood Lane", "Quarry Hill Road", "Old Mill Street", "Larkspur Court", "Tanners Row",
    "Heron Bay Drive", "Willowbrook Avenue", "Copperfield Way", "Juniper Terrace", "Foxglove Close",
)  # fmt: skip
TOWNS = (
    ("Eastbrook", "OH", "45"), ("Millford", "PA", "19"), ("Grayhaven", "WI", "53"),
    ("Ashcombe", "OR", "97"), ("Redfern Falls", "VT", "05"), ("Dunmore Springs", "CO", "80"),
)  # fmt: skip


def ascii_fold(text: str) -> str:
    """'Müller' -> 'Muller': how PACS exports and file systems often flatten names."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


@dataclass(frozen=True)
class Person:
    """A fictional person with the name forms in which DICOM and file names carry them."""

    first: str
    last: str
    prefix: str = ""

    @property
    def pn(self) -> str:
        """DICOM PN: ``LAST^FIRST`` (upper case, as most scanners write it)."""
        return f"{self.last.upper()}^{self.first.upper()}"

    @property
    def pn_staff(self) -> str:
        """Staff names as PN with the prefix component: ``Last^First^^Dr``."""
        return f"{self.last}^{self.first}^^{self.prefix}" if self.prefix else self.pn

    @property
    def plain(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def folder(self) -> str:
        """``LAST_FIRST`` in ASCII, spaces and dashes flattened, as export tools name folders."""
        raw = f"{self.last}_{self.first}".upper()
        return "".join(c if c.isalnum() else "_" for c in ascii_fold(raw))

    def forms(self) -> list[str]:
        """Every form in which this person's name is planted."""
        out = [self.pn, self.plain, self.folder]
        if self.prefix:
            out.append(self.pn_staff)
        return sorted(set(out))


@dataclass(frozen=True)
class Vendor:
    """A fictional equipment maker and how its scanners encode pixels and private data."""

    manufacturer: str
    ct_model: str
    mr_model: str
    xr_model: str
    xr_modality: str  # "CR" or "DX"
    xr_photometric: str  # CR plates often write MONOCHROME1
    ct_pixel_representation: int  # 0 unsigned, 1 signed
    ct_bits_stored: int
    ct_intercept: float
    ct_slope: float
    private_group: int
    private_creator: str
    station_prefix: str
    field_strength: float
    patient_position: str  # the CT default: "HFS" or "FFS"
    ct_ascending: bool  # instance 1 at the inferior end (True) or superior end (False)


VENDORS = (
    Vendor("ACME Medical Systems", "Aurora CT 64", "Aurora MR 1.5T", "ACME CR-350", "CR",
           "MONOCHROME1", 0, 12, -1024.0, 1.0, 0x0009, "ACME_CT_PRIV", "ACMECT", 1.5, "HFS", False),
    Vendor("Nova Imaging", "NovaScan 128", "NovaMR Prisma 3T", "NovaDR 2", "DX",
           "MONOCHROME2", 1, 16, 0.0, 1.0, 0x0019, "NOVA MED 1.0", "NOVA", 3.0, "FFS", True),
    Vendor("Helixon Healthcare", "Helix CT Evo", "Helix MR Vista", "Helix DR-S", "DX",
           "MONOCHROME2", 0, 16, -1024.0, 1.0, 0x0029, "HELIXON_PRIV", "HLXWS", 1.5, "HFS", False),
    Vendor("Orbis Diagnostics", "Orbis Spectra 256", "Orbis MR 3T", "Orbis CR 10", "CR",
           "MONOCHROME1", 1, 16, -1024.0, 0.5, 0x0011, "ORBIS_PRIVATE", "ORBCT", 3.0, "HFS", True),
)  # fmt: skip


@dataclass(frozen=True)
class Site:
    """A fictional hospital: its identity, staff, equipment and how common findings are there."""

    key: str  # a neutral site key ("site-1"), safe for tables downstream
    institution: str
    address: str
    department: str
    phone_area: str
    mrn_prefix: str
    mrn_digits: int
    accession_prefix: str
    prevalence: float
    vendor: Vendor
    station: str
    device_serial: str
    staff: tuple[Person, ...] = field(default=())


_SITE_ROWS = (
    ("St. Aldric Memorial Hospital", "400 Cloister Road, Eastbrook, OH 45502",
     "Department of Radiology", "513", "SA", 7, "SAM", 0.15),
    ("Riverbend University Medical Center", "1 Riverbend Plaza, Millford, PA 19011",
     "Diagnostic Imaging", "215", "RB", 8, "RBU", 0.30),
    ("Cedar Hollow Community Clinic", "77 Cedar Hollow Lane, Grayhaven, WI 53010",
     "Radiology & Imaging Services", "414", "CH-", 6, "CHC", 0.40),
    ("Kestrel Valley Imaging Center", "2200 Kestrel Valley Parkway, Ashcombe, OR 97002",
     "Cross-sectional Imaging", "503", "KV", 7, "KVI", 0.55),
)  # fmt: skip


def make_sites(rng: np.random.Generator) -> tuple[Site, ...]:
    """The four sites with a staff of radiologists, referrers and technologists each."""
    sites = []
    used: set[tuple[str, str]] = set()
    for i, (inst, addr, dept, area, mrn_prefix, mrn_digits, acc, prev) in enumerate(_SITE_ROWS):
        vendor = VENDORS[i]
        staff = []
        for j in range(6):
            while True:
                pool = FIRST_NAMES_F if rng.random() < 0.5 else FIRST_NAMES_M
                first = str(pool[rng.integers(len(pool))])
                last = str(LAST_NAMES[rng.integers(len(LAST_NAMES))])
                if (first, last) not in used:
                    used.add((first, last))
                    break
            staff.append(Person(first, last, "Dr" if j < 4 else ""))
        sites.append(
            Site(
                key=f"site-{i + 1}",
                institution=inst,
                address=addr,
                department=dept,
                phone_area=area,
                mrn_prefix=mrn_prefix,
                mrn_digits=mrn_digits,
                accession_prefix=acc,
                prevalence=prev,
                vendor=vendor,
                station=f"{vendor.station_prefix}-{acc}{int(rng.integers(10, 99))}",
                device_serial=f"SN{int(rng.integers(100000, 999999))}",
                staff=tuple(staff),
            )
        )
    return tuple(sites)


@dataclass(frozen=True)
class Identity:
    """A patient's identifying attributes (fictional), as a hospital registry would hold them."""

    person: Person
    sex: str
    mrn: str
    other_id: str
    other_issuer: str
    address: str
    phone: str
    birth_name: str | None  # OtherPatientNames for some patients (a former surname)
    mother_birth_name: str


def make_identity(
    rng: np.random.Generator, site: Site, other_site: Site, sex: str, used: set[tuple[str, str]]
) -> Identity:
    """Draw a patient not yet used in this cohort (names are unique so PHI maps to one patient)."""
    pool = FIRST_NAMES_F if sex == "F" else FIRST_NAMES_M
    for _ in range(10_000):
        first = str(pool[rng.integers(len(pool))])
        last = str(LAST_NAMES[rng.integers(len(LAST_NAMES))])
        if (first, last) not in used:
            break
    else:  # more patients than name pairs: add a distinguishing second surname
        first = str(pool[rng.integers(len(pool))])
        a, b = (LAST_NAMES[int(i)] for i in rng.integers(len(LAST_NAMES), size=2))
        last = f"{a}-{b}"
    used.add((first, last))
    mrn = site.mrn_prefix + "".join(str(d) for d in rng.integers(0, 10, site.mrn_digits))
    if mrn[len(site.mrn_prefix)] == "0":
        mrn = site.mrn_prefix + "4" + mrn[len(site.mrn_prefix) + 1 :]
    other_id = other_site.mrn_prefix + "".join(
        str(d) for d in rng.integers(0, 10, other_site.mrn_digits)
    )
    town, state, zip_prefix = TOWNS[rng.integers(len(TOWNS))]
    street = STREETS[rng.integers(len(STREETS))]
    address = (
        f"{int(rng.integers(10, 9900))} {street}, {town}, {state} "
        f"{zip_prefix}{int(rng.integers(100, 999))}"
    )
    phone = f"({site.phone_area}) 555-01{int(rng.integers(0, 100)):02d}"
    birth_name = None
    if sex == "F" and rng.random() < 0.4:
        birth_name = f"{LAST_NAMES[rng.integers(len(LAST_NAMES))].upper()}^{first.upper()}"
    mother_last = LAST_NAMES[rng.integers(len(LAST_NAMES))]
    mother = f"{mother_last.upper()}^{FIRST_NAMES_F[rng.integers(len(FIRST_NAMES_F))].upper()}"
    return Identity(
        person=Person(first, last),
        sex=sex,
        mrn=mrn,
        other_id=other_id,
        other_issuer=other_site.institution,
        address=address,
        phone=phone,
        birth_name=birth_name,
        mother_birth_name=mother,
    )
