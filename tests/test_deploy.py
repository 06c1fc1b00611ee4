"""Static checks of the Kubernetes deployment (deploy/helm): no cluster runs here, so these tests
are what keeps values.yaml honest. They fail when a secret gets an inline value, when the run
launcher, telemetry or PostgreSQL settings drift from what the README describes, when a variable
named there is one the code does not read, or when the code server's module stops defining
``defs``. No network, no helm."""

from __future__ import annotations

import ast
import importlib.util
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from medcurate import profiles

ROOT = Path(__file__).resolve().parents[1]
HELM = ROOT / "deploy" / "helm"
VALUES_TEXT = (HELM / "values.yaml").read_text()
README_TEXT = (HELM / "README.md").read_text()
VALUES: dict[str, Any] = yaml.safe_load(VALUES_TEXT)
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: top-level keys of the chart (dagster-io/dagster helm/dagster/schema/schema/charts/dagster/
#: values.py, DagsterHelmValues): a typo here would be silently ignored by helm
CHART_KEYS = {
    "dagsterWebserver", "dagster-user-deployments", "postgresql",
    "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis",
    "flower", "ingress", "imagePullSecrets", "computeLogManager", "scheduler", "runLauncher",
    "pythonLogs", "dagsterDaemon", "busybox", "migrate", "telemetry", "serviceAccount", "global",
    "retention", "additionalInstanceConfig",
}  # fmt: skip
SECRET_NAME = re.compile(r"PASSWORD|SECRET|SALT|KEY")
#: variables read by libraries rather than by the project (botocore, through s3fs)
LIBRARY_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
SOURCE_ROOTS = ("medcurate", "assets", "pipelines", "annotation", "quality")


def _deployment() -> dict[str, Any]:
    (dep,) = VALUES["dagster-user-deployments"]["deployments"]
    return dep


def _env_blocks(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``env`` value anywhere in a values tree (list of EnvVar or name -> value map)."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            if key == "env":
                yield here, value
            yield from _env_blocks(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _env_blocks(item, f"{path}[{i}]")


def _keys(node: Any) -> set[str]:
    """Every mapping key anywhere in a values tree."""
    if isinstance(node, dict):
        return set(node).union(*(_keys(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_keys(v) for v in node))
    return set()


def inline_secrets(values: dict[str, Any]) -> list[str]:
    """Where a secret-looking variable gets a value instead of a secretKeyRef (empty: none)."""
    bad = []
    for where, env in _env_blocks(values):
        if isinstance(env, dict):  # the chart writes a map into a ConfigMap: never a secret
            bad += [f"{where}.{name}" for name in env if SECRET_NAME.search(str(name))]
            continue
        for item in env or []:
            if not SECRET_NAME.search(item["name"]):
                continue
            ref = (item.get("valueFrom") or {}).get("secretKeyRef") or {}
            if "value" in item or not (ref.get("name") and ref.get("key")):
                bad.append(f"{where}.{item['name']}")
    pg = values.get("postgresql", {})
    if pg.get("postgresqlPassword"):
        bad.append(".postgresql.postgresqlPassword")
    return bad


def env_vars() -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in _deployment()["env"]}


def test_values_parse_into_chart_keys() -> None:
    assert isinstance(VALUES, dict)
    assert set(VALUES) <= CHART_KEYS, set(VALUES) - CHART_KEYS


def test_no_secret_value_inline() -> None:
    assert inline_secrets(VALUES) == []
    names = set(env_vars())
    wanted = {"MEDCURATE_DEID_SALT", "MEDCURATE_POSTGRES_PASSWORD", "AWS_SECRET_ACCESS_KEY",
              "LABEL_STUDIO_API_KEY", "MEDCURATE_PACS_PASSWORD"}  # fmt: skip
    assert wanted <= names
    for name in wanted:
        assert "secretKeyRef" in env_vars()[name]["valueFrom"]


@pytest.mark.parametrize(
    "env",
    [
        [{"name": "MEDCURATE_DEID_SALT", "value": "x" * 40}],
        [{"name": "LABEL_STUDIO_API_KEY", "valueFrom": {"configMapKeyRef": {"name": "c"}}}],
        {"MEDCURATE_POSTGRES_PASSWORD": "hunter2"},
    ],
)
def test_the_secret_check_catches_inline_values(env: Any) -> None:
    """The checker itself: each of these leaks a secret into the values or a ConfigMap."""
    assert inline_secrets({"a": {"env": env}})
    assert inline_secrets({"postgresql": {"postgresqlPassword": "hunter2"}})


def test_runs_are_kubernetes_jobs() -> None:
    launcher = VALUES["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert set(launcher["config"]) == {"k8sRunLauncher"}
    assert _deployment()["includeConfigInLaunchedRuns"]["enabled"] is True


def test_telemetry_off() -> None:
    assert VALUES["telemetry"]["enabled"] is False


def test_postgres_is_external_and_its_password_comes_from_one_secret() -> None:
    pg = VALUES["postgresql"]
    assert pg["enabled"] is False
    assert pg["postgresqlHost"]
    assert VALUES["generatePostgresqlPasswordSecret"] is False
    secret = VALUES["global"]["postgresqlSecretName"]
    # the chart's pods read DAGSTER_PG_PASSWORD from this Secret's key postgresql-password
    ref = env_vars()["MEDCURATE_POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret, "key": "postgresql-password"}


def _source_text() -> str:
    return "\n".join(
        p.read_text() for root in SOURCE_ROOTS for p in sorted((ROOT / root).rglob("*.py"))
    )


def test_every_variable_named_is_read_by_the_code() -> None:
    source = _source_text()
    named = set(re.findall(r"\bMEDCURATE_[A-Z0-9_]+\b", VALUES_TEXT + README_TEXT))
    assert {"MEDCURATE_HOME", "MEDCURATE_STORE", "MEDCURATE_SHARDS"} <= named
    unread = {v for v in named if f'"{v}"' not in source}
    assert unread == set(), f"named in deploy/helm but read nowhere in the code: {unread}"
    others = set(env_vars()) - named - LIBRARY_VARS
    assert {v for v in others if f'"{v}"' not in source} == set()


def test_code_server_module_exists_and_defines_defs() -> None:
    args = _deployment()["dagsterApiGrpcArgs"]
    flag = next(i for i, a in enumerate(args) if a in ("-m", "--module-name"))
    module = args[flag + 1]
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert module == workspace["load_from"][0]["python_module"]["module_name"]
    assert module == PYPROJECT["tool"]["dagster"]["module_name"]
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    origin = Path(spec.origin)
    assert origin.is_relative_to(ROOT)
    tree = ast.parse(origin.read_text())
    top_level = {
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }
    assert "defs" in top_level


def test_versions_match_the_project() -> None:
    assert _deployment()["image"]["tag"] == PYPROJECT["project"]["version"]
    (dagster_pin,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("dagster==")]
    chart_versions = set(re.findall(r"dagster/dagster --version (\S+)", README_TEXT))
    assert chart_versions == {dagster_pin.split("==")[1]}


def test_home_volume_is_shared_and_owner_only() -> None:
    dep = _deployment()
    home = env_vars()["MEDCURATE_HOME"]["value"]
    (mount,) = dep["volumeMounts"]
    assert mount["mountPath"] == home
    (volume,) = dep["volumes"]
    assert volume["name"] == mount["name"]
    artifacts = VALUES["additionalInstanceConfig"]["local_artifact_storage"]["config"]["base_dir"]
    assert Path(artifacts) == Path(home) / "dagster"  # = Zones.dagster_home, made 0700
    # the same UID everywhere and no fsGroup (it would open restricted/ to the group)
    pod = VALUES["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]
    assert pod["securityContext"]["runAsUser"] == dep["podSecurityContext"]["runAsUser"]
    assert "fsGroup" not in _keys(VALUES)
    blocks = [
        doc
        for block in re.findall(r"```yaml\n(.*?)```", README_TEXT, flags=re.S)
        for doc in yaml.safe_load_all(block)
    ]
    claims = [b for b in blocks if b.get("kind") == "PersistentVolumeClaim"]
    assert [c["metadata"]["name"] for c in claims] == [volume["persistentVolumeClaim"]["claimName"]]
    assert claims[0]["spec"]["accessModes"] == ["ReadWriteMany"]
    (policy,) = [b for b in blocks if b.get("kind") == "NetworkPolicy"]
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {}}]}]


def test_chart_instance_is_not_the_cluster_profile(tmp_path: Path) -> None:
    """Under the chart the instance file is the chart's (K8sRunLauncher, no medcurate mark), so
    the code location does not pick the Celery executor, which would need a broker."""
    chart_yaml = {
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {}},
        "telemetry": {"enabled": VALUES["telemetry"]["enabled"]},
        **VALUES["additionalInstanceConfig"],
    }
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(chart_yaml))
    assert profiles.active_profile(tmp_path) not in (profiles.CLUSTER, profiles.LOCAL)
