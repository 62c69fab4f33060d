"""The deployment files in deploy/ agree with the command line and the settings.

No container engine, cluster or systemd runs here. Each file is parsed (YAML,
unit files, the Dockerfile line by line, shell in scripts and README blocks) and
every `provisioner` invocation it holds is parsed by the click command itself,
every environment name it sets is checked against the names `Settings` reads,
and the scheduling facts (grace period, secrets, resources) are checked. Each
checker returns a list of problems; the tests prove the checkers find the
problems they exist for by feeding them deliberately broken copies. The
GitHub workflow's steps are run with bash, against a fake `provisioner` and
against the real one on the embedded sandbox.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from pydantic import AliasChoices, SecretStr

from provisioner.cli import cli
from provisioner.sandbox.config import DEFAULT_ACCOUNT
from provisioner.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
WORKFLOW = DEPLOY / "github" / "provisioner.yml"
DEPLOY_README = DEPLOY / "README.md"
MAIN_README = ROOT / "README.md"

# Read by load_settings() itself rather than by a Settings field.
CONFIG_ENV = "PROVISIONER_CONFIG"

# The only names a deploy file may set that provisioner does not read, each
# with the reason. Anything else (CF_API_TOKEN, PROVISIONER_REPORTDIR) is a
# typo or a name from another tool, and the run would silently ignore it.
FOREIGN_ENV = {
    "PATH": "the image puts its virtual environment first",
    "PYTHONUNBUFFERED": "the image's interpreter writes logs unbuffered",
    "PYTHONDONTWRITEBYTECODE": "the image's root filesystem may be read-only",
    "PIP_NO_CACHE_DIR": "the image's build stage keeps no pip cache",
    "PIP_DISABLE_PIP_VERSION_CHECK": "the image's build skips pip's self-check",
    "MANIFEST": "the GitHub workflow's path of the manifest",
}

# After the grace period the run cancels what is left, flushes the journal and
# writes the report; a scheduler's kill must wait at least this much longer.
REPORT_MARGIN_S = 30.0

# Where Python puts temporary files, and so the account locks, in the image
# when PROVISIONER_LOCK_DIR is not set.
CONTAINER_TMP = "/tmp"

# GitHub Actions sends SIGINT to a cancelled step, then SIGTERM about 7.5 s
# later: the grace period set in the workflow must fit in that window.
GITHUB_CANCEL_WINDOW_S = 7.5

SECRET_LOOKING = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY|PRIVATE_KEY", re.IGNORECASE
)
MENTIONED_ENV = re.compile(r"\b(?:CLOUDFLARE|PROVISIONER)_[A-Z0-9_]*[A-Z0-9]\b")


# -- what the code accepts ----------------------------------------------------


def field_env_names(field: str) -> list[str]:
    """The environment names the settings read for ``field``."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        # The lowercase choice is the field's own name, for TOML and flags.
        return [c for c in alias.choices if isinstance(c, str) and c.isupper()]
    if isinstance(alias, str):
        return [alias]
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return [f"{prefix}{field}".upper()]


def settings_env_names() -> set[str]:
    """Every environment name the settings read, derived from Settings."""
    names = {CONFIG_ENV}
    for field in Settings.model_fields:
        names.update(field_env_names(field))
    return names


def secret_env_names() -> set[str]:
    """The environment names of the settings typed as secrets."""
    names: set[str] = set()
    for field, info in Settings.model_fields.items():
        if info.annotation is SecretStr or SecretStr in typing.get_args(
            info.annotation
        ):
            names.update(field_env_names(field))
    return names


def grace_env_name() -> str:
    """The environment name of the stop grace period."""
    (name,) = field_env_names("grace_s")
    return name


def report_dir_env_name() -> str:
    """The environment name of the report directory."""
    (name,) = field_env_names("report_dir")
    return name


def lock_dir_env_name() -> str:
    """The environment name of the lock directory."""
    (name,) = field_env_names("lock_dir")
    return name


def effective_grace_s(env: Mapping[str, str]) -> float:
    """The grace period a run with ``env`` uses."""
    default = Settings.model_fields["grace_s"].default
    return float(env.get(grace_env_name(), default))


