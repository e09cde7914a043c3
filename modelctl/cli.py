"""The command line: parse, call a backend, render. Nothing else happens here.

People get rich tables and a live progress line; scripts get one JSON document with --json
and the exit codes of the README; without a TTY the output is plain text. The verbs that act
(switch, stop, status, run) go through one `Backend` (backend.py): this host's engine, or the
service at MODELCTL_URL; both return the same typed results, rendered here once.

Imports are made where a verb needs them: `modelctl --help` and `modelctl version` load neither
docker, httpx, pynvml nor the service stack (tests/test_cli.py checks it).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from . import __version__
from .errors import ModelctlError, NotReadyError, UsageError

if TYPE_CHECKING:
    from rich.live import Live

    from .backend import Backend, LocalBackend
    from .footprints import Footprint
    from .plan import Plan
    from .progress import PhaseClock
    from .results import GpuReport, SwitchResult
    from .settings import Settings

app = typer.Typer(
    add_completion=False,
    # A traceback must never print frame locals: they hold HF_TOKEN and the API token.
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    help="Keep exactly one vLLM model running on this GPU, and swap it with one command.",
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]
DEFAULT_LOCK_TIMEOUT_S = 600.0  # the controller's and the API's default too


# --- plumbing ------------------------------------------------------------------------------


def _fail(error: ModelctlError, as_json: bool) -> NoReturn:
    """Render an error once, in the form the caller asked for, and exit with its code."""
    if as_json:
        from .report import error_json

        print(json.dumps(error_json(error)))
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
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # a cause nobody named yet: still one message, exit 1, JSON if asked
        _fail(ModelctlError(f"unexpected error: {type(exc).__name__}: {exc}"), as_json)


def _emit(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _settings() -> Settings:
    from .settings import load_settings

    return load_settings()


def _backend() -> Backend:
    """The service at MODELCTL_URL when set, else this host's engine: switch, stop, status, run."""
    from .backend import make_backend

    return make_backend(_settings())


def _local() -> LocalBackend:
    """This host's engine and GPU, whatever MODELCTL_URL says: gpu and logs read them directly."""
    from .backend import LocalBackend

    return LocalBackend(_settings())


