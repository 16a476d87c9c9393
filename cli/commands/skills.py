"""`claw skills list|show|search|enable|disable|install|validate`: the skill registry."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from cli.context import client_config, query
from cli.options import JsonFlag
from cli.output import emit_fields, emit_json, emit_table, fmt_duration, fmt_time, shorten
from cli.runner import fail, run_async
from cli.skill_install import install_skill
from common.api import SkillInfo
from common.errors import ClawError
from common.skills import load_manifest

group = typer.Typer(help="The skill registry: install, enable, disable, search.", no_args_is_help=True)


def _split_version(name: str) -> tuple[str, str | None]:
    skill, _, version = name.partition("@")
    return skill, version or None


@group.command("list")
def skills_list(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Every registered skill version: risk, enabled, source, nodes running it."""
    query(ctx, lambda client: client.skills(), render_skills, json_out)


@group.command("show")
def skills_show(ctx: typer.Context, name: str, json_out: JsonFlag = False) -> None:
    """One skill: its versions, manifest and input schema."""
    query(ctx, lambda client: client.skills(name=name), render_skill, json_out)


@group.command("search")
def skills_search(ctx: typer.Context, text: str, json_out: JsonFlag = False) -> None:
    """Skills whose name, description, capabilities or risk mention every word of TEXT."""
    query(ctx, lambda client: client.skills(search=text), render_skills, json_out)


@group.command("enable")
def skills_enable(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")], json_out: JsonFlag = False
) -> None:
    """Enable a skill (one version; the newest if none is named); workers follow within a heartbeat."""
    _set_skill_enabled(ctx, name, True, lambda info: print(f"{info.entry.name}@{info.entry.version} enabled"), json_out)


@group.command("disable")
def skills_disable(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")], json_out: JsonFlag = False
) -> None:
    """Disable a skill: submits are refused, workers stop pulling it within a heartbeat."""
    _set_skill_enabled(ctx, name, False, lambda info: print(f"{info.entry.name} disabled"), json_out)


def _set_skill_enabled(
    ctx: typer.Context, name: str, enabled: bool, render: Callable[[Any], None], json_out: bool
) -> None:
    skill, version = _split_version(name)
    query(
        ctx,
        lambda client: client.set_skill_enabled(skill, enabled=enabled, version=version, by=getpass.getuser()),
        render,
        json_out,
    )


@group.command("install")
def skills_install(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A folder with skill.yaml and its code.")],
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Do not wait for the workers to load it.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the online workers to load it.", min=0)] = 30.0,
    allow_risk_change: Annotated[
        bool,
        typer.Option(
            "--allow-risk-change",
            help="Let this version declare a lower risk than an earlier version (recorded in the audit log).",
        ),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Install a skill folder: validated, uploaded, registered; then wait until every online worker
    loaded it (exit 1 naming those that failed or did not answer). Built-in names are reserved; a
    version declaring a lower risk than an earlier one needs --allow-risk-change."""
    cfg = client_config(ctx)
    wait_s = None if no_wait else timeout
    install = install_skill(
        cfg, path, by=getpass.getuser(), wait_s=wait_s, json_out=json_out, allow_risk_change=allow_risk_change
    )
    raise typer.Exit(run_async(install))


@group.command("validate")
def skills_validate(
    path: Annotated[Path, typer.Argument(help="A skill folder or its skill.yaml.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Check a skill manifest (no cluster needed)."""
    try:
        manifest = load_manifest(path)
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    if json_out:
        emit_json(manifest)
        return
    runtime = manifest.runtime.python or " ".join(manifest.runtime.command or [])
    print(f"{manifest.key()} is valid ({manifest.risk.value}, runtime {runtime})")


def render_skills(infos: list[SkillInfo]) -> None:
    """`claw skills list|search`."""
    emit_table(
        ["SKILL", "VERSION", "RISK", "ENABLED", "SOURCE", "NODES", "DESCRIPTION"],
        [
            (
                i.entry.name,
                i.entry.version,
                i.entry.manifest.risk.value,
                "yes" if i.entry.enabled else "no",
                i.entry.source,
                len(i.nodes),
                shorten(i.entry.manifest.description, 60),
            )
            for i in infos
        ],
        empty="no skills match",
    )


def render_skill(infos: list[SkillInfo]) -> None:
    """`claw skills show NAME`: every version, and the enabled one's manifest."""
    enabled = next((i for i in infos if i.entry.enabled), infos[-1])
    m = enabled.entry.manifest
    emit_fields(
        [
            ("skill", m.name),
            ("versions", ", ".join(f"{i.entry.version}{' (enabled)' if i.entry.enabled else ''}" for i in infos)),
            ("description", m.description),
            ("risk", m.risk.value),
            ("capabilities", ", ".join(m.capabilities) or None),
            ("runtime", m.runtime.python or " ".join(m.runtime.command or [])),
            ("timeout", fmt_duration(m.timeout_s) if m.timeout_s else None),
            (
                "retry",
                None
                if m.retry is None
                else f"{m.retry.max_attempts} attempts, backoff {m.retry.base_s:g} s x{m.retry.factor:g}",
            ),
            ("requires labels", ", ".join(f"{k}={v}" for k, v in m.requires_labels.items()) or None),
            ("concurrency", m.concurrency),
            ("source", enabled.entry.source),
            ("checksum", enabled.entry.checksum[:16] or None),
            ("installed", fmt_time(enabled.entry.installed_at) if enabled.entry.installed_at else None),
            ("nodes", ", ".join(enabled.nodes) or "none online"),
        ]
    )
    if m.input_schema is not None:
        print("\ninput schema:")
        print(msgspec.json.format(msgspec.json.encode(m.input_schema), indent=2).decode())


def register(app: typer.Typer) -> None:
    """Add `claw skills ...`."""
    app.add_typer(group, name="skills")