def console_script() -> str:
    """The name of the console script pyproject.toml declares for the CLI."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        scripts = tomllib.load(handle)["project"]["scripts"]
    (name,) = [n for n, target in scripts.items() if target == "provisioner.cli:main"]
    return str(name)


def _root_context() -> click.Context:
    return click.Context(cli, info_name=console_script(), **cli.context_settings)


def _option_names(command: click.Command, ctx: click.Context) -> set[str]:
    names = set(ctx.help_option_names)
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def _options_used(argv: Iterable[str]) -> Iterator[str]:
    for arg in argv:
        if arg == "--":
            return
        if arg.startswith("-") and arg != "-":
            yield arg.split("=", 1)[0]


def invocation_problems(argv: list[str], where: str) -> list[str]:
    """What the CLI would refuse in ``provisioner <argv>`` ([] when none)."""
    root = _root_context()
    shown = " ".join([console_script(), *argv])
    if not argv:
        return [f"{where}: `{shown}` names no subcommand"]

    if argv[0].startswith("-"):
        known = _option_names(cli, root)
        return [
            f"{where}: `{shown}`: the group has no option {option}"
            for option in _options_used(argv)
            if option not in known
        ]

    command = cli.get_command(root, argv[0])
    if command is None:
        return [
            f"{where}: `{shown}`: unknown subcommand {argv[0]!r} "
            f"(known: {', '.join(cli.list_commands(root))})"
        ]
    known = _option_names(command, root)
    problems = [
        f"{where}: `{shown}`: {argv[0]} has no option {option}"
        for option in _options_used(argv[1:])
        if option not in known
    ]
    if problems or set(argv[1:]) & set(root.help_option_names):
        return problems

    try:
        command.make_context(argv[0], list(argv[1:]), parent=root).close()
    except click.ClickException as exc:
        problems.append(f"{where}: `{shown}` is refused: {exc.format_message()}")

    return problems


def invocation_params(argv: list[str]) -> dict[str, Any]:
    """The parameters click parses from ``provisioner <argv>``."""
    root = _root_context()
    command = cli.get_command(root, argv[0])
    assert command is not None, argv[0]
    ctx = command.make_context(argv[0], list(argv[1:]), parent=root)
    params = dict(ctx.params)
    ctx.close()

    return params


def env_problems(names: Iterable[str], where: str) -> list[str]:
    """Names set in ``where`` that neither the settings nor FOREIGN_ENV know."""
    known = settings_env_names()
    return [
        f"{where}: sets {name}, which provisioner's settings do not read"
        for name in names
        if name not in known and name not in FOREIGN_ENV
    ]


def mentioned_env_problems(text: str, where: str) -> list[str]:
    """CLOUDFLARE_* and PROVISIONER_* names in ``text`` that the settings lack."""
    known = settings_env_names()
    return [
        f"{where}: mentions {name}, which provisioner's settings do not read"
        for name in sorted(set(MENTIONED_ENV.findall(text)))
        if name not in known
    ]


# -- shell --------------------------------------------------------------------

_OPERATOR_CHARS = set("();<>|&")
# Words that may precede the command itself in a simple command.
_WRAPPERS = frozenset(
    [
        "!",
        "{",
        "command",
        "do",
        "elif",
        "else",
        "env",
        "exec",
        "if",
        "nohup",
        "sudo",
        "then",
        "time",
        "until",
        "while",
    ]
)
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
# Options of `docker run` that take a value, to find the image among the words.
_DOCKER_VALUE_OPTIONS = frozenset(
    [
        "-e",
        "--env",
        "--env-file",
        "-v",
        "--volume",
        "-u",
        "--user",
        "-w",
        "--workdir",
        "--name",
        "--network",
        "--mount",
        "--entrypoint",
        "--platform",
    ]
)


@dataclass
class ShellScan:
    """What a shell script runs: provisioner argument lists and exported names."""

    invocations: list[list[str]]
    exported: list[str]
    problems: list[str]


def _words(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def _logical_lines(script: str) -> Iterator[list[str]]:
    """Word lists of complete logical lines; here-document bodies are skipped."""
    buffer = ""
    heredoc_end: str | None = None
    for line in script.replace("\\\n", " ").splitlines():
        if heredoc_end is not None:
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        buffer = f"{buffer}\n{line}" if buffer else line
        try:
            words = _words(buffer)
        except ValueError:  # a quote that closes on a later line
            continue
        buffer = ""
        for here, after in itertools.pairwise(words):
            if here in ("<<", "<<-"):
                heredoc_end = after
        yield words
    if buffer:
        raise ValueError(f"unbalanced quotes in shell: {buffer!r}")


def _simple_commands(words: list[str]) -> Iterator[list[str]]:
    current: list[str] = []
    target_next = False
    for word in words:
        if target_next:
            target_next = False
            continue
        if word and set(word) <= _OPERATOR_CHARS:
            if "<" in word or ">" in word:
                if current and current[-1].isdigit():
                    current.pop()  # the file descriptor of `2>&1`
                target_next = True
                continue
            if current:
                yield current
            current = []
            continue
        current.append(word)
    if current:
        yield current


def _image_name(reference: str) -> str:
    last = reference.rsplit("/", 1)[-1]
    return re.split(r"[:@]", last, maxsplit=1)[0]


def _docker_run_args(words: list[str]) -> tuple[str | None, list[str]]:
    index = 0
    while index < len(words):
        word = words[index]
        if not word.startswith("-"):
            return word, words[index + 1 :]
        index += 2 if word in _DOCKER_VALUE_OPTIONS else 1
    return None, []


def scan_shell(script: str, where: str) -> ShellScan:
    """Every provisioner invocation and exported name in a shell script."""
    scan = ShellScan([], [], [])
    program = console_script()
    for line in _logical_lines(script):
        for words in _simple_commands(line):
            prefix: list[str] = []
            while words and (words[0] in _WRAPPERS or _ASSIGNMENT.match(words[0])):
                prefix.append(words.pop(0))
            if not words:
                continue  # a shell variable, not the environment
            scan.exported += [w.split("=")[0] for w in prefix if _ASSIGNMENT.match(w)]

            head = Path(words[0]).name
            if head == program:
                scan.invocations.append(words[1:])
            elif head == "export":
                scan.exported += [w.split("=")[0] for w in words[1:]]
            elif head in ("docker", "podman") and words[1:2] == ["run"]:
                image, args = _docker_run_args(words[2:])
                if image is None or _image_name(image) != program:
                    scan.problems.append(
                        f"{where}: `{' '.join(words)}` runs no {program} image "
                        "(or uses a docker option this check does not know)"
                    )
                else:
                    scan.invocations.append(args)
    for argv in scan.invocations:
        scan.problems += invocation_problems(argv, where)
    scan.problems += env_problems(scan.exported, where)

    return scan


# -- Dockerfile ---------------------------------------------------------------


@dataclass
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    value: str
    line: int


def dockerfile_instructions(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile, in order."""
    instructions: list[Instruction] = []
    logical, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not logical:
            start = number
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        keyword, _, value = (logical + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
        logical = ""

    return instructions


def _final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    return instructions[starts[-1] :] if starts else instructions


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    """Names and values of the ENV instructions given."""
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword != "ENV":
            continue
        words = shlex.split(ins.value)
        if "=" not in words[0]:
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, _, value = word.partition("=")
            env[name] = value

    return env


def _arg_names(instructions: list[Instruction]) -> list[str]:
    return [
        ins.value.split("=", 1)[0].strip()
        for ins in instructions
        if ins.keyword == "ARG"
    ]


def _exec_form(ins: Instruction) -> list[str] | None:
    try:
        value = json.loads(ins.value)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def dockerfile_problems(text: str) -> list[str]:
    """What is wrong with a Dockerfile for this project ([] when nothing)."""
    instructions = dockerfile_instructions(text)
    final = _final_stage(instructions)
    problems: list[str] = []

    env = dockerfile_env(instructions)
    problems += env_problems(env, "Dockerfile ENV")
    secrets = secret_env_names()
    for name in [*env, *_arg_names(instructions)]:
        if name in secrets or SECRET_LOOKING.search(name):
            problems.append(f"Dockerfile: {name} looks like a secret in a layer")

    users = [ins.value.split(":")[0] for ins in final if ins.keyword == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append(
            "Dockerfile: the final stage does not switch to a non-root USER"
        )

    entrypoints = [_exec_form(ins) for ins in final if ins.keyword == "ENTRYPOINT"]
    if not entrypoints or entrypoints[-1] != [console_script()]:
        problems.append(
            f'Dockerfile: ENTRYPOINT is not ["{console_script()}"] in exec form'
        )
    cmds = [_exec_form(ins) for ins in final if ins.keyword == "CMD"]
    if cmds and cmds[-1] is None:
        problems.append("Dockerfile: CMD is not in exec form")
    elif cmds and cmds[-1] is not None:
        problems += invocation_problems(cmds[-1], "Dockerfile CMD")

    for ins in instructions:
        if ins.keyword == "RUN":
            problems += scan_shell(ins.value, f"Dockerfile line {ins.line}").problems

    return problems


def copy_sources(instructions: list[Instruction]) -> list[str]:
    """Sources of COPY instructions that read the build context."""
    sources: list[str] = []
    for ins in instructions:
        if ins.keyword != "COPY":
            continue
        words = shlex.split(ins.value)
        if any(w.startswith("--from") for w in words):
            continue
        sources += [w for w in words[:-1] if not w.startswith("--")]

    return sources


# -- Kubernetes ---------------------------------------------------------------


def kubernetes_documents() -> list[dict[str, Any]]:
    """Every document of every YAML file in deploy/kubernetes."""
    documents: list[dict[str, Any]] = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        with path.open(encoding="utf-8") as handle:
            documents += [d for d in yaml.safe_load_all(handle) if d]

    return documents


def _of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d.get("kind") == kind]


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def cronjob_problems(
    cronjob: dict[str, Any],
    configmaps: Mapping[str, Mapping[str, str]],
    image_env: Mapping[str, str],
) -> list[str]:
    """What is wrong with the CronJob ([] when nothing).

    ``configmaps`` maps ConfigMap names to their data; ``image_env`` is the
    environment the image sets, which the pod's own settings override.
    """
    problems: list[str] = []
    spec = cronjob.get("spec", {})
    job = spec.get("jobTemplate", {}).get("spec", {})
    pod = job.get("template", {}).get("spec", {})

    if spec.get("concurrencyPolicy") != "Forbid":
        problems.append("CronJob: concurrencyPolicy is not Forbid")
    for key in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        if not isinstance(spec.get(key), int):
            problems.append(f"CronJob: {key} is not set")
    if not isinstance(job.get("backoffLimit"), int):
        problems.append("CronJob: the Job's backoffLimit is not set")
    if not _positive_int(job.get("activeDeadlineSeconds")):
        problems.append("CronJob: the Job's activeDeadlineSeconds is not set")

    containers = pod.get("containers", [])
    if len(containers) != 1:
        return [*problems, "CronJob: the pod should hold exactly one container"]
    (container,) = containers
    where = f"CronJob container {container.get('name')}"

    command = container.get("command")
    if command not in (None, [console_script()]):
        problems.append(f"{where}: command is not the image's {console_script()}")
    args = [str(a) for a in container.get("args", [])]
    problems += invocation_problems(args, where)

    env, env_problems_found = _container_env(container, configmaps, where)
    problems += env_problems_found
    effective = {**image_env, **env}
    if "CLOUDFLARE_ACCOUNT_ID" not in effective:
        problems.append(f"{where}: CLOUDFLARE_ACCOUNT_ID comes from nowhere")

    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(kind, {}):
                problems.append(f"{where}: resources.{kind}.{resource} is not set")

    problems += _security_problems(pod, container, where)
    problems += _volume_problems(pod, container, args, effective, configmaps, where)

    grace_s = effective_grace_s(effective)
    termination_s = pod.get("terminationGracePeriodSeconds", 30)
    if not termination_s > grace_s + REPORT_MARGIN_S:
        problems.append(
            f"CronJob: terminationGracePeriodSeconds {termination_s} does not "
            f"outlast the grace period ({grace_s} s) plus {REPORT_MARGIN_S} s"
        )

    return problems


def _container_env(
    container: Mapping[str, Any],
    configmaps: Mapping[str, Mapping[str, str]],
    where: str,
) -> tuple[dict[str, str], list[str]]:
    env: dict[str, str] = {}
    problems: list[str] = []
    secrets = secret_env_names()

    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is None:
            continue
        data = configmaps.get(ref.get("name"))
        if data is None:
            problems.append(f"{where}: envFrom names an unknown ConfigMap {ref}")
            continue
        problems += env_problems(data, f"ConfigMap {ref.get('name')}")
        problems += [
            f"ConfigMap {ref.get('name')}: holds the secret {name}"
            for name in data
            if name in secrets
        ]
        env.update({k: str(v) for k, v in data.items()})

    names = [item.get("name") for item in container.get("env", [])]
    problems += env_problems(names, where)
    for item in container.get("env", []):
        name = item.get("name")
        from_secret = "secretKeyRef" in item.get("valueFrom", {})
        if name in secrets and not from_secret:
            problems.append(f"{where}: {name} is not taken from a secretKeyRef")
        env[name] = str(item.get("value", "<from a reference>"))
    if "CLOUDFLARE_API_TOKEN" not in names:
        problems.append(f"{where}: CLOUDFLARE_API_TOKEN is not set from a Secret")

    return env, problems


def _security_problems(
    pod: Mapping[str, Any], container: Mapping[str, Any], where: str
) -> list[str]:
    problems: list[str] = []
    pod_security = pod.get("securityContext", {})
    security = container.get("securityContext", {})
    if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
        problems.append(f"{where}: runAsNonRoot is not set")
    if security.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: the root filesystem is not read-only")
    if security.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: privilege escalation is not disallowed")

    return problems


def _on_writable_mount(path: str, mounts: Mapping[str, Mapping[str, Any]]) -> bool:
    return any(
        (path + "/").startswith(mount_path.rstrip("/") + "/")
        and not mount.get("readOnly")
        for mount_path, mount in mounts.items()
    )


def _volume_problems(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    args: list[str],
    env: Mapping[str, str],
    configmaps: Mapping[str, Mapping[str, str]],
    where: str,
) -> list[str]:
    problems: list[str] = []
    volumes = {v.get("name"): v for v in pod.get("volumes", [])}
    mounts = {m.get("mountPath"): m for m in container.get("volumeMounts", [])}

    report_dir = env.get(report_dir_env_name())
    mount = mounts.get(report_dir)
    if mount is None:
        problems.append(f"{where}: nothing is mounted at the report dir {report_dir}")
    else:
        volume = volumes.get(mount.get("name"), {})
        if "persistentVolumeClaim" not in volume:
            problems.append(f"{where}: the report dir is not a PersistentVolumeClaim")
        if mount.get("readOnly"):
            problems.append(f"{where}: the report dir is mounted read-only")
    lock_dir = env.get(lock_dir_env_name(), CONTAINER_TMP)
    if not _on_writable_mount(lock_dir, mounts):
        problems.append(f"{where}: the lock dir {lock_dir} is on no writable volume")

    known = cli.list_commands(_root_context())
    if args and args[0] in known and not invocation_problems(args, where):
        manifest = Path(str(invocation_params(args).get("manifest", "")))
        mount = mounts.get(str(manifest.parent))
        volume = volumes.get(mount.get("name"), {}) if mount else {}
        name = volume.get("configMap", {}).get("name")
        if name is None:
            problems.append(f"{where}: the manifest {manifest} is not from a ConfigMap")
        elif name in configmaps and manifest.name not in configmaps[name]:
            problems.append(f"{where}: ConfigMap {name} has no key {manifest.name}")

    return problems


# -- systemd ------------------------------------------------------------------

Unit = dict[str, list[tuple[str, str]]]

_SPAN_UNITS_S = {
    unit: seconds
    for units, seconds in [
        (" s sec second seconds", 1.0),
        ("ms msec", 0.001),
        ("m min minute minutes", 60.0),
        ("h hr hour hours", 3600.0),
        ("d day days", 86400.0),
    ]
    for unit in units.split(" ")
}


def parse_unit(text: str) -> Unit:
    """Sections of a systemd unit file, each a list of (key, value) in order."""
    unit: Unit = {}
    section: list[tuple[str, str]] | None = None
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        line, logical = logical + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], [])
            continue
        if section is None or "=" not in line:
            raise ValueError(f"not a unit file line: {line!r}")
        key, _, value = line.partition("=")
        section.append((key.strip(), value.strip()))

    return unit