def _check_seconds(option: str, value: float | None) -> None:
    """A wait in seconds: 0 or more and finite (the API refuses the same values with 400)."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise UsageError(
            f"{option}: expected a number of seconds, 0 or more, got {value:g}",
            hint=f"give {option} a finite number of seconds, such as {option} 600",
        )


class _ProgressLine:
    """A live line for people: phase, elapsed seconds and the container's last log line.

    It is the listener of the operation's PhaseClock, which times everything (phases and elapsed).
    """

    def __init__(self, interactive: bool) -> None:
        from .progress import PhaseClock

        self.interactive = interactive
        self.phase = "starting"
        self.detail = ""
        self.clock: PhaseClock = PhaseClock(self)
        self.live: Live | None = None

    def __call__(self, phase: str, detail: str) -> None:
        changed = phase != self.phase
        self.phase, self.detail = phase, detail or (self.detail if not changed else "")
        if not self.interactive and changed:
            print(f"[{self.clock.elapsed:6.1f}s] {phase} {detail}".rstrip(), file=sys.stderr, flush=True)

    def __rich__(self) -> Text:
        line = Text()
        line.append(f"{self.phase:<8}", style="bold cyan")
        line.append(f"{self.clock.elapsed:6.1f}s  ", style="dim")
        line.append(self.detail[: max(10, err.width - 20)])
        return line

    def __enter__(self) -> _ProgressLine:
        if self.interactive:
            from rich.live import Live

            self.live = Live(self, console=err, refresh_per_second=8, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.__exit__(None, None, None)


def _progress(as_json: bool) -> _ProgressLine | None:
    return None if as_json else _ProgressLine(interactive=err.is_terminal)


# --- commands ------------------------------------------------------------------------------


@app.command("list")
def list_profiles(as_json: JsonOption = False) -> None:
    """The profiles, with what each takes on this GPU."""

    def body() -> None:
        from rich.table import Table

        from .catalog import Catalog
        from .gpu import NvmlGpu
        from .report import plan_json

        settings = _settings()
        catalog = Catalog(settings.profiles_dir)
        gpu = NvmlGpu(settings).read().budget(settings)
        plans = catalog.plans(gpu, settings)
        if as_json:
            _emit([plan_json(plan) for plan in plans])  # a contract: valid profiles only
            return
        table = Table(title=f"profiles in {settings.profiles_dir} - GPU {gpu.total_gib:.2f} GiB, {gpu.source}")
        for column in ("name", "model", "tier", "vram GiB", "utilization", "fits", "port"):
            table.add_column(column)
        for plan in plans:
            sizing = plan.sizing
            table.add_row(
                plan.profile.name,
                plan.profile.model,
                f"{sizing.tier_gib} GiB" if sizing.tier_gib else "-",
                f"{sizing.vram_gib:g}",
                f"{plan.utilization:.2f}",
                "yes" if plan.fits else "[red]no[/red]",
                str(plan.profile.port),
            )
        for bad in catalog.load().invalid:  # skipped, never fatal: shown as an error row
            table.add_row(bad.path.stem, Text(f"invalid: {bad.error.message}", style="red"), "-", "-", "-", "-", "-")
        out.print(table)

    _run(as_json, body)


@app.command()
def show(name: str, as_json: JsonOption = False) -> None:
    """The plan for one profile and the equivalent `docker run` line."""

    def body() -> None:
        from .catalog import Catalog
        from .footprints import read_footprints
        from .gpu import NvmlGpu
        from .plan import make_plan
        from .report import plan_json

        settings = _settings()
        profile = Catalog(settings.profiles_dir).find(name)
        plan = make_plan(profile, NvmlGpu(settings).read().budget(settings), settings)
        measured = read_footprints(settings.state_dir).get(plan.profile.name)
        if as_json:
            _emit(plan_json(plan, measured))
            return
        _print_plan(plan, measured)

    _run(as_json, body)


def _print_plan(plan: Plan, measured: Footprint | None) -> None:
    from .plan import MAX_UTILIZATION

    p, sizing = plan.profile, plan.sizing
    for key, value in (("profile", p.name), ("model", p.model), ("image", p.image)):
        out.print(f"{key:<24}{value}", markup=False)
    out.print(f"{'served_model':<24}{p.served_name}", markup=False)
    out.print(f"{'port':<24}{p.port}", markup=False)
    out.print(f"{'gpu':<24}{plan.gpu.total_gib:.2f} GiB, {plan.gpu.source}", markup=False)
    out.print(f"{'sizing':<24}{sizing.reason}", markup=False)
    for key, value in (
        ("vram_gib", sizing.vram_gib),
        ("max_model_len", sizing.max_model_len),
        ("max_num_seqs", sizing.max_num_seqs),
    ):
        out.print(f"{key:<24}{value}")
    if measured:
        warn = " [red]- more than vram_gib: raise it[/red]" if measured.exceeds else ""
        out.print(f"{'measured':<24}{measured.measured_gib:.2f} GiB held once ready{warn}")
    fits = "fits" if plan.fits else f"[red]does not fit[/red] (max {MAX_UTILIZATION:.2f})"
    out.print(
        f"{'gpu_memory_utilization':<24}{plan.utilization:.2f} = {sizing.vram_gib:g} / "
        f"{plan.gpu.total_gib:.2f} GiB rounded up - {fits}"
    )
    out.print(f"{'url':<24}{plan.url}")
    out.print("\nequivalent docker run:")
    out.print(plan.docker_run_line(), markup=False, highlight=False)


LockTimeoutOption = Annotated[float, typer.Option(help="Seconds to wait for another switch.")]
TimeoutOption = Annotated[float | None, typer.Option(help="Seconds to wait for the model to be ready.")]


@app.command()
def switch(
    name: str,
    timeout: TimeoutOption = None,
    lock_timeout: LockTimeoutOption = DEFAULT_LOCK_TIMEOUT_S,
    no_rollback: Annotated[bool, typer.Option("--no-rollback", help="On failure, leave nothing running.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Stop every vLLM container, start NAME, and return once it answers /v1/models."""

    def body() -> None:
        _check_seconds("--timeout", timeout)
        _check_seconds("--lock-timeout", lock_timeout)
        _do_switch(_backend(), name, timeout, lock_timeout, not no_rollback, dry_run, as_json)

    _run(as_json, body)


