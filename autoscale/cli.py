"""``tfsched recommend``: what the autoscaler would recommend for a usage trace.

An edge around the pure core: it reads the trace (:mod:`tfsched.autoscale.trace`) and
an optional config, replays the samples into the usage histograms, runs
:func:`tfsched.autoscale.recommend.recommend` once at ``--now`` and prints the
estimates, the recommendation, the replicas and the condition — a table, or
with ``--json`` the CR status fields (camelCase) plus ``estimates`` and
``history``.

``--config`` takes YAML holding either ``autoScalingConfig`` fields directly,
``{autoScalingConfig: ..., resources: ...}``, or a whole
TensorFusionWorkload/WorkloadProfile (``spec.autoScalingConfig``,
``spec.resources``).  ``--current`` (``tflops=REQ/LIM,vram=REQ/LIM``)
overrides the config's resources; without either, the recommendation shown is
the estimated target itself.  ``--now`` defaults to the trace's last sample
time, so the output does not depend on the wall clock; samples after
``--now`` are ignored.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
import numpy as np
import orjson

from tfsched.autoscale.bank import UsageBank
from tfsched.autoscale.estimators import ResourceAmounts, ResourceName, confidence, estimate
from tfsched.autoscale.recommend import Recommendation, recommend
from tfsched.autoscale.replicas import ReplicaState, observed_utilization
from tfsched.autoscale.trace import TraceError, UsageRecord, parse_timestamp, read_trace
from tfsched.autoscale.vertical import Action, format_amount
from tfsched.clustermodel.autoscaling_config import AutoScalingConfig, Resources
from tfsched.clustermodel.quantity import QuantityError, format_bytes, parse_quantity
from tfsched.clustermodel.times import duration_ns, format_go_duration, format_time, from_unix_ns, to_unix_ns
from tfsched.clustermodel.yamlfile import YamlFileError, read_yaml, validate_document

# The keys of the ``{autoScalingConfig: ..., resources: ...}`` form (a workload's spec holds more).
_SECTIONS = ("autoScalingConfig", "resources")


def read_config(path: Path) -> tuple[AutoScalingConfig, Resources | None]:
    """The autoscaling config and, when present, the workload's resources from a YAML file.

    Raises :class:`YamlFileError` with every problem found, unknown keys included.
    """
    document = read_yaml(path) or {}
    if not isinstance(document, dict):
        raise YamlFileError([f"{path}: (top level): expected a mapping, got {type(document).__name__}"])
    prefix: tuple[str, ...] = ()
    if isinstance(document.get("spec"), dict):  # a whole workload: other spec fields are not ours to check
        document, prefix = document["spec"], ("spec",)
    found: list[str] = []
    config = AutoScalingConfig()
    resources = None
    if any(key in document for key in _SECTIONS):
        if not prefix:
            found.extend(
                f"{path}: {key}: unknown field; accepted: {', '.join(_SECTIONS)}"
                for key in document
                if key not in _SECTIONS
            )
        section: Any = document.get("autoScalingConfig") or {}
        where = (*prefix, "autoScalingConfig")
    else:
        section, where = document, prefix
    try:
        config = validate_document(section, path, AutoScalingConfig, where)
    except YamlFileError as exc:
        found.extend(exc.problems)
    if document.get("resources"):
        try:
            resources = validate_document(document["resources"], path, Resources, (*prefix, "resources"))
        except YamlFileError as exc:
            found.extend(exc.problems)
    if found:
        raise YamlFileError(found)
    return config, resources


def load_config(path: Path) -> tuple[AutoScalingConfig, Resources | None]:
    """:func:`read_config` for the command line: problems become a ``--config`` usage error."""
    try:
        return read_config(path)
    except YamlFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None


def parse_current(text: str) -> Resources:
    """``tflops=100/200,vram=40Gi/80Gi`` (a missing ``/LIM`` means limit = request)."""
    values: dict[str, tuple[float, float]] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, amount = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in ("tflops", "vram"):
            raise click.BadParameter(
                f"{part.strip()!r}: expected tflops=REQ/LIM or vram=REQ/LIM", param_hint="--current"
            )
        request_text, _, limit_text = amount.partition("/")
        try:
            request = parse_quantity(request_text.strip())
            limit = parse_quantity(limit_text.strip()) if limit_text.strip() else request
        except QuantityError as exc:
            raise click.BadParameter(f"{name}: {exc}", param_hint="--current") from None
        values[name] = (request, limit)
    if not values:
        raise click.BadParameter("expected tflops=REQ/LIM,vram=REQ/LIM", param_hint="--current")
    tflops = values.get("tflops", (0.0, 0.0))
    vram = values.get("vram", (0.0, 0.0))
    return Resources(requests={"tflops": tflops[0], "vram": vram[0]}, limits={"tflops": tflops[1], "vram": vram[1]})


def replay(records: list[UsageRecord], now: datetime) -> tuple[UsageBank, int]:
    """Replay the samples up to ``now`` (in time order) into a one-workload bank."""
    kept = sorted((r for r in records if r.time <= now), key=lambda r: r.time)
    bank = UsageBank(1, 4)
    row = int(bank.add_workloads(1)[0])
    slots = np.array([bank.worker_slot(row, r.worker) for r in kept], dtype=np.int64)
    times = np.array([to_unix_ns(r.time) for r in kept], dtype=np.int64)
    tflops = np.array([np.nan if r.tflops is None else r.tflops for r in kept])
    vram = np.array([np.nan if r.vram is None else r.vram for r in kept])
    bank.add_samples(slots, times, tflops, vram)
    return bank, row


def _replica_state(
    config: AutoScalingConfig, records: list[UsageRecord], current: Resources | None, now: datetime
) -> ReplicaState | None:
    replicas_config = config.auto_set_replicas
    if not replicas_config.enable:
        return None
    start = now - replicas_config.evaluation_period
    recent = [r for r in records if start < r.time <= now]
    workers = {r.worker for r in recent}
    limit = current.limits.tflops if current is not None else 0.0
    utilization = observed_utilization(
        ((r.time, r.tflops) for r in recent if r.tflops is not None), limit, now, replicas_config.evaluation_period
    )
    return ReplicaState(current=len(workers), observed_utilization=utilization)


def _history(bank: UsageBank, row: int) -> dict[str, Any]:
    summary = bank.summary(row)

    def stamp(ns: int | None) -> str | None:
        return None if ns is None else format_time(from_unix_ns(ns))

    return {
        "firstSampleTime": stamp(summary.first_sample_ns),
        "lastSampleTime": stamp(summary.last_sample_ns),
        "totalSamplesCount": summary.total_samples_count,
    }


def history_note(config: AutoScalingConfig, bank: UsageBank, row: int) -> str | None:
    """Why the recommendation is not confident yet, or ``None`` when it is.

    The estimators' confidence (:func:`confidence`: span of TFLOPS samples and their
    count, each against ``confidenceInterval``) below 1 widens the bounds by more
    than the margin VPA settles at; with no samples there is no recommendation.
    """
    summary = bank.summary(row)
    interval = config.auto_set_resources.confidence_interval
    if summary.total_samples_count == 0:
        return "no TFLOPS samples up to --now: nothing to recommend from (the estimates are 0)."
    conf = confidence(
        summary.first_sample_ns, summary.last_sample_ns, summary.total_samples_count, duration_ns(interval)
    )
    if conf >= 1.0:
        return None
    span = timedelta(microseconds=(summary.last_sample_ns - summary.first_sample_ns) // 1000)
    return (
        f"only {format_go_duration(span)} of history ({summary.total_samples_count} TFLOPS samples) for "
        f"confidenceInterval {format_go_duration(interval)} (confidence {conf:.2g} < 1): the bounds are wide "
        "and the recommendation is not confident yet."
    )


def _display(resource: ResourceName, amount: int) -> str:
    """Table cells: TFLOPS exact (short already), VRAM rounded up to Mi as kubectl users read it."""
    if resource == "vram":
        return format_bytes(float(amount), exact=False)
    return format_amount(resource, amount)


def _print_table(result: Recommendation, history: dict[str, Any], has_current: bool, note: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    # 80 columns when not a terminal (pipes, CI logs), so the table is never cut there.
    console = Console(width=None if sys.stdout.isatty() else 80)
    table = Table(title="Usage estimates (VRAM rounded up to Mi)")
    for column in ("resource", "request", "lower bound", "target", "upper bound", "decision"):
        table.add_column(column, no_wrap=True, overflow="fold")
    estimates = result.estimates
    for resource, label in (("tflops", "TFLOPS"), ("vram", "VRAM")):
        decision = result.vertical.decision(resource)
        action = decision.action if decision is not None else Action.NONE
        table.add_row(
            label,
            _display(resource, result.current.requests.get(resource)) if has_current else "-",
            _display(resource, estimates.lower_bound.get(resource)),
            _display(resource, estimates.target.get(resource)),
            _display(resource, estimates.upper_bound.get(resource)),
            action.name.lower().replace("_", " ") if has_current else "-",
        )
    console.print(table)
    status = result.to_status()
    rec = status["recommendation"]
    console.print(
        f"Recommendation: requests tflops={rec['requests']['tflops']} vram={rec['requests']['vram']}, "
        f"limits tflops={rec['limits']['tflops']} vram={rec['limits']['vram']}"
    )
    mode = "applied" if result.to_apply is not None else "recommend only" if result.changed else "no change"
    console.print(f"Mode: {mode}")
    if result.replicas is not None:
        console.print(f"Replicas: {result.replicas.current} → {result.replicas.desired} ({result.replicas.message})")
    if result.cron.active is not None:
        console.print(f"Active cron rule: {result.cron.active.name}")
    for condition in status["conditions"]:
        console.print(
            f"Condition {condition['type']}={condition['status']} ({condition['reason']}): {condition['message']}"
        )
    console.print(
        f"History: {history['totalSamplesCount']} TFLOPS samples from {history['firstSampleTime']} "
        f"to {history['lastSampleTime']}"
    )
    if note is not None:
        console.print(f"Note: {note}", markup=False)


@click.command("recommend")
@click.option(
    "--usage", "usage_path", required=True, type=click.Path(path_type=Path), help="Usage trace (CSV or JSON lines)."
)
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path), help="autoScalingConfig YAML (or a workload)."
)
@click.option("--current", "current_text", help="Current resources: tflops=REQ/LIM,vram=REQ/LIM.")
@click.option("--now", "now_text", help="Evaluation time, RFC 3339 or Unix seconds (default: last sample).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with the CR status field names.")
def recommend_command(
    usage_path: Path, config_path: Path | None, current_text: str | None, now_text: str | None, as_json: bool
) -> None:
    """Recommend GPU resources and replicas from a usage trace."""
    try:
        records = read_trace(usage_path)
    except TraceError as exc:
        raise click.BadParameter(str(exc), param_hint="--usage") from None
    config, resources = load_config(config_path) if config_path is not None else (AutoScalingConfig(), None)
    current = parse_current(current_text) if current_text is not None else resources
    if now_text is not None:
        try:
            now = parse_timestamp(now_text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--now") from None
    else:
        now = max(r.time for r in records)

    bank, row = replay(records, now)
    usage = bank.summary(row)
    estimates = estimate(config.auto_set_resources, usage)
    # Without current resources there is nothing to compare: the target itself is shown.
    current_for_run = current or ResourceAmounts(estimates.target, estimates.target).to_model()
    result = recommend(
        config,
        usage,
        current_for_run,
        now,
        replicas=_replica_state(config, records, current, now),
        estimates=estimates,
    )
    history = _history(bank, row)
    if as_json:
        payload = {**result.to_status(), "estimates": result.estimates_dict(), "history": history}
        click.echo(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_table(result, history, current is not None, history_note(config, bank, row))