def unit_values(unit: Unit, section: str, key: str) -> list[str]:
    """Every value of ``key`` in ``section``, in order."""
    return [v for k, v in unit.get(section, []) if k == key]


def unit_value(unit: Unit, section: str, key: str) -> str | None:
    """The last value of ``key`` in ``section`` (the one systemd uses)."""
    values = unit_values(unit, section, key)
    return values[-1] if values else None


def timespan_s(value: str) -> float:
    """A systemd time span ("90", "1min 30s", "2h") in seconds."""
    if value.strip() == "infinity":
        return float("inf")
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip())
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s", "", value):
        raise ValueError(f"not a time span: {value!r}")
    return sum(float(number) * _SPAN_UNITS_S[unit] for number, unit in parts)


def _unit_env(unit: Unit) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in unit_values(unit, "Service", "Environment"):
        for word in shlex.split(value):
            name, _, setting = word.partition("=")
            env[name] = setting
    return env


def _yes(value: str | None) -> bool:
    return (value or "").lower() in ("yes", "true", "on", "1")


def service_problems(unit: Unit) -> list[str]:
    """What is wrong with the provisioner service unit ([] when nothing)."""
    problems: list[str] = []
    where = "provisioner.service"

    if unit_value(unit, "Service", "Type") != "oneshot":
        problems.append(f"{where}: Type is not oneshot")
    user = unit_value(unit, "Service", "User")
    if not _yes(unit_value(unit, "Service", "DynamicUser")) and user in (None, "root"):
        problems.append(f"{where}: runs as root (set DynamicUser= or User=)")
    if not _yes(unit_value(unit, "Service", "NoNewPrivileges")):
        problems.append(f"{where}: NoNewPrivileges is not set")
    if unit_value(unit, "Service", "ProtectSystem") != "strict":
        problems.append(f"{where}: ProtectSystem is not strict")
    if unit_value(unit, "Service", "KillSignal") != "SIGTERM":
        problems.append(f"{where}: KillSignal is not SIGTERM")
    if not unit_values(unit, "Service", "EnvironmentFile"):
        problems.append(f"{where}: no EnvironmentFile for the credentials")

    env = _unit_env(unit)
    problems += env_problems(env, where)
    problems += [
        f"{where}: the secret {name} is set inline; use the EnvironmentFile"
        for name in env
        if name in secret_env_names()
    ]

    # ProtectSystem=strict leaves only the StateDirectory writable. Without a
    # lock dir the locks go to the unit's private /tmp, which is writable too.
    state = unit_value(unit, "Service", "StateDirectory")
    inside = (f"%S/{state}/", f"/var/lib/{state}/")
    report_dir = env.get(report_dir_env_name(), "")
    if state is None or not (report_dir + "/").startswith(inside):
        problems.append(f"{where}: the report dir is not inside the StateDirectory")
    lock_dir = env.get(lock_dir_env_name())
    if lock_dir is not None and not (lock_dir + "/").startswith(inside):
        problems.append(f"{where}: the lock dir is not inside the StateDirectory")

    stop = unit_value(unit, "Service", "TimeoutStopSec")
    grace_s = effective_grace_s(env)
    if stop is None or not timespan_s(stop) > grace_s + REPORT_MARGIN_S:
        problems.append(
            f"{where}: TimeoutStopSec {stop} does not outlast the grace period "
            f"({grace_s} s) plus {REPORT_MARGIN_S} s"
        )

    starts = unit_values(unit, "Service", "ExecStart")
    if not starts:
        problems.append(f"{where}: no ExecStart")
    for start in starts:
        argv = shlex.split(start.lstrip("-@:+!"))
        if not argv or Path(argv[0]).name != console_script():
            problems.append(f"{where}: ExecStart does not run {console_script()}")
            continue
        problems += invocation_problems(argv[1:], f"{where} ExecStart")

    return problems