def _do_switch(
    backend: Backend,
    name: str,
    timeout: float | None,
    lock_timeout: float,
    rollback: bool,
    dry_run: bool,
    as_json: bool,
    to: Console = out,
) -> SwitchResult:
    # The live line only where the backend feeds the clock as it works (the engine, here).
    line = _progress(as_json) if backend.feeds_clock else None
    with line or nullcontext():
        result = backend.switch(
            name,
            timeout=timeout,
            lock_timeout=lock_timeout,
            rollback=rollback,
            dry_run=dry_run,
            clock=line.clock if line else None,
        )
    if as_json:
        from .report import switch_json

        _emit(switch_json(result))  # the warnings are in the document
        return result
    from .report import phases_text

    for warning in result.warnings:
        err.print(Text(f"warning: {warning}", style="yellow"))
    verb = {"switched": "switched to", "unchanged": "already running:", "planned": "would switch to"}[result.outcome]
    stopped = f"; stopped {', '.join(result.stopped)}" if result.stopped else ""
    to.print(
        f"{verb} {result.profile} in {result.total_s:.2f}s ({phases_text(result.phases)}){stopped} - {result.url}",
        markup=False,
        highlight=False,
    )
    return result


@app.command()
def status(as_json: JsonOption = False) -> None:
    """What runs now: the active model, whether it answers, and every vLLM container."""

    def body() -> None:
        from .report import operation_json, status_json

        seen = _backend().status()
        for warning in seen.status.warnings:  # invalid profile files, skipped
            err.print(Text(f"warning: {warning}", style="yellow"))
        if as_json:
            data = status_json(seen.status)
            if seen.knows_operations:  # the service's document says what is under way (null: nothing)
                data["switch"] = operation_json(seen.operation)
            _emit(data)
            return
        if seen.operation:
            op = seen.operation
            out.print(f"under way: {op.operation} {op.target or ''} - {op.phase} since {op.since}", markup=False)
        active = seen.status.active
        if active:
            ready = "[green]ready[/green]" if active.ready else "[yellow]not answering[/yellow]"
            out.print(f"active: {active.profile} ({active.container}) {ready} at {active.url}")
        else:
            out.print("active: none")
        _print_gpu(seen.status.gpu, brief=True)
        for profile, measured in seen.status.footprints.items():
            if measured.exceeds:
                out.print(
                    f"[yellow]warn[/yellow]: {profile} measured {measured.measured_gib:.2f} GiB, "
                    f"more than its vram_gib {measured.vram_gib:g}"
                )
        if seen.status.containers:
            from rich.table import Table

            table = Table("name", "profile", "state", "image")
            for c in seen.status.containers:
                state = c.state
                if seen.status.sleeping.get(c.id):  # a sleeper: what it keeps on the GPU
                    kept = seen.status.residual_gib.get(c.id)
                    state += " (asleep" + (f", {kept:.2f} GiB on the GPU)" if kept is not None else ")")
                table.add_row(c.name, c.profile or "[dim](foreign)[/dim]", state, c.image)
            out.print(table)

    _run(as_json, body)


def _gib(value: float) -> float:
    """GiB as the JSON documents carry them (3 decimals), so text and --json never disagree."""
    return round(value, 3)


def _print_gpu(report: GpuReport, brief: bool = False) -> None:
    """The GPU for people: the mode in words first, then devices and who holds memory."""
    state = report.state
    if state.mode != "nvml":
        used = report.estimated_used_gib
        out.print(
            f"gpu: no GPU reading ({state.reason or None}) - degraded mode, planning for "
            f"{_gib(report.budget.total_gib):g} GiB (MODELCTL_GPU_TOTAL_GIB)",
            markup=False,
        )
        if used is not None:
            out.print(f"     used, estimated from the running models' vram_gib: {used:g} GiB")
        _print_asleep(report)
        return
    for d in state.devices:
        out.print(
            f"gpu {d.index}: {d.name}, {_gib(d.total_gib):.2f} GiB, {_gib(d.used_gib):.2f} used, "
            f"{_gib(d.free_gib):.2f} free (driver {state.driver_version})",
            markup=False,
        )
    _print_asleep(report)
    if report.holders is None:
        out.print("processes: NVML cannot list them here (WSL2?): memory is reported, its holders are not")
    elif not brief and report.holders:
        from rich.table import Table

        table = Table("gpu", "pid", "process", "GiB", "container")
        for h in report.holders:
            used = f"{h.used_gib:.2f}" if h.used_gib is not None else "?"
            table.add_row(str(h.device), str(h.pid), h.name, used, h.container or "[dim](host)[/dim]")
        out.print(table)


