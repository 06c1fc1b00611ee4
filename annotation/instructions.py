"""What an annotator reads before labelling, and the links between Label Studio and Dagster.

The instructions are data (HTML shown by Label Studio before the first task, ``show_instruction``)
so they are reviewed like code and every project of every round carries the same text. The HTML
uses only tags and attributes Label Studio's sanitizer (bleach) keeps, with ``&`` written as
``&amp;``: the server then stores exactly what was sent, and a project is only updated when the
text really changed.

Links: each round's project description points back to the Dagster asset that made it, at
``MEDCURATE_DAGSTER_URL`` (default ``http://127.0.0.1:3000``); Dagster's asset page takes the
partition as ``?view=partitions&partition=<key>`` (Dagster 1.13 UI).
"""

from __future__ import annotations

import html
import os
import urllib.parse
from collections.abc import Mapping

DAGSTER_URL_ENV = "MEDCURATE_DAGSTER_URL"
DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"

INSTRUCTION_HTML = """<h2>medcurate annotation round</h2>
<p>Each task is one axial slice of a de-identified scan. Give every slice exactly one class,
and paint every lesion you see on it with the <b>lesion</b> brush. The strip under the image shows
the two slices before and after it (the task's slice framed in white): use it to follow a
structure through the volume.</p>
<h3>Orientation</h3>
<p>Slices are shown in <b>radiological convention</b>: the patient's <b>right</b> is on the
<b>left</b> of the image, anterior is up (as a radiologist reads it).</p>
<h3>What counts as a lesion</h3>
<ul>
<li>A focal, compact area whose intensity differs from the organ around it (darker in liver or
kidney, brighter in lung).</li>
<li>Not a lesion: vessels (follow them over neighbouring slices: a vessel runs on, a lesion
ends), organ edges, bowel gas, fat, bone and artefacts.</li>
<li>Paint the whole lesion on this slice, edge to edge; several lesions: paint each.</li>
</ul>
<h3>Classes</h3>
<ul>
<li><b>normal</b>: you can read the slice and it shows no lesion. Leave the mask empty.</li>
<li><b>abnormal</b>: at least one lesion on this slice. Paint it.</li>
<li><b>unreadable</b>: you cannot judge the slice (artefacts, noise, cut off, wrong window).
Use it instead of guessing; such slices are not used as labels.</li>
</ul>
<h3>Pre-annotations</h3>
<p>A task may arrive with a proposed class and mask from a model. They are suggestions to
correct, <b>not</b> answers: they are often wrong, check every one. The prediction score is the
model's calibrated probability that its class is right (e.g. 70% means wrong about three times in
ten); it is never 100%. Delete a wrong mask, repaint a poor one, change the class freely. A round
whose model did poorly on held-out cases comes without pre-annotations.</p>
"""

ADJUDICATION_INSTRUCTION_HTML = """<h2>medcurate adjudication</h2>
<p>The annotators of a round disagreed on these slices. Each task shows their labels as
predictions, one per annotator (named by pseudonym), with the same rules as the round:
<b>normal</b>, <b>abnormal</b> with every lesion painted, or <b>unreadable</b>.</p>
<p>Submit your own verdict for each slice: it replaces the annotators' labels of that slice in
the consensus. Slices are in <b>radiological convention</b> (the patient's <b>right</b> on the
<b>left</b> of the image).</p>
"""


def dagster_url(env: Mapping[str, str] | None = None) -> str:
    """The Dagster UI's base URL (``MEDCURATE_DAGSTER_URL``), without a trailing slash."""
    e = os.environ if env is None else env
    return (e.get(DAGSTER_URL_ENV) or DEFAULT_DAGSTER_URL).rstrip("/")


def dagster_asset_url(asset: str, partition: str | None = None, base: str | None = None) -> str:
    """The Dagster UI page of an asset (opened on the partition's view when one is given)."""
    url = f"{(base or dagster_url()).rstrip('/')}/assets/{urllib.parse.quote(asset, safe='/')}"
    if partition:
        url += "?" + urllib.parse.urlencode({"view": "partitions", "partition": partition})
    return url


def labelstudio_project_url(labelstudio_url: str, project_id: int) -> str:
    """The Label Studio page of a project's tasks (what the Dagster metadata links to)."""
    return f"{labelstudio_url.rstrip('/')}/projects/{int(project_id)}/data"


def project_description(what: str, asset_url: str) -> str:
    """A project's description (plain text: Label Studio shows it as is): what it is and the
    Dagster page that made it. ``what`` carries round names only, never a sample or a person."""
    return f"medcurate {what}. Made by Dagster: {asset_url}"


def project_instruction(asset_url: str | None = None, text: str = INSTRUCTION_HTML) -> str:
    """The instructions (a round's, or ``ADJUDICATION_INSTRUCTION_HTML``), with a link to the
    Dagster asset at the end when one is given."""
    if not asset_url:
        return text
    href = html.escape(asset_url, quote=True)
    return text + f'<p>Pipeline: <a href="{href}">this round in Dagster</a></p>\n'