def timer_problems(timer: Unit, timer_name: str, services: set[str]) -> list[str]:
    """What is wrong with the timer unit ([] when nothing)."""
    problems: list[str] = []
    where = timer_name

    if not unit_values(timer, "Timer", "OnCalendar"):
        problems.append(f"{where}: no OnCalendar")
    if not _yes(unit_value(timer, "Timer", "Persistent")):
        problems.append(f"{where}: Persistent is not true")
    if unit_value(timer, "Timer", "RandomizedDelaySec") is None:
        problems.append(f"{where}: no RandomizedDelaySec")
    default = timer_name.removesuffix(".timer") + ".service"
    target = unit_value(timer, "Timer", "Unit") or default
    if target not in services:
        problems.append(f"{where}: starts {target}, which is not in deploy/systemd")
    if "timers.target" not in (unit_value(timer, "Install", "WantedBy") or ""):
        problems.append(f"{where}: not WantedBy=timers.target")

    return problems


def env_file_names(text: str) -> dict[str, str]:
    """NAME=value lines of an environment file."""
    names: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            names[name.strip()] = value.strip()
    return names


# -- GitHub Actions -------------------------------------------------------------


def load_workflow(text: str) -> dict[str, Any]:
    """The workflow, with YAML 1.1's `on: true` key put back as "on"."""
    workflow: dict[Any, Any] = yaml.safe_load(text)
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def _steps(workflow: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for job_name, job in workflow.get("jobs", {}).items():
        for step in job.get("steps", []):
            yield job_name, step


def workflow_problems(workflow: Mapping[str, Any]) -> list[str]:
    """What is wrong with the GitHub workflow ([] when nothing)."""
    problems: list[str] = []
    secrets = secret_env_names()

    envs = [("workflow", workflow.get("env", {}))]
    envs += [(f"job {n}", j.get("env", {})) for n, j in workflow["jobs"].items()]
    envs += [(f"job {n} step", s.get("env", {})) for n, s in _steps(workflow)]
    for where, env in envs:
        problems += env_problems(env, f"workflow {where}")
        for name, value in env.items():
            expected = f"${{{{ secrets.{name} }}}}"
            if name in secrets and value != expected:
                problems.append(f"workflow {where}: {name} is not {expected}")

    for job_name, step in _steps(workflow):
        script = step.get("run")
        if script is None:
            continue
        where = f"workflow job {job_name} step {step.get('name')!r}"
        if "${{" in script:
            problems.append(f"{where}: an expression inside `run` (pass it in env)")
        problems += scan_shell(script, where).problems

    return problems


def workflow_global_env(workflow: Mapping[str, Any]) -> dict[str, str]:
    """The workflow-level env, as text."""
    return {k: str(v) for k, v in workflow.get("env", {}).items()}


def step_running(
    workflow: Mapping[str, Any], subcommand: str
) -> tuple[str, dict[str, Any]]:
    """The job name and the step that runs ``provisioner <subcommand>``."""
    found = [
        (job_name, step)
        for job_name, step in _steps(workflow)
        if any(
            argv[:1] == [subcommand]
            for argv in scan_shell(step.get("run", ""), "step").invocations
        )
    ]
    assert len(found) == 1, f"one step should run `provisioner {subcommand}`"
    return found[0]


_EXPRESSION = re.compile(r"\$\{\{\s*([\w.]+)\s*\}\}")


@dataclass
class StepRun:
    """The outcome of one workflow step run with bash."""

    returncode: int
    output: str
    summary: str


def run_step(
    workflow: Mapping[str, Any],
    job_name: str,
    step: Mapping[str, Any],
    workspace: Path,
    program: str,
    context: Mapping[str, str],
) -> StepRun:
    """Run a step's script as GitHub would, with ``program`` as provisioner."""
    bin_dir = workspace.parent / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / console_script()
    fake.write_text(program, encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    summary = workspace.parent / "summary.md"
    summary.write_text("", encoding="utf-8")

    def resolve(value: Any) -> str:
        return _EXPRESSION.sub(lambda m: context[m.group(1)], str(value))

    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLOUDFLARE_", "PROVISIONER_", "GITHUB_"))
    }
    levels = [workflow.get("env", {}), workflow["jobs"][job_name].get("env", {})]
    env = {
        **inherited,
        **{k: resolve(v) for level in levels for k, v in level.items()},
        **{k: resolve(v) for k, v in step.get("env", {}).items()},
        "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(workspace.parent / "output"),
    }
    script = workspace.parent / "step.sh"
    script.write_text(step["run"], encoding="utf-8")

    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run(
        [bash, "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    return StepRun(
        done.returncode, done.stdout + done.stderr, summary.read_text("utf-8")
    )


def report_dir_of(workflow: Mapping[str, Any], workspace: Path) -> Path:
    """The directory the workflow's report and artifacts go to."""
    return workspace / workflow_global_env(workflow)[report_dir_env_name()]


def fake_program(exit_code: int) -> str:
    """A stand-in for provisioner that prints a plan line and exits so."""
    return f"#!/bin/sh\necho 'Plan: fake.'\nexit {exit_code}\n"


def sandbox_program() -> str:
    """A stand-in that runs the real CLI, plan and apply on the sandbox."""
    python = shlex.quote(sys.executable)
    return (
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  plan|apply) exec {python} -m provisioner "$@" --sandbox ;;\n'
        f'  *) exec {python} -m provisioner "$@" ;;\n'
        "esac\n"
    )


# -- README -------------------------------------------------------------------


def fenced_blocks(text: str) -> Iterator[tuple[str, str]]:
    """(language, body) of each fenced block of a Markdown text."""
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        yield match.group(1), match.group(2)


def exit_code_table(text: str) -> dict[int, str]:
    """Code to meaning, from the table under a "Exit codes" heading."""
    section = re.split(r"^## .*[Ee]xit codes.*$", text, flags=re.MULTILINE)[1]
    table: dict[int, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].isdigit():
            table[int(cells[0])] = cells[1]
        elif table and not line.startswith("|"):
            break
    return table


# -- fixtures -----------------------------------------------------------------


@pytest.fixture
def dockerfile_text() -> str:
    """The Dockerfile as committed."""
    return DOCKERFILE.read_text(encoding="utf-8")


@pytest.fixture
def image_env(dockerfile_text: str) -> dict[str, str]:
    """The environment the image's final stage sets."""
    return dockerfile_env(_final_stage(dockerfile_instructions(dockerfile_text)))


@pytest.fixture
def cronjob() -> dict[str, Any]:
    """The CronJob of deploy/kubernetes."""
    (found,) = _of_kind(kubernetes_documents(), "CronJob")
    return found


@pytest.fixture
def configmaps() -> dict[str, dict[str, str]]:
    """ConfigMaps of deploy/kubernetes, by name."""
    return {
        d["metadata"]["name"]: d.get("data", {})
        for d in _of_kind(kubernetes_documents(), "ConfigMap")
    }


@pytest.fixture
def service() -> Unit:
    """The provisioner service unit."""
    return parse_unit((SYSTEMD / "provisioner.service").read_text(encoding="utf-8"))


@pytest.fixture
def timer() -> Unit:
    """The provisioner timer unit."""
    return parse_unit((SYSTEMD / "provisioner.timer").read_text(encoding="utf-8"))


@pytest.fixture
def workflow() -> dict[str, Any]:
    """The GitHub workflow."""
    return load_workflow(WORKFLOW.read_text(encoding="utf-8"))


@pytest.fixture
def workspace(tmp_path: Path, workflow: dict[str, Any]) -> Path:
    """A checkout holding the manifest the workflow names."""
    checkout = tmp_path / "checkout"
    manifest = Path(workflow_global_env(workflow)["MANIFEST"])
    (checkout / manifest.parent).mkdir(parents=True)
    shutil.copy(ROOT / manifest, checkout / manifest)
    return checkout


GITHUB_CONTEXT = {
    "secrets.CLOUDFLARE_API_TOKEN": "sandbox-token",
    "vars.CLOUDFLARE_ACCOUNT_ID": DEFAULT_ACCOUNT,
}


# -- the checkers can fail ------------------------------------------------------


def test_settings_env_names_are_derived_from_the_settings_class() -> None:
    """The derived names include each kind of setting and no near-miss."""
    names = settings_env_names()

    assert {"CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID", CONFIG_ENV} <= names
    assert {grace_env_name(), report_dir_env_name()} <= names
    assert secret_env_names() >= {"CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_KEY"}
    assert not {"API_TOKEN", "PROVISIONER_ACCOUNT_ID", "CF_API_TOKEN"} & names


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["apply", "--no-such-option", "m.csv"], "has no option --no-such-option"),
        (["frobnicate", "m.csv"], "unknown subcommand"),
        (["apply"], "is refused"),
        (["plan", "--log-format", "xml", "m.csv"], "is refused"),
        (["--no-such-flag"], "the group has no option"),
        ([], "names no subcommand"),
    ],
)
def test_invocation_checker_rejects_what_the_cli_refuses(
    argv: list[str], expected: str
) -> None:
    """An unknown subcommand, option, value or missing argument is reported."""
    problems = invocation_problems(argv, "snippet")

    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    "argv",
    [
        ["apply", "--fresh", "--report-dir", "r", "m.csv"],
        ["plan", "--json", "m.csv"],
        ["sandbox", "--port", "0"],
        ["--version"],
        ["apply", "-h"],
    ],
)
def test_invocation_checker_accepts_what_the_cli_accepts(argv: list[str]) -> None:
    """A valid invocation, secondary flags and help included, is not reported."""
    assert invocation_problems(argv, "snippet") == []


