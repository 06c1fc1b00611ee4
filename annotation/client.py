"""The one Label Studio client: every call the pipeline makes to the annotation server.

One object per (URL, token): plain REST calls where the SDK makes listing awkward (filters,
pages), the SDK (``label_studio_sdk``, imported lazily: it costs about a second) for projects,
storages, task import and snapshot exports, the health probe, and sign-up through the
organization's invite link (sign-up is by invite only, see :mod:`medcurate.services.labelstudio`).
Assets get it from ``LabelStudioResource.client()``; the simulated annotators make one per user
with :meth:`LabelStudioClient.signup`.

Identity is never Label Studio's ids (sqlite reuses them after deletes): projects are found by
title (or the id recorded in round.json when its title still matches) and tasks by ``task_key``.
Exports go through the snapshot API because the quick export lists predictions as ids only and
skips unlabelled tasks; the snapshot carries full predictions and annotations.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from annotation.instructions import INSTRUCTION_HTML, labelstudio_project_url
from annotation.label_config import LABEL_CONFIG
from medcurate.services.labelstudio import connection, http_status
from medcurate.services.wait import WaitTimeout, wait_until

#: what to do when the server does not answer (the sensor's skip reason says it)
START_ADVICE = "start it with `medcurate labelstudio start` or `make ui`"


def refused_message(status: int) -> str:
    """What to do when Label Studio answers but refuses a call (a setting to fix, not a crash)."""
    if status in (401, 403):
        return (
            f"Label Studio refuses the API token (HTTP {status}): set LABEL_STUDIO_API_KEY to a "
            "Label Studio user's token, or unset LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY to use "
            "the server `medcurate labelstudio start` runs for MEDCURATE_HOME"
        )
    return (
        f"Label Studio answered HTTP {status} when asked for the rounds' progress: "
        "see its log (`medcurate labelstudio status`), or restart it with `make ui`"
    )


class LabelStudioUnreachable(RuntimeError):
    """Label Studio does not answer (down, restarting, or a wrong URL): a reason to wait."""


class ExportError(RuntimeError):
    """A snapshot export failed or did not finish in time."""


def csrf_token(session: requests.Session, url: str) -> str:
    """The CSRF token of a Django form page (cookie, else the form's hidden field)."""
    resp = session.get(url, timeout=30)
    token = session.cookies.get("csrftoken")
    if not token:
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', resp.text)
        token = found.group(1) if found else ""
    if not token:
        raise RuntimeError(f"no CSRF token on {urllib.parse.urlsplit(url).path}")
    return str(token)


def _same(key: str, have: Any, want: Any) -> bool:
    """A stored setting equals the wanted one (the server re-indents a label config's XML)."""
    if key == "label_config" and isinstance(have, str) and isinstance(want, str):
        return "".join(have.split()) == "".join(want.split())
    return bool(have == want)


class LabelStudioClient:
    """Label Studio at ``url`` as the user whose API token is ``api_key`` (never printed)."""

    def __init__(self, url: str, api_key: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._key = api_key
        self.timeout = timeout
        self._sdk: Any = None
        self._local = threading.local()  # one keep-alive session per thread

    @classmethod
    def connect(
        cls, home: Path | None = None, env: Mapping[str, str] | None = None
    ) -> LabelStudioClient:
        """From LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY, else the server MEDCURATE_HOME runs."""
        return cls(*connection(home=home, env=env))

    def __repr__(self) -> str:
        return f"LabelStudioClient(url={self.url!r}, api_key=***)"

    # ----------------------------------------------------------------------- health

    def healthy(self) -> bool:
        """True when the server answers its health endpoint."""
        return http_status(self.url + "/health") == 200

    def unreachable_message(self) -> str:
        return f"Label Studio is not reachable at {self.url}: {START_ADVICE}"

    def check(self) -> LabelStudioClient:
        """Raise :class:`LabelStudioUnreachable` (with what to do) unless the server answers."""
        if not self.healthy():
            raise LabelStudioUnreachable(self.unreachable_message())
        return self

    # ----------------------------------------------------------------------- plumbing

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self._key}"}

    def _session(self) -> requests.Session:
        """This thread's keep-alive session: a connection is reused for the next call (a
        round's hundreds of submissions skip a TCP handshake each). Sessions are not shared
        between threads."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(self._headers)
            self._local.session = session
        return session

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            resp = self._session().request(method, self.url + path, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout):
            raise LabelStudioUnreachable(self.unreachable_message()) from None
        if resp.status_code in (502, 503, 504):  # a proxy in front of a restarting server
            raise LabelStudioUnreachable(self.unreachable_message())
        resp.raise_for_status()
        return resp

    def get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params=params).json()

    def post(self, path: str, body: Any) -> Any:
        return self._request("POST", path, json=body).json()

    def sdk(self) -> Any:
        """The ``label_studio_sdk.LabelStudio`` client for the same server and user."""
        if self._sdk is None:
            from label_studio_sdk import LabelStudio

            self._sdk = LabelStudio(base_url=self.url, api_key=self._key, timeout=self.timeout)
        return self._sdk

    # ----------------------------------------------------------------------- reads

    def whoami(self) -> dict[str, Any]:
        return dict(self.get("/api/current-user/whoami"))

    def projects(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.get("/api/projects", page=page, page_size=100)
            items = body.get("results", []) if isinstance(body, dict) else body
            out.extend(items)
            if not isinstance(body, dict) or not body.get("next"):
                return out
            page += 1

    def project_by_title(self, title: str, known_id: int | None = None) -> int | None:
        projects = {int(p["id"]): p for p in self.projects()}
        if known_id is not None and known_id in projects and projects[known_id]["title"] == title:
            return known_id
        ids = sorted(i for i, p in projects.items() if p["title"] == title)
        return ids[0] if ids else None

    def tasks(self, project: int) -> list[dict[str, Any]]:
        """Every task of a project, with its annotations and predictions."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            try:
                body = self.get(
                    "/api/tasks", project=project, page=page, page_size=500, fields="all"
                )
            except requests.HTTPError as e:  # past the last page
                if e.response is not None and e.response.status_code == 404:
                    return out
                raise
            items = body.get("tasks", []) if isinstance(body, dict) else body
            out.extend(items)
            total = body.get("total") if isinstance(body, dict) else None
            if not items or total is None or len(out) >= int(total):
                return out
            page += 1

    def users(self) -> dict[int, str]:
        """Label Studio user id -> e-mail (only ever turned into pseudonyms)."""
        return {int(u["id"]): str(u.get("email", "")) for u in self.get("/api/users")}

    # ----------------------------------------------------------------------- projects and tasks

    def project(self, project: int) -> dict[str, Any]:
        """One project's settings as the server stores them."""
        return dict(self.get(f"/api/projects/{int(project)}"))

    def project_url(self, project: int) -> str:
        """The page of a project's tasks in Label Studio (linked from Dagster's metadata)."""
        return labelstudio_project_url(self.url, project)

    def create_project(
        self,
        title: str,
        config: str = LABEL_CONFIG,
        instruction: str = INSTRUCTION_HTML,
        **options: Any,
    ) -> int:
        """Create a project with the round's label config and the annotators' instructions
        (shown before the first task); returns its id. ``title`` must carry pseudonymous round
        names only."""
        project = self.sdk().projects.create(
            title=title,
            label_config=config,
            expert_instruction=instruction,
            show_instruction=True,
            **options,
        )
        return int(project.id)

    def add_local_storage(self, project: int, path: Path, title: str = "images") -> int:
        """Attach a local-files import storage so ``/data/local-files/?d=...`` URLs resolve.

        ``path`` must lie under the server's LOCAL_FILES_DOCUMENT_ROOT; no sync is needed because
        the tasks are imported with their URLs.
        """
        storage = self.sdk().import_storage.local.create(
            project=project, path=str(path), title=title, use_blob_urls=False
        )
        return int(storage.id)

    def import_tasks(
        self, project: int, tasks: Sequence[Mapping[str, Any]], chunk: int = 1000
    ) -> int:
        """Import tasks (with predictions) in chunks; returns how many the server took."""
        total = 0
        for start in range(0, len(tasks), chunk):
            part = [dict(t) for t in tasks[start : start + chunk]]
            resp = self.sdk().projects.import_tasks(id=project, request=part, return_task_ids=True)
            count = getattr(resp, "task_count", None)
            total += int(count) if count is not None else len(part)
        return total

    def ensure_project(
        self,
        title: str,
        annotators: int,
        storage_path: Path,
        known_id: int | None = None,
        *,
        description: str | None = None,
        instruction: str = INSTRUCTION_HTML,
    ) -> tuple[int, bool]:
        """The project with overlap ``annotators``, the instructions (and ``description`` when
        given) and a local-files storage, created once; an existing project is updated only in
        the settings that differ (an older project gets the instructions). Returns (project id,
        created now)."""
        want: dict[str, Any] = {
            "maximum_annotations": annotators,
            "overlap_cohort_percentage": 100,
            "expert_instruction": instruction,
            "show_instruction": True,
            "label_config": LABEL_CONFIG,  # a project of an older version gets the new layout
        }
        if description is not None:
            want["description"] = description
        pid = self.project_by_title(title, known_id)
        created = pid is None
        if pid is None:
            skip = ("expert_instruction", "show_instruction", "label_config")  # set on create
            options = {k: v for k, v in want.items() if k not in skip}
            pid = self.create_project(
                title, LABEL_CONFIG, instruction, show_collab_predictions=True, **options
            )
        else:
            have = self.project(pid)
            changed = {k: v for k, v in want.items() if not _same(k, have.get(k), v)}
            if changed:
                self.sdk().projects.update(id=pid, **changed)
        if not self.sdk().import_storage.local.list(project=pid):
            self.add_local_storage(pid, storage_path)
        return pid, created

    def sync_tasks(self, project: int, tasks: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
        """Import the tasks whose task_key the project lacks; returns (imported, already there)."""
        have = {str(t["data"].get("task_key")) for t in self.tasks(project)}
        missing = [t for t in tasks if str(t["data"]["task_key"]) not in have]
        imported = self.import_tasks(project, missing) if missing else 0
        return imported, len(tasks) - len(missing)

    def submit_annotation(
        self, task_id: int, result: Sequence[Mapping[str, Any]], lead_time: float
    ) -> dict[str, Any]:
        """Submit an annotation as this client's user."""
        body = {"result": list(result), "lead_time": lead_time, "was_cancelled": False}
        return dict(self.post(f"/api/tasks/{task_id}/annotations/", body))

    def snapshot_export(
        self, project: int, timeout: float = 300.0, poll: float = 0.2
    ) -> list[dict[str, Any]]:
        """Every task with full predictions and annotations, through the snapshot API."""
        sdk = self.sdk()
        export = sdk.projects.exports.create(
            id=project,
            title="medcurate snapshot",
            serialization_options={"predictions": {"only_id": False}},
        )

        def completed() -> bool:
            state = sdk.projects.exports.get(id=project, export_pk=export.id)
            status = str(getattr(state, "status", ""))
            if status.endswith("failed"):
                raise ExportError(f"snapshot export {export.id} of project {project} failed")
            return status.endswith("completed")

        try:
            wait_until(completed, timeout, poll, what=f"snapshot export {export.id}")
        except WaitTimeout as exc:
            raise ExportError(str(exc)) from None
        raw = b"".join(
            sdk.projects.exports.download(id=project, export_pk=export.id, export_type="JSON")
        )
        tasks = json.loads(raw)
        if not isinstance(tasks, list):
            raise ExportError("snapshot export is not a list of tasks")
        return tasks

    # ----------------------------------------------------------------------- users

    def invite_token(self) -> str:
        """The organization's invite token (the only way to sign up)."""
        return str(self.get("/api/invite")["token"])

    def signup(self, email: str, password: str) -> LabelStudioClient:
        """Sign a user up through the invite link (or log in if they exist); returns a client
        acting as that user."""
        signup = f"{self.url}/user/signup/?token={urllib.parse.quote(self.invite_token())}"
        whoami = f"{self.url}/api/current-user/whoami"
        with requests.Session() as s:
            form = {"email": email, "password": password, "csrfmiddlewaretoken": ""}
            form["csrfmiddlewaretoken"] = csrf_token(s, signup)
            s.post(signup, data=form, headers={"Referer": signup}, timeout=30)
            if s.get(whoami, timeout=30).status_code != 200:
                login = f"{self.url}/user/login/"
                form["csrfmiddlewaretoken"] = csrf_token(s, login)
                s.post(login, data=form, headers={"Referer": login}, timeout=30)
            who = s.get(whoami, timeout=30)
            if who.status_code != 200 or who.json().get("email") != email:
                raise RuntimeError(f"could not sign up or log in simulated annotator {email}")
            tok = s.get(f"{self.url}/api/current-user/token", timeout=30)
            tok.raise_for_status()
            return LabelStudioClient(self.url, str(tok.json()["token"]), self.timeout)

    @property
    def token(self) -> str:
        """This client's API token (for a user signed up here; never logged)."""
        return self._key