def _print_asleep(report: GpuReport) -> None:
    """Sleepers and what each keeps on the GPU."""
    if report.asleep:
        how = "measured by process" if report.asleep_measured else "assumed: sleep_vram_gib or the last measurement"
        kept = ", ".join(f"{name} {gib:.2f} GiB" for name, gib in report.asleep.items())
        out.print(f"asleep: {kept} ({how})", markup=False)


@app.command()
def gpu(as_json: JsonOption = False) -> None:
    """The GPU: size, free memory, driver, and which process or container holds memory."""

    def body() -> None:
        report = _local().controller.gpu_report()
        if as_json:
            from .report import gpu_json

            _emit(gpu_json(report))
        else:
            _print_gpu(report)

    _run(as_json, body)


@app.command()
def stop(
    lock_timeout: LockTimeoutOption = DEFAULT_LOCK_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Stop every vLLM container, modelctl's and foreign ones."""

    def body() -> None:
        _check_seconds("--lock-timeout", lock_timeout)
        backend = _backend()
        # The same live line (or plain phase lines) as a switch, where the backend tells the phases.
        line = _progress(as_json) if backend.feeds_clock else None
        with line or nullcontext():
            stopped = backend.stop(lock_timeout=lock_timeout, clock=line.clock if line else None)
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
        from .runtime import container_name

        local = _local()
        runtime = local.runtime
        if name is None:
            active = local.controller.status().active
            if active is None:
                raise UsageError("no model is active", hint="name a profile: modelctl logs NAME")
            container = active.container
        else:
            profiles = local.catalog.load().profiles
            known = any(name in p.names for p in profiles.values())
            container = container_name(local.catalog.find(name).name) if known else name
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


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    name: str,
    command: Annotated[list[str], typer.Argument(help="The command to run once NAME is ready (after --).")],
    restore: Annotated[bool, typer.Option("--restore", help="Put the previous model back afterwards.")] = False,
    timeout: TimeoutOption = None,
    lock_timeout: LockTimeoutOption = DEFAULT_LOCK_TIMEOUT_S,
) -> None:
    """Switch to NAME, run CMD with OPENAI_BASE_URL set, and pass its exit code through."""

    def body() -> None:
        _check_seconds("--timeout", timeout)
        _check_seconds("--lock-timeout", lock_timeout)
        _check_command(command)  # a command that cannot run is refused before anything is switched
        backend = _backend()
        active = backend.status().status.active
        previous = active.profile if active else None
        # The switch line goes to stderr: CMD's stdout is often redirected to a result file.
        result = _do_switch(backend, name, timeout, lock_timeout, True, False, False, to=err)
        try:
            code = _call_with_model(command, result)
        finally:
            if restore:
                _restore(backend, previous, lock_timeout)
        raise typer.Exit(code)

    _run(False, body)


def _check_command(command: list[str]) -> None:
    """CMD as the system will find it: on PATH, or a path to an executable file. Checked before the
    switch, so that a typo never costs the running model; `_call_with_model` still reports a
    command that goes away in between."""
    program = command[0]
    if os.sep in program or (os.altsep and os.altsep in program):
        if not os.path.lexists(program):
            raise UsageError(f"command not found: {program}", hint="nothing was switched")
        if os.path.isdir(program) or not os.access(program, os.X_OK):
            raise UsageError(f"cannot run {program}: Permission denied", hint="nothing was switched")
    elif shutil.which(program) is None:
        raise UsageError(
            f"command not found: {program}", hint="not on PATH: give its path, or install it; nothing was switched"
        )


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
    except OSError as exc:
        raise UsageError(f"cannot run {command[0]}: {exc.strerror}") from None


def _restore(backend: Backend, profile: str | None, lock_timeout: float) -> None:
    """Put back what ran before `run`: the previous profile, or nothing."""
    if profile is None:
        backend.stop(lock_timeout=lock_timeout)
        err.print("restored: no model (none ran before)")
        return
    # Phases as plain lines on stderr without a TTY (no live line: CMD has just used the terminal).
    clock: PhaseClock | None = _ProgressLine(interactive=err.is_terminal).clock if backend.feeds_clock else None
    result = backend.switch(profile, timeout=None, lock_timeout=lock_timeout, rollback=True, dry_run=False, clock=clock)
    err.print(f"restored {result.profile} in {result.total_s:.2f}s")