def test_shell_scanner_finds_invocations_in_command_position_only() -> None:
    """Only `provisioner` as a command (or a provisioner image) counts."""
    script = (
        "useradd --gid provisioner --no-create-home provisioner\n"
        'sudo /opt/provisioner/bin/provisioner plan "$M" > plan.txt 2>&1 || x=$?\n'
        'docker run --rm -v "$PWD/c:/etc/provisioner:ro" -e A=b \\\n'
        "  ghcr.io/x/provisioner:1 apply /etc/provisioner/m.csv\n"
        "python - <<'PY'\nprovisioner --bad\nPY\n"
        "docker build -t provisioner:1 .\n"
    )

    scan = scan_shell(script, "snippet")

    assert scan.invocations == [["plan", "$M"], ["apply", "/etc/provisioner/m.csv"]]
    assert scan.problems == []


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("provisioner apply --prun m.csv", "has no option --prun"),
        ("if provisioner aply m.csv; then :; fi", "unknown subcommand"),
        ("docker run --rm --gpus all img:1 apply m.csv", "runs no provisioner image"),
        ("CF_API_TOKEN=x provisioner plan m.csv", "sets CF_API_TOKEN"),
        ("export PROVISIONER_REPORTDIR=/r", "sets PROVISIONER_REPORTDIR"),
    ],
)
def test_shell_scanner_reports_bad_invocations_and_names(
    script: str, expected: str
) -> None:
    """A wrong subcommand, option, image or exported name in shell is reported."""
    problems = scan_shell(script, "snippet").problems

    assert any(expected in p for p in problems), problems


