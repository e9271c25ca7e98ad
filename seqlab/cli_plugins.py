"""``seqlab plugins`` and ``seqlab check-plugin``: what is installed, and does it conform.

``plugins`` imports every plugin (that is the only way to know one is broken) but a
broken one is listed with its reason, never allowed to end the listing. ``check-plugin``
runs the conformance kit and exits 1 when a rule fails (an expected failure that
passes, ``xpass``, counts as one; an ``xfail`` does not). torch and the kit are imported
inside the commands, so loading the CLI stays fast.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer


def plugins_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list instead of a table.")
    ] = False,
) -> None:
    """List every installed plugin: name, distribution, version, ok or broken (and why)."""
    from pipeline_core.registry import inspect_all

    infos = inspect_all()
    if as_json:
        print(json.dumps([info.as_dict() for info in infos], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="seqlab plugins (entry-point group seqlab.models)")
    for column in ("name", "distribution", "version", "status", "reason"):
        table.add_column(column, overflow="fold")
    for info in infos:
        status = "[green]ok[/green]" if info.ok else "[red]broken[/red]"
        table.add_row(info.name, info.distribution, info.version, status, info.error or "")
    Console().print(table)
    if not infos:
        print("no plugins installed in the entry-point group seqlab.models")


def check_plugin_command(
    name: Annotated[str, typer.Argument(help="A plugin name, as listed by `seqlab plugins`.")],
) -> None:
    """Run the conformance kit on one plugin; exit 1 if any rule fails."""
    from rich.console import Console
    from rich.table import Table

    from pipeline_core.registry import load_plugin
    from pipeline_core.testing import check_plugin

    plugin_cls = load_plugin(name)  # unknown or broken: PluginError, exit 2
    results = check_plugin(plugin_cls, name)
    table = Table(title=f"conformance of plugin '{name}' ({plugin_cls.__module__})")
    table.add_column("check")
    table.add_column("result")
    table.add_column("s", justify="right")
    table.add_column("message", overflow="fold")
    styles = {
        "passed": "[green]pass[/green]",
        "failed": "[red]FAIL[/red]",
        "skipped": "n/a",
        "xfail": "[yellow]xfail[/yellow]",
        "xpass": "[red]XPASS[/red]",
    }
    for res in results:
        table.add_row(res.check, styles[res.status], f"{res.seconds:.2f}", res.message)
    console = Console()
    console.print(table)
    failed = [res.check for res in results if not res.passed]  # failed, or xpass
    total = sum(res.seconds for res in results)
    if failed:
        console.print(f"{len(failed)} of {len(results)} checks failed: {', '.join(failed)}")
        raise typer.Exit(1)
    counts = {status: sum(res.status == status for res in results) for status in styles}
    summary = f"{counts['passed']} passed, {counts['skipped']} not applicable"
    if counts["xfail"]:
        summary += f", {counts['xfail']} expected to fail"
    console.print(f"no check failed: {summary} ({total:.1f} s)")


def register(app: typer.Typer) -> None:
    """Add the plugin commands to ``app``."""
    app.command("plugins")(plugins_command)
    app.command("check-plugin")(check_plugin_command)