@app.command()
def pull(
    name: Annotated[str | None, typer.Argument(help="The profile to make ready; --all for every one.")] = None,
    all_profiles: Annotated[bool, typer.Option("--all", help="Every valid profile.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds a download may take, per profile.")] = 3600.0,
    as_json: JsonOption = False,
) -> None:
    """Pull NAME's image and download its weights into the HF cache, without touching what runs."""

    def body() -> None:
        _check_seconds("--timeout", timeout)
        if (name is None) == (not all_profiles):
            raise UsageError("name one profile, or give --all", hint="modelctl pull NAME, or modelctl pull --all")
        local = _local()
        names = sorted(local.catalog.load().profiles) if all_profiles else [name or ""]
        done = []
        for one in names:
            line = _progress(as_json)
            with line or nullcontext():
                pulled = local.pull(one, timeout=timeout, clock=line.clock if line else None)
            done.append(pulled)
            if not as_json:
                out.print(_pulled_text(pulled), markup=False, highlight=False)
        if as_json:
            _emit([_pulled_json(p) for p in done])

    _run(as_json, body)


def _pulled_text(pulled: Any) -> str:
    image = f"image {pulled.image} {'pulled' if pulled.image_pulled else 'present'}"
    w = pulled.weights
    if w.outcome == "fetched":
        weights = f"weights fetched in {w.seconds:.1f}s ({w.detail})"
    elif w.outcome == "present":
        weights = "weights in the cache"
    else:
        weights = f"weights not fetched: {w.detail}"
    return f"{pulled.profile}: {image}; {weights}"


def _pulled_json(pulled: Any) -> dict[str, Any]:
    w = pulled.weights
    return {
        "profile": pulled.profile,
        "image": pulled.image,
        "image_pulled": pulled.image_pulled,
        "weights": w.outcome,
        "detail": w.detail,
        "seconds": w.seconds,
    }


@app.command()
def doctor(as_json: JsonOption = False) -> None:
    """Check the engine, the profiles and the ports, each with a fix."""
    from .doctor import run_checks

    checks = run_checks()
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        from dataclasses import asdict

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


@app.command("import-compose")
def import_compose(
    file: Annotated[str, typer.Argument(help="A compose file with vLLM services.")],
    out_dir: Annotated[
        str | None, typer.Option("--out", help="Where to write (default: MODELCTL_PROFILES_DIR).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace profiles that exist.")] = False,
    gpu_total_gib: Annotated[
        float | None,
        typer.Option(help="GPU size the file was tuned on, for vram_gib (default: MODELCTL_GPU_TOTAL_GIB)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write one profile per vLLM service of a compose file, and say what could not be carried over."""

    def body() -> None:
        from pathlib import Path

        from . import compose_import

        settings = _settings()
        source = Path(file)
        result = compose_import.import_compose_file(source, gpu_total_gib=gpu_total_gib or settings.gpu_total_gib)
        if not result.imported:
            raise UsageError(
                f"{source}: no vLLM service to import", hint="; ".join(compose_import.result_lines(result, [])) or None
            )
        paths = compose_import.write_profiles(result, Path(out_dir) if out_dir else settings.profiles_dir, force=force)
        if as_json:
            _emit(compose_import.result_json(result, paths))
        else:
            for line in compose_import.result_lines(result, paths):
                out.print(line, markup=False, highlight=False)

    _run(as_json, body)


@app.command()
def serve() -> None:
    """Run the service: the HTTP API on MODELCTL_LISTEN (default 127.0.0.1:8080) until stopped."""

    def body() -> None:
        from .service import serve as run_service

        run_service(_settings())

    _run(False, body)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    # SIGTERM (a CI runner's cancel, systemd, `kill`) interrupts like Ctrl-C: a switch under way puts
    # the previous model back and exits 130 (the controller turns the interrupt into that error).
    signal.signal(signal.SIGTERM, _interrupt)
    app()  # typer turns a Ctrl-C outside a switch into exit 130