def test_env_checkers_reject_names_the_settings_do_not_read() -> None:
    """Typos, other tools' names and the bare aliases are all reported."""
    names = ["PROVISIONER_REPORTDIR", "CF_API_TOKEN", "API_TOKEN", "PATH"]

    problems = env_problems(names, "snippet")
    mentioned = mentioned_env_problems(
        "set PROVISIONER_GRACE and CLOUDFLARE_TOKEN", "t"
    )

    assert len(problems) == 3
    assert not any("PATH" in p for p in problems)
    assert len(mentioned) == 2


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("USER 10001:10001", "USER root", "non-root USER"),
        ("USER 10001:10001", "", "non-root USER"),
        ("ENV PATH=", "ENV CLOUDFLARE_API_TOKEN=abc PATH=", "looks like a secret"),
        ("FROM python", "ARG GITHUB_TOKEN\nFROM python", "looks like a secret"),
        ("PROVISIONER_LOG_FORMAT", "PROVISIONER_LOGFORMAT", "settings do not read"),
        ('ENTRYPOINT ["provisioner"]', 'ENTRYPOINT ["python"]', "ENTRYPOINT"),
        ('CMD ["--help"]', 'CMD ["aply"]', "unknown subcommand"),
        ("provisioner --version", "provisioner --versoin", "no option --versoin"),
    ],
)
def test_dockerfile_checker_rejects_a_broken_copy(
    dockerfile_text: str, old: str, new: str, expected: str
) -> None:
    """Root, a secret in a layer, a wrong entry point or option is reported."""
    assert old in dockerfile_text
    broken = dockerfile_text.replace(old, new, 1)

    problems = dockerfile_problems(broken)

    assert any(expected in p for p in problems), problems


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set (None: delete) the item at a dotted path; a list index may append."""
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    slot: Any = int(last) if isinstance(node, list) else last
    if value is None:
        del node[slot]
    elif isinstance(node, list) and slot == len(node):
        node.append(value)
    else:
        node[slot] = value


POD = "spec.jobTemplate.spec.template.spec"
CONTAINER = f"{POD}.containers.0"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("spec.concurrencyPolicy", "Allow", "concurrencyPolicy"),
        ("spec.failedJobsHistoryLimit", None, "failedJobsHistoryLimit"),
        ("spec.jobTemplate.spec.backoffLimit", None, "backoffLimit"),
        ("spec.jobTemplate.spec.activeDeadlineSeconds", None, "activeDeadline"),
        (f"{POD}.terminationGracePeriodSeconds", 45, "does not outlast"),
        (f"{CONTAINER}.env.0.valueFrom", None, "not taken from a secretKeyRef"),
        (f"{CONTAINER}.env.0.name", "CF_API_TOKEN", "sets CF_API_TOKEN"),
        (f"{CONTAINER}.resources.limits", None, "resources.limits.cpu"),
        (f"{CONTAINER}.args", ["apply", "--prun", "m.csv"], "no option --prun"),
        (f"{CONTAINER}.args", ["apply", "/etc/other/m.csv"], "not from a ConfigMap"),
        (f"{CONTAINER}.args", ["apply", "/etc/provisioner/x.csv"], "has no key"),
        (f"{CONTAINER}.command", ["python"], "command is not"),
        (f"{CONTAINER}.volumeMounts.1.readOnly", True, "mounted read-only"),
        (f"{CONTAINER}.securityContext.readOnlyRootFilesystem", False, "read-only"),
        (f"{POD}.securityContext.runAsNonRoot", None, "runAsNonRoot"),
        (f"{CONTAINER}.env.1", {"name": "PROVISIONER_LOCK_DIR", "value": "/l"}, "/l"),
    ],
)
def test_cronjob_checker_rejects_a_broken_copy(
    cronjob: dict[str, Any],
    configmaps: dict[str, dict[str, str]],
    image_env: dict[str, str],
    path: str,
    value: Any,
    expected: str,
) -> None:
    """Each requirement of the CronJob is checked: breaking it is reported."""
    broken = copy.deepcopy(cronjob)
    _set_path(broken, path, value)

    problems = cronjob_problems(broken, configmaps, image_env)

    assert any(expected in p for p in problems), problems


def test_cronjob_checker_uses_the_grace_period_the_pod_really_gets(
    cronjob: dict[str, Any],
    configmaps: dict[str, dict[str, str]],
    image_env: dict[str, str],
) -> None:
    """A longer grace period set in the ConfigMap must be matched by the pod."""
    longer = copy.deepcopy(configmaps)
    longer["provisioner-settings"][grace_env_name()] = "120"

    problems = cronjob_problems(cronjob, longer, image_env)

    assert any("does not outlast the grace period (120.0 s)" in p for p in problems)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("Type", "simple", "oneshot"),
        ("TimeoutStopSec", "45", "does not outlast"),
        ("Environment", "PROVISIONER_GRACE_S=120", "does not outlast"),
        ("Environment", "CLOUDFLARE_API_TOKEN=x", "set inline"),
        ("Environment", "PROVISIONER_REPORTDIR=/x", "settings do not read"),
        ("Environment", "PROVISIONER_LOCK_DIR=/run/lock", "lock dir"),
        ("Environment", "PROVISIONER_REPORT_DIR=/srv/r", "report dir"),
        ("ExecStart", "/opt/provisioner/bin/provisioner apply --prun m", "--prun"),
        ("ProtectSystem", "full", "ProtectSystem"),
        ("KillSignal", "SIGKILL", "KillSignal"),
        ("DynamicUser", "no", "runs as root"),
    ],
)
def test_service_checker_rejects_a_broken_copy(
    service: Unit, key: str, value: str, expected: str
) -> None:
    """Each requirement of the service unit is checked: breaking it is reported."""
    broken = copy.deepcopy(service)
    broken["Service"].append((key, value))

    problems = service_problems(broken)

    assert any(expected in p for p in problems), problems


def test_timer_checker_rejects_a_timer_of_another_service(timer: Unit) -> None:
    """A timer starting a unit that deploy/systemd does not hold is reported."""
    broken = copy.deepcopy(timer)
    broken["Timer"].append(("Unit", "other.service"))

    problems = timer_problems(broken, "provisioner.timer", {"provisioner.service"})

    assert any("other.service" in p for p in problems), problems


def test_timespan_reads_systemd_spans() -> None:
    """Plain seconds, units and sums are read; anything else is refused."""
    assert timespan_s("90") == 90
    assert timespan_s("1min 30s") == 90
    assert timespan_s("2h") == 7200
    with pytest.raises(ValueError, match="not a time span"):
        timespan_s("soon")


@pytest.mark.parametrize(
    ("step_path", "value", "expected"),
    [
        ("jobs.apply.steps.3.env.CLOUDFLARE_API_TOKEN", "abc", "is not ${{ secrets"),
        ("jobs.plan.steps.4.env.CF_API_TOKEN", "x", "sets CF_API_TOKEN"),
        ("jobs.plan.steps.3.run", "provisioner plan --jsn m", "no option --jsn"),
        ("jobs.plan.steps.3.run", "provisioner plan ${{ env.M }}", "expression"),
    ],
)
def test_workflow_checker_rejects_a_broken_copy(
    workflow: dict[str, Any], step_path: str, value: str, expected: str
) -> None:
    """Secrets not from `secrets`, unknown names and options are reported."""
    broken = copy.deepcopy(workflow)
    _set_path(broken, step_path, value)

    problems = workflow_problems(broken)

    assert any(expected in p for p in problems), problems


# -- the image ------------------------------------------------------------------


def test_dockerfile_passes_every_check(dockerfile_text: str) -> None:
    """The Dockerfile runs as non-root, bakes in no secret, uses known names only."""
    assert dockerfile_problems(dockerfile_text) == []


def test_image_runs_the_console_script_with_a_valid_default(
    dockerfile_text: str,
) -> None:
    """ENTRYPOINT is pyproject's console script; CMD is an accepted invocation."""
    final = _final_stage(dockerfile_instructions(dockerfile_text))

    (entrypoint,) = [_exec_form(i) for i in final if i.keyword == "ENTRYPOINT"]
    (cmd,) = [_exec_form(i) for i in final if i.keyword == "CMD"]

    assert entrypoint == [console_script()]
    assert cmd is not None
    assert invocation_problems(cmd, "CMD") == []


