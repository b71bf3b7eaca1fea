"""The outcome of a run: figures, verdicts, exit code, and how they are printed.

Exit codes (``kvcluster torture``):

* 0 -- linearizable, no acknowledged write lost, every fault recovered as it must;
* 1 -- a linearizability violation, a lost acknowledged write, a lease or watch
  violation, or the store
  misbehaved under a fault (a node that did not fail-stop on a broken disk,
  did not rejoin, a corrupt database, a reshape that did not finish);
* 2 -- no verdict: the checker's time budget ran out on some key (nothing
  wrong found; rerun ``kvcluster torture --check HISTORY`` with a larger budget);
* 3 -- the run itself could not be carried out (setup failed, harness error).

Command-line usage errors also exit 2 (click's convention), with a usage message.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from kvcluster.lincheck import Operation, Result, Verdict

EXIT_OK, EXIT_FAIL, EXIT_UNKNOWN, EXIT_ERROR = 0, 1, 2, 3
FUNCS = ("read", "write", "cas", "delete", "cas_delete")
OUTCOMES = ("ok", "fail", "info")


def count_operations(operations: list[Operation]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {f: Counter() for f in FUNCS}
    for operation in operations:
        counts[operation.f][operation.status] += 1
    return {f: {o: counts[f][o] for o in OUTCOMES} for f in FUNCS if sum(counts[f].values())}


def count_errors(operations: list[Operation]) -> dict[str, int]:
    errors: Counter[str] = Counter(
        f"{operation.status}:{operation.error}" for operation in operations if operation.error is not None
    )
    return dict(errors.most_common())


@dataclass
class Summary:
    config: dict[str, Any]
    started_wall: float
    status: str = "error"
    exit_code: int = EXIT_ERROR
    load_seconds: float = 0.0
    total_seconds: float = 0.0
    cluster: dict[str, Any] = field(default_factory=dict)
    operations: dict[str, dict[str, int]] = field(default_factory=dict)
    final_reads: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    processes: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)
    skipped_nemeses: dict[str, str] = field(default_factory=dict)
    verdict: str = Verdict.UNKNOWN.value
    keys: dict[str, int] = field(default_factory=dict)
    """Per-key verdict counts: ok / violation / unknown."""
    check_seconds: float = 0.0
    violations: list[str] = field(default_factory=list)
    """The checker's explanation of each violating key (smallest failing sub-history)."""
    durability: dict[str, Any] = field(default_factory=dict)
    durability_after_heal: dict[str, Any] = field(default_factory=dict)
    lost: int = 0
    leases: dict[str, Any] = field(default_factory=dict)
    """The lease checker's report (``kvcluster.lincheck.leases``); its violations fail the run."""
    watch: dict[str, Any] = field(default_factory=dict)
    """The watch checker's report (``kvcluster.lincheck.watch``; empty: no watcher).

    Its violations fail the run."""
    problems: list[str] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def decide(self) -> None:
        """Set ``status`` and ``exit_code`` from the verdicts (see the module docstring)."""
        if self.harness_errors:
            self.status, self.exit_code = "error", EXIT_ERROR
        elif (
            self.verdict == Verdict.VIOLATION
            or self.lost
            or self.problems
            or not self.durability.get("ok")
            or self.leases.get("violations")
            or self.watch.get("violations")
        ):
            self.status, self.exit_code = "fail", EXIT_FAIL
        elif self.verdict == Verdict.UNKNOWN:
            self.status, self.exit_code = "unknown", EXIT_UNKNOWN
        else:
            self.status, self.exit_code = "pass", EXIT_OK

    def set_check(self, result: Result) -> None:
        self.verdict = result.verdict.value
        self.keys = {v.value: len(result.with_verdict(v)) for v in Verdict}
        self.check_seconds = round(result.elapsed_s, 2)
        violating = sorted(result.violations, key=lambda r: len(r.minimal))
        self.violations = [r.explain() for r in violating]

    def fault_counts(self) -> dict[str, int]:
        return dict(
            Counter(
                f["kind"] for f in self.faults if f.get("variant") != "error" and f["kind"] != "supervisor"
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "verdict": self.verdict,
            "lost": self.lost,
            "config": self.config,
            "started_wall": self.started_wall,
            "load_seconds": self.load_seconds,
            "total_seconds": self.total_seconds,
            "cluster": self.cluster,
            "operations": self.operations,
            "final_reads": self.final_reads,
            "errors": self.errors,
            "processes": self.processes,
            "fault_counts": self.fault_counts(),
            "faults": self.faults,
            "skipped_nemeses": self.skipped_nemeses,
            "keys": self.keys,
            "check_seconds": self.check_seconds,
            "violations": self.violations,
            "durability": self.durability,
            "durability_after_heal": self.durability_after_heal,
            "leases": self.leases,
            "watch": self.watch,
            "problems": self.problems,
            "harness_errors": self.harness_errors,
            "phases": self.phases,
            "files": self.files,
        }


_STATUS_STYLE = {"pass": "bold green", "fail": "bold red", "unknown": "bold yellow", "error": "bold magenta"}


def _fault_detail(fault: dict[str, Any]) -> str:
    observed = fault.get("observed", {})
    kind = fault["kind"]
    if kind == "crash":
        killed = observed.get("killed", {})
        restarted = observed.get("restarted", {})
        parts = [f"n{n}: pid {k['pid']}->{restarted.get(n, '?')}" for n, k in killed.items()]
        return ", ".join(parts)
    if kind == "pause":
        if "new_leader" in observed:
            return (
                f"p{observed.get('partition')}: leader n{fault['targets'][0]} -> n{observed['new_leader']}"
                f" after {observed.get('new_leader_seen_after_s')}s; paused {observed.get('paused_s')}s"
            )
        return f"paused {observed.get('paused_s')}s"
    if kind == "partition":
        text = f"groups {observed.get('groups')}"
        if "minority_frozen" in observed:
            text += (
                f"; minority frozen: {observed['minority_frozen']}"
                f" ({observed.get('minority_replicas')} replicas)"
                f", majority applied +{observed.get('majority_progress')}"
            )
        if "bridge" in observed:
            text += f"; bridge n{observed['bridge']}"
        return text
    if kind == "disk":
        return (
            f"exit {observed.get('exit')} after {observed.get('fail_stop_after_s')}s"
            f"; quick_check {observed.get('quick_check')}"
            f"; caught up after {observed.get('caught_up_after_s')}"
        )
    if kind == "supervisor":
        return f"restarted a node that died on its own; caught up after {observed.get('caught_up_after_s')}"
    if kind == "reshape":
        return f"{observed.get('state')} in {observed.get('took_s')}s, {observed.get('steps')} steps"
    if kind == "reshape-script":
        text = (
            f"{observed.get('took_s')}s, {observed.get('steps')} steps; ops/s {observed.get('rate_before')}"
            f" before, {observed.get('rate_during')} during"
        )
        if "killed" in observed:
            text += f"; kill -9 n{observed['killed']} at step {observed.get('killed_at_step')}"
        return text
    return ""


def render(summary: Summary, console: Console) -> None:
    """Print the summary of a run: the tables a person reads after a run."""
    cfg = summary.config
    console.rule(f"[bold]kvcluster torture: seed {cfg.get('seed')}")
    console.print(
        f"workload {cfg.get('workload')}, nemeses {','.join(cfg.get('nemeses', [])) or 'none'}, "
        f"{cfg.get('nodes')} nodes, {cfg.get('partitions')} partitions x {cfg.get('replicas')} replicas, "
        f"{cfg.get('keys')} keys, {cfg.get('concurrency')} clients, load {summary.load_seconds:.0f}s "
        f"(run {summary.total_seconds:.0f}s); network: {summary.cluster.get('network', 'loopback')}"
    )
    ops = Table(title="operations", show_edge=False)
    ops.add_column("op")
    for outcome in OUTCOMES:
        ops.add_column(outcome, justify="right")
    ops.add_column("total", justify="right")
    totals: Counter[str] = Counter()
    for f, counts in summary.operations.items():
        ops.add_row(f, *(str(counts[o]) for o in OUTCOMES), str(sum(counts.values())))
        totals.update(counts)
    ops.add_row("[bold]all", *(f"[bold]{totals[o]}" for o in OUTCOMES), f"[bold]{sum(totals.values())}")
    console.print(ops)
    console.print(f"client processes: {summary.processes}; errors: {summary.errors or 'none'}")
    if summary.faults:
        faults = Table(title=f"faults ({summary.fault_counts()})", show_edge=False)
        for column in ("#", "at s", "healed s", "fault", "targets", "observed"):
            faults.add_column(column)
        for fault in summary.faults:
            healed = fault.get("healed")
            faults.add_row(
                str(fault["id"]),
                f"{fault['started']:.1f}",
                "-" if healed is None else f"{healed:.1f}",
                f"{fault['kind']}/{fault['variant']}",
                ",".join(str(t) for t in fault["targets"]),
                _fault_detail(fault),
            )
        console.print(faults)
    for name, reason in summary.skipped_nemeses.items():
        console.print(f"[yellow]skipped nemesis {name}: {reason}")
    console.print(
        f"checker: [bold]{summary.verdict}[/bold] -- keys {summary.keys} in {summary.check_seconds}s"
    )
    for text in summary.violations[:3]:
        console.print(text, markup=False, highlight=False)
    if len(summary.violations) > 3:
        console.print(f"... and {len(summary.violations) - 3} more violating keys (see summary.json)")
    durability = summary.durability
    console.print(
        f"durability (all nodes restarted): {durability.get('acknowledged', 0)} acknowledged mutations"
        f" on {durability.get('keys', 0)} keys, [bold]{summary.lost} lost[/bold]"
        + (f", unread keys {durability['unread']}" if durability.get("unread") else "")
        + (f", phantoms {durability['phantoms']}" if durability.get("phantoms") else "")
    )
    for line in durability.get("lost_details", [])[:10]:
        console.print(f"  {line}", markup=False, highlight=False)
    if summary.leases:
        lease = summary.leases
        console.print(
            f"leases: {lease.get('episodes', 0)} episodes, {lease.get('revoked', 0)} revoked,"
            f" {lease.get('expired', 0)} expired, {lease.get('checked_reads', 0)} reads checked,"
            f" [bold]{len(lease.get('violations') or [])} violations[/bold]"
            + (f", {len(lease['late'])} late expiries" if lease.get("late") else "")
        )
        for text in (lease.get("violations") or [])[:5]:
            console.print(f"  {text}", markup=False, highlight=False)
    if summary.watch:
        watch = summary.watch
        console.print(
            f"watch: {watch.get('events', 0)} events ({watch.get('puts', 0)} puts, {watch.get('deletes', 0)}"
            f" deletes, {watch.get('expires', 0)} expires), {watch.get('acknowledged', 0)} acknowledged"
            f" writes looked for, {watch.get('lease_reads_checked', 0)} lease reads after an expiry,"
            f" {watch.get('reconnects', 0)} reconnects,"
            f" [bold]{watch.get('violation_count', 0)} violations[/bold]"
            + ("" if watch.get("complete", True) else " (record cut short: missing writes not judged)")
        )
        for text in (watch.get("violations") or [])[:5]:
            console.print(f"  {text}", markup=False, highlight=False)
    for problem in summary.problems:
        console.print(f"[red]problem: {problem}", highlight=False)
    for error in summary.harness_errors:
        console.print(f"[magenta]harness error: {error}", highlight=False)
    if summary.files:
        console.print("files: " + ", ".join(f"{k} {v}" for k, v in summary.files.items()))
    style = _STATUS_STYLE.get(summary.status, "bold")
    console.print(f"[{style}]{summary.status.upper()}[/] (exit {summary.exit_code})")
