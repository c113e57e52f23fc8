"""Pieces every pipeline flow shares: settings, alias moves with their audit record, run ids."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks._faults import crash_point
from tasks.audit import AuditLog
from tasks.coordination import registry_slot
from tasks.registry import ModelRegistry
from tasks.settings import PipelineSettings

__all__ = [
    "utc_now",
    "current_flow_run_id",
    "artifact_key",
    "move_alias",
    "move_alias_task",
    "resume_alias_move",
    "settings_for",
]

#: Version tag holding the version ``@<alias>`` pointed at just before it was moved here.
ALIAS_FROM_TAG = "pipeline.alias_from.{alias}"


def utc_now() -> str:
    """Current UTC time, ISO 8601."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def settings_for(root: str | None) -> PipelineSettings:
    """Settings of ``root`` (``UNLEARN_HOME`` or the working directory when ``None``)."""
    return PipelineSettings.from_env(root)


def current_flow_run_id() -> str | None:
    """Id of the Prefect flow run executing this code, or ``None`` outside a flow."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    return str(run_id) if run_id else None


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lower-case letters, digits and dashes only).

    Example:
        >>> artifact_key("unlearn", "GDPR_2025.01")
        'unlearn-gdpr-2025-01'
    """
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:100]


def move_alias(
    settings: PipelineSettings,
    audit: AuditLog,
    name: str,
    alias: str,
    version: int,
    *,
    reason: str,
    verdict: str,
    request_id: str | None,
) -> dict[str, Any]:
    """Point ``name@alias`` at ``version`` and append the ``alias.moved`` audit record.

    Returns:
        The audit payload (model, alias, from_version, to_version, reason, verdict).
    """
    # One alias move at a time across hosts (read, tag, move); on one machine set_alias's
    # flock does it.
    with registry_slot(settings):
        # Kept on the version before the move: if the process dies between the move and its
        # audit record, the retry (resume_alias_move) still records the true from-version.
        before = ModelRegistry.of(settings).get_alias(name, alias)
        ModelRegistry.of(settings).set_version_tags(
            name, version, {ALIAS_FROM_TAG.format(alias=alias): _tag_version(before)}
        )
        previous = ModelRegistry.of(settings).set_alias(name, alias, version)
    crash_point("alias.after_move")
    payload = {
        "request_id": request_id,
        "model": name,
        "alias": alias,
        "from_version": previous,
        "to_version": version,
        "reason": reason,
        "verdict": verdict,
        "flow_run_id": current_flow_run_id(),
    }
    audit.append("alias.moved", payload)
    return payload


# No retries: a retry after the alias moved would record the wrong from_version.
move_alias_task = task(name="move-alias", cache_policy=NO_CACHE)(move_alias)


def _tag_version(version: int | None) -> str:
    return "none" if version is None else str(version)


def resume_alias_move(
    settings: PipelineSettings,
    audit: AuditLog,
    name: str,
    alias: str,
    version: int,
    *,
    reason: str,
    verdict: str,
    request_id: str | None,
) -> dict[str, Any]:
    """Finish an alias move that a killed run may have left half done; never move it backwards.

    * The alias already points at ``version``: the move happened; its ``alias.moved`` record is
      appended only when the crash came before it (from-version read from the version's tag).
    * The alias points at a *newer* version: a later request was promoted meanwhile (and was
      derived from this one or from its successors); moving back would undo that deletion, so
      the alias stays and an ``alias.not_moved`` record says why.
    * Otherwise the move is done now, as :func:`move_alias` does it.

    Returns:
        The audit payload of what was recorded (``moved`` tells whether the alias points here).
    """
    current = ModelRegistry.of(settings).get_alias(name, alias)
    if current == version:
        recorded = [
            r
            for r in audit.find(event="alias.moved", request_id=request_id)
            if r["payload"].get("alias") == alias and r["payload"].get("to_version") == version
        ]
        if recorded:
            return {**recorded[-1]["payload"], "moved": True}
        raw = (
            ModelRegistry.of(settings)
            .version_tags(name, version)
            .get(ALIAS_FROM_TAG.format(alias=alias))
        )
        payload = {
            "request_id": request_id,
            "model": name,
            "alias": alias,
            "from_version": int(raw) if raw and raw.isdigit() else None,
            "to_version": version,
            "reason": f"{reason} (recorded after an interrupted run)",
            "verdict": verdict,
            "flow_run_id": current_flow_run_id(),
        }
        audit.append("alias.moved", payload)
        return {**payload, "moved": True}
    if current is not None and current > version:
        payload = {
            "request_id": request_id,
            "model": name,
            "alias": alias,
            "current_version": current,
            "version": version,
            "reason": f"@{alias} already points at the newer version {current}; not moved back",
            "verdict": verdict,
            "flow_run_id": current_flow_run_id(),
        }
        audit.append("alias.not_moved", payload)
        return {**payload, "moved": False}
    payload = move_alias(
        settings,
        audit,
        name,
        alias,
        version,
        reason=reason,
        verdict=verdict,
        request_id=request_id,
    )
    return {**payload, "moved": True}