def test_image_installs_from_the_repository_with_constraints(
    dockerfile_text: str,
) -> None:
    """The project is installed with `pip install -c constraints.txt .`."""
    runs = [i.value for i in dockerfile_instructions(dockerfile_text)]

    assert any("pip install -c constraints.txt ." in run for run in runs)


def test_image_copies_only_files_the_context_holds_and_lets_through(
    dockerfile_text: str,
) -> None:
    """Every COPY source exists at the root and is re-included by the ignore list."""
    sources = copy_sources(dockerfile_instructions(dockerfile_text))
    allowed = {
        line[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }

    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source.rstrip("/") in allowed, source


def test_image_writes_json_logs_and_reports_to_a_volume(
    dockerfile_text: str, image_env: dict[str, str]
) -> None:
    """PROVISIONER_LOG_FORMAT is json and the report dir is a declared VOLUME."""
    volumes = [
        v
        for i in dockerfile_instructions(dockerfile_text)
        if i.keyword == "VOLUME"
        for v in (_exec_form(i) or i.value.split())
    ]

    assert image_env[field_env_names("log_format")[0]] == "json"
    assert image_env[report_dir_env_name()] in volumes


def test_image_user_matches_the_kubernetes_run_as_user(
    dockerfile_text: str, cronjob: dict[str, Any]
) -> None:
    """The pod runs as the image's numeric USER, so its files are its own."""
    final = _final_stage(dockerfile_instructions(dockerfile_text))
    (user,) = [i.value for i in final if i.keyword == "USER"]
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]

    assert user.split(":")[0] == str(pod["securityContext"]["runAsUser"])


# -- Kubernetes -----------------------------------------------------------------


def test_cronjob_passes_every_check(
    cronjob: dict[str, Any],
    configmaps: dict[str, dict[str, str]],
    image_env: dict[str, str],
) -> None:
    """The CronJob meets every requirement its checker knows (see cronjob_problems)."""
    assert cronjob_problems(cronjob, configmaps, image_env) == []


def test_cronjob_applies_the_manifest_from_its_configmap(
    cronjob: dict[str, Any],
) -> None:
    """The container's arguments run `apply` on the mounted manifest."""
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"
    ][0]

    assert container["args"][0] == "apply"
    assert str(invocation_params(container["args"])["manifest"]).startswith(
        "/etc/provisioner/"
    )


def test_cronjob_failure_policy_uses_documented_exit_codes(
    cronjob: dict[str, Any],
) -> None:
    """podFailurePolicy names only codes of the README's table, 0 and 2 excluded."""
    documented = exit_code_table((ROOT / "README.md").read_text(encoding="utf-8"))
    rules = cronjob["spec"]["jobTemplate"]["spec"].get("podFailurePolicy", {})

    codes = {
        code
        for rule in rules.get("rules", [])
        for code in rule.get("onExitCodes", {}).get("values", [])
    }

    assert codes
    assert codes <= set(documented) - {0, 2}


