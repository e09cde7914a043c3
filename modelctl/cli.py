"""The command line: parse, call the controller, render. Nothing else happens here.

People get rich tables and a live progress line; scripts get one JSON document with --json
and the exit codes of DESIGN.md; without a TTY the output is plain text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import __version__
from .controller import Controller, SwitchResult
from .report import plan_json, status_json, switch_json
from .errors import ModelctlError, NotReadyError, UsageError
from .gpu import gpu_budget
from .plan import MAX_UTILIZATION
from .profiles import Profile, load_profiles
from .settings import Settings, load_settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Keep exactly one vLLM model running on this GPU, and swap it with one command.",
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]


# --- plumbing ------------------------------------------------------------------------------


def _fail(error: ModelctlError, as_json: bool) -> NoReturn:
    """Render an error once, in the form the caller asked for, and exit with its code."""
    if as_json:
        body: dict[str, Any] = {"message": error.message, "code": error.exit_code}
        if error.hint:
            body["hint"] = error.hint
        if isinstance(error, NotReadyError) and error.log_tail:
            body["log_tail"] = error.log_tail
        print(json.dumps({"error": body}))
    else:
        err.print(Text(f"error: {error.message}", style="bold red"))
        if error.hint:
            err.print(Text(f"  -> {error.hint}", style="yellow"))
        if isinstance(error, NotReadyError) and error.log_tail:
            err.print(Text("  last lines of the container log:", style="dim"))
            for line in error.log_tail.splitlines()[-8:]:
                err.print(Text(f"    {line}", style="dim"))
    raise typer.Exit(error.exit_code)


def _run(as_json: bool, body: Callable[[], None]) -> None:
    try:
        body()
    except ModelctlError as error:
        _fail(error, as_json)


def _emit(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _context(progress=None) -> tuple[Settings, dict[str, Profile], Controller]:
    from .runtime import DockerRuntime

    settings = load_settings()
    profiles = load_profiles(settings.profiles_dir)
    runtime = DockerRuntime()
    controller = Controller(settings, runtime, profiles, gpu_budget(settings), progress or (lambda p, d: None))
    return settings, profiles, controller


class _ProgressLine:
    """A live line for people: phase, elapsed seconds and the container's last log line."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive
        self.phase = "starting"
        self.detail = ""
        self.started = time.monotonic()
        self.live: Live | None = None

    def __call__(self, phase: str, detail: str) -> None:
        changed = phase != self.phase
        self.phase, self.detail = phase, detail or (self.detail if not changed else "")
        if not self.interactive and changed:
            print(f"[{time.monotonic() - self.started:6.1f}s] {phase} {detail}".rstrip(), file=sys.stderr, flush=True)

    def __rich__(self) -> Text:
        line = Text()
        line.append(f"{self.phase:<8}", style="bold cyan")
        line.append(f"{time.monotonic() - self.started:6.1f}s  ", style="dim")
        line.append(self.detail[: max(10, err.width - 20)])
        return line

    def __enter__(self) -> _ProgressLine:
        if self.interactive:
            self.live = Live(self, console=err, refresh_per_second=8, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.__exit__(None, None, None)


def _progress(as_json: bool) -> _ProgressLine | None:
    return None if as_json else _ProgressLine(interactive=err.is_terminal)


def _phases_text(phases: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f}s" for name, seconds in phases.items())


# --- commands ------------------------------------------------------------------------------


@app.command("list")
def list_profiles(as_json: JsonOption = False) -> None:
    """The profiles, with what each takes on this GPU."""

    def body() -> None:
        settings = load_settings()
        profiles = load_profiles(settings.profiles_dir)
        gpu = gpu_budget(settings)
        from .plan import make_plan

        plans = [make_plan(p, gpu, settings) for p in profiles.values()]
        if as_json:
            _emit([plan_json(plan) for plan in plans])
            return
        table = Table(title=f"profiles in {settings.profiles_dir} - GPU {gpu.total_gib:g} GiB, {gpu.source}")
        for column in ("name", "model", "vram GiB", "utilization", "fits", "port", "image"):
            table.add_column(column)
        for plan in plans:
            data = plan_json(plan)
            table.add_row(
                data["profile"], data["model"], f"{data['vram_gib']:g}", f"{data['gpu_memory_utilization']:.2f}",
                "yes" if data["fits"] else "[red]no[/red]", str(data["port"]), data["image"],
            )  # fmt: skip
        out.print(table)

    _run(as_json, body)


@app.command()
def show(name: str, as_json: JsonOption = False) -> None:
    """The plan for one profile and the equivalent `docker run` line."""

    def body() -> None:
        settings = load_settings()
        profiles = load_profiles(settings.profiles_dir)
        from .plan import make_plan
        from .profiles import find_profile

        plan = make_plan(find_profile(profiles, name), gpu_budget(settings), settings)
        data = plan_json(plan)
        if as_json:
            _emit(data)
            return
        for key in ("profile", "model", "image", "served_model", "vram_gib", "max_model_len", "max_num_seqs", "port"):
            out.print(f"{key:<24}{data[key]}")
        out.print(f"{'gpu':<24}{plan.gpu.total_gib:g} GiB, {plan.gpu.source}")
        fits = "fits" if data["fits"] else f"[red]does not fit[/red] (max {MAX_UTILIZATION:.2f})"
        out.print(f"{'gpu_memory_utilization':<24}{plan.utilization:.2f} = {plan.profile.vram_gib:g} / "
                  f"{plan.gpu.total_gib:g} GiB rounded up - {fits}")  # fmt: skip
        out.print(f"{'url':<24}{plan.url}")
        out.print("\nequivalent docker run:")
        out.print(data["docker_run"], markup=False, highlight=False)

    _run(as_json, body)


@app.command()
def switch(
    name: str,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for the model to be ready.")] = None,
    lock_timeout: Annotated[float, typer.Option(help="Seconds to wait for another switch.")] = 600.0,
    no_rollback: Annotated[bool, typer.Option("--no-rollback", help="On failure, leave nothing running.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Stop every vLLM container, start NAME, and return once it answers /v1/models."""
    _run(as_json, lambda: _do_switch(name, timeout, lock_timeout, not no_rollback, dry_run, as_json))


def _do_switch(
    name: str, timeout: float | None, lock_timeout: float, rollback: bool, dry_run: bool, as_json: bool
) -> SwitchResult:
    progress = _progress(as_json)
    _, _, controller = _context(progress)
    with progress or _nothing():
        result = controller.switch(name, timeout_s=timeout, lock_timeout_s=lock_timeout, rollback=rollback, dry_run=dry_run)
    if as_json:
        _emit(switch_json(result))
    else:
        verb = {"switched": "switched to", "unchanged": "already running:", "planned": "would switch to"}[result.outcome]
        stopped = f"; stopped {', '.join(result.stopped)}" if result.stopped else ""
        out.print(f"{verb} {result.profile} in {result.total_s:.2f}s ({_phases_text(result.phases)}){stopped} - {result.url}",
                  markup=False, highlight=False)  # fmt: skip
    return result


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@app.command()
def status(as_json: JsonOption = False) -> None:
    """What runs now: the active model, whether it answers, and every vLLM container."""

    def body() -> None:
        _, _, controller = _context()
        data = status_json(controller.status())
        if as_json:
            _emit(data)
            return
        active = data["active"]
        if active:
            ready = "[green]ready[/green]" if active["ready"] else "[yellow]not answering[/yellow]"
            out.print(f"active: {active['profile']} ({active['container']}) {ready} at {active['url']}")
        else:
            out.print("active: none")
        out.print(f"gpu: {data['gpu']['total_gib']:g} GiB, {data['gpu']['source']}")
        if data["containers"]:
            table = Table("name", "profile", "state", "image")
            for c in data["containers"]:
                table.add_row(c["name"], c["profile"] or "[dim](foreign)[/dim]", c["state"], c["image"])
            out.print(table)

    _run(as_json, body)


@app.command()
def stop(
    lock_timeout: Annotated[float, typer.Option(help="Seconds to wait for another switch.")] = 600.0,
    as_json: JsonOption = False,
) -> None:
    """Stop every vLLM container, modelctl's and foreign ones."""

    def body() -> None:
        _, _, controller = _context()
        stopped = controller.stop(lock_timeout_s=lock_timeout)
        if as_json:
            _emit({"stopped": stopped})
        else:
            out.print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")

    _run(as_json, body)


@app.command()
def logs(
    name: Annotated[str | None, typer.Argument(help="Profile or container; default: the active one.")] = None,
    tail: Annotated[int, typer.Option(help="Lines from the end.")] = 100,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
) -> None:
    """The log of a model container (kept after a failed start, for the post-mortem)."""

    def body() -> None:
        from .profiles import find_profile

        settings, profiles, controller = _context()
        runtime = controller.runtime
        if name is None:
            active = controller.status().active
            if active is None:
                raise UsageError("no model is active", hint="name a profile: modelctl logs NAME")
            container = active.container
        else:
            container = f"modelctl-{find_profile(profiles, name).name}" if _known(profiles, name) else name
        info = runtime.container(container)
        if info is None:
            raise UsageError(f"no container {container} on this engine", hint="see `modelctl status`")
        if follow:
            for chunk in runtime.follow_logs(info.id, tail=tail):
                sys.stdout.write(chunk)
                sys.stdout.flush()
        else:
            sys.stdout.write(runtime.logs(info.id, tail=tail))

    _run(False, body)


def _known(profiles: dict[str, Profile], name: str) -> bool:
    return any(name in p.names for p in profiles.values())


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    name: str,
    command: Annotated[list[str], typer.Argument(help="The command to run once NAME is ready (after --).")],
    restore: Annotated[bool, typer.Option("--restore", help="Put the previous model back afterwards.")] = False,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for the model to be ready.")] = None,
    lock_timeout: Annotated[float, typer.Option(help="Seconds to wait for another switch.")] = 600.0,
) -> None:
    """Switch to NAME, run CMD with OPENAI_BASE_URL set, and pass its exit code through."""

    def body() -> None:
        _, _, controller = _context()
        active = controller.status().active
        result = _do_switch(name, timeout, lock_timeout, True, False, False)
        code = _call_with_model(command, result)
        if restore:
            _restore(active.profile if active else None, lock_timeout)
        raise typer.Exit(code)

    _run(False, body)


def _call_with_model(command: list[str], result: SwitchResult) -> int:
    """Run CMD (no shell) with the model's URL and name in its environment; its exit code."""
    env = {
        **os.environ,
        "OPENAI_BASE_URL": result.url,
        "OPENAI_API_BASE": result.url,
        "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "EMPTY"),  # vLLM needs none; clients want one
        "MODELCTL_MODEL": result.served_model,
        "OPENAI_MODEL": result.served_model,
    }
    try:
        return subprocess.call(command, env=env)
    except FileNotFoundError:
        raise UsageError(f"command not found: {command[0]}") from None


def _restore(profile: str | None, lock_timeout: float) -> None:
    """Put back what ran before `run`: the previous profile, or nothing."""
    _, _, controller = _context(_progress(False))
    if profile is None:
        controller.stop(lock_timeout_s=lock_timeout)
        err.print("restored: no model (none ran before)")
    else:
        result = controller.switch(profile, lock_timeout_s=lock_timeout)
        err.print(f"restored {result.profile} in {result.total_s:.2f}s")


@app.command()
def doctor(as_json: JsonOption = False) -> None:
    """Check the engine, the profiles and the ports, each with a fix."""
    from .doctor import run_checks

    checks = run_checks()
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        _emit({"ok": not failed, "checks": [asdict(c) for c in checks]})
    else:
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in checks:
            line = Text()
            line.append(f"{c.status:<5}", style=f"bold {colour[c.status]}")
            line.append(f"{c.name:<22}{c.detail}")
            if c.fix and c.status != "ok":
                line.append(f"  -> {c.fix}", style="yellow")
            out.print(line)
    raise typer.Exit(1 if failed else 0)


@app.command()
def version() -> None:
    """Print modelctl's version."""
    out.print(__version__)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