def test_kubernetes_files_mention_only_known_names() -> None:
    """Every CLOUDFLARE_* or PROVISIONER_* name in deploy/kubernetes is a setting."""
    for path in sorted(KUBERNETES.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        assert mentioned_env_problems(text, path.name) == []


def test_configmaps_hold_no_secret(configmaps: dict[str, dict[str, str]]) -> None:
    """No ConfigMap carries a value the settings treat as a secret."""
    for name, data in configmaps.items():
        assert not set(data) & secret_env_names(), name


# -- systemd --------------------------------------------------------------------


def test_service_passes_every_check(service: Unit) -> None:
    """The service is a hardened unprivileged oneshot that outlasts the grace period."""
    assert service_problems(service) == []


def test_timer_points_at_the_service(timer: Unit) -> None:
    """The timer is persistent, randomly delayed, and starts the service beside it."""
    services = {p.name for p in SYSTEMD.glob("*.service")}

    assert timer_problems(timer, "provisioner.timer", services) == []


def test_env_file_example_names_settings_and_holds_no_value() -> None:
    """The credentials example names known settings and carries no real value."""
    names = env_file_names(
        (SYSTEMD / "provisioner.env.example").read_text(encoding="utf-8")
    )

    assert env_problems(names, "provisioner.env.example") == []
    assert "CLOUDFLARE_API_TOKEN" in names
    assert all(value == "" for value in names.values())


def test_systemd_files_mention_only_known_names() -> None:
    """Every CLOUDFLARE_* or PROVISIONER_* name in deploy/systemd is a setting."""
    for path in sorted(SYSTEMD.iterdir()):
        text = path.read_text(encoding="utf-8")
        assert mentioned_env_problems(text, path.name) == []


# -- GitHub Actions -------------------------------------------------------------


def test_workflow_passes_every_check(workflow: dict[str, Any]) -> None:
    """The workflow uses known names and options and takes secrets from `secrets`."""
    assert workflow_problems(workflow) == []
    assert mentioned_env_problems(WORKFLOW.read_text(encoding="utf-8"), "wf") == []


def test_workflow_plans_pull_requests_and_applies_main(
    workflow: dict[str, Any],
) -> None:
    """`plan` runs on pull requests, `apply` on pushes to main, reports uploaded."""
    plan_job, _ = step_running(workflow, "plan")
    apply_job, _ = step_running(workflow, "apply")
    triggers = workflow["on"]

    assert "pull_request" in triggers
    assert "main" in triggers["push"]["branches"]
    assert "pull_request" in workflow["jobs"][plan_job]["if"]
    assert "refs/heads/main" in workflow["jobs"][apply_job]["if"]
    assert "push" in workflow["jobs"][apply_job]["if"]
    for job in (plan_job, apply_job):
        uploads = [
            s
            for s in workflow["jobs"][job]["steps"]
            if str(s.get("uses", "")).startswith("actions/upload-artifact")
        ]
        assert [s.get("if") for s in uploads] == ["always()"], job


def test_workflow_grace_period_fits_githubs_cancel_window(
    workflow: dict[str, Any],
) -> None:
    """A cancelled job's run can finish its calls before GitHub's SIGTERM."""
    grace_s = effective_grace_s(workflow_global_env(workflow))

    assert grace_s < GITHUB_CANCEL_WINDOW_S


@pytest.mark.parametrize(
    "code", sorted(exit_code_table(MAIN_README.read_text("utf-8")))
)
def test_workflow_plan_step_passes_only_on_0_and_2(
    workflow: dict[str, Any], workspace: Path, code: int
) -> None:
    """The plan step succeeds when plan exits 0 or 2 and fails on any other code."""
    job, step = step_running(workflow, "plan")

    done = run_step(workflow, job, step, workspace, fake_program(code), GITHUB_CONTEXT)

    assert (done.returncode == 0) == (code in (0, 2)), done.output
    assert ("::error::" in done.output) == (code not in (0, 2))
    assert (
        "Plan: fake." in (report_dir_of(workflow, workspace) / "plan.json").read_text()
    )


@pytest.mark.parametrize("code", [0, 3, 6])
def test_workflow_apply_step_passes_only_on_0(
    workflow: dict[str, Any], workspace: Path, code: int
) -> None:
    """The apply step fails, with apply's own exit code, on anything but 0."""
    job, step = step_running(workflow, "apply")

    done = run_step(workflow, job, step, workspace, fake_program(code), GITHUB_CONTEXT)

    assert done.returncode == code, done.output


def test_workflow_plan_is_skipped_without_the_secret(
    workflow: dict[str, Any], workspace: Path
) -> None:
    """A pull request without secrets (a fork) skips the plan instead of failing."""
    job, step = step_running(workflow, "plan")
    context = {**GITHUB_CONTEXT, "secrets.CLOUDFLARE_API_TOKEN": ""}

    done = run_step(workflow, job, step, workspace, fake_program(5), context)

    assert done.returncode == 0, done.output
    assert "plan skipped" in done.output
    assert "Plan skipped" in done.summary


def test_workflow_harness_catches_a_step_that_fails_on_pending_changes(
    workflow: dict[str, Any], workspace: Path
) -> None:
    """A plan step that treated exit 2 as failure would be caught by the harness."""
    job, step = step_running(workflow, "plan")
    script, replaced = re.subn(r"^(\s*)2\)", r"\g<1>9)", step["run"], flags=re.M)
    assert replaced == 1
    broken = {**step, "run": script}

    done = run_step(workflow, job, broken, workspace, fake_program(2), GITHUB_CONTEXT)

    assert done.returncode != 0


def test_workflow_steps_work_end_to_end_on_the_sandbox(
    workflow: dict[str, Any], workspace: Path
) -> None:
    """Validate, plan and apply pass on the sandbox and fill summary and artifacts."""
    program = sandbox_program()
    _, validate = step_running(workflow, "validate")
    plan_job, plan = step_running(workflow, "plan")
    apply_job, apply = step_running(workflow, "apply")

    checked = run_step(workflow, plan_job, validate, workspace, program, GITHUB_CONTEXT)
    planned = run_step(workflow, plan_job, plan, workspace, program, GITHUB_CONTEXT)
    applied = run_step(workflow, apply_job, apply, workspace, program, GITHUB_CONTEXT)

    report_dir = report_dir_of(workflow, workspace)
    assert checked.returncode == 0, checked.output
    assert planned.returncode == 0, planned.output
    assert json.loads((report_dir / "plan.json").read_text())["changes_pending"]
    assert "plan" in planned.summary
    assert applied.returncode == 0, applied.output
    assert "apply" in applied.summary
    assert (report_dir / "report.json").is_file()


# -- the README -------------------------------------------------------------------


def test_readme_exit_codes_are_the_main_readmes() -> None:
    """deploy/README.md lists exactly the main README's codes and meanings."""
    main = exit_code_table((ROOT / "README.md").read_text(encoding="utf-8"))
    deploy = exit_code_table(DEPLOY_README.read_text(encoding="utf-8"))

    assert deploy == main


def test_readme_commands_are_valid() -> None:
    """Every provisioner invocation in the README's shell blocks is accepted."""
    text = DEPLOY_README.read_text(encoding="utf-8")
    invocations: list[list[str]] = []

    for language, body in fenced_blocks(text):
        if language != "sh":
            continue
        scan = scan_shell(body, "deploy/README.md")
        assert scan.problems == []
        invocations += scan.invocations

    assert {argv[0] for argv in invocations} >= {"plan", "apply"}


def test_readme_mentions_only_known_names() -> None:
    """Every CLOUDFLARE_* or PROVISIONER_* name in the README is a setting."""
    text = DEPLOY_README.read_text(encoding="utf-8")

    assert mentioned_env_problems(text, "deploy/README.md") == []


def test_readme_ignore_list_is_the_dockerignore_file() -> None:
    """The ignore list printed for the legacy builder is the file BuildKit reads."""
    text = DEPLOY_README.read_text(encoding="utf-8")
    lists = [body for language, body in fenced_blocks(text) if language == "text"]
    wanted = [
        line
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]

    assert [body.splitlines() for body in lists] == [wanted]


def test_deploy_files_hold_no_absolute_machine_path() -> None:
    """No committed deploy file names a home directory or this checkout."""
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        text = path.read_text(encoding="utf-8")
        assert str(ROOT) not in text, path
        assert not re.search(r"/home/|/Users/|/root/", text), path
