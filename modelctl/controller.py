"""The switch, read top to bottom as the algorithm (ARCHITECTURE.md "The life of a switch").

The controller composes the outside worlds through their Protocols - the container runtime
(`Runtime`), the GPU (`GpuMonitor`), the model servers over HTTP (`ModelServers`) - with the
catalog, the plan and the eviction rule, and the lock. It does no I/O of its own, so unit tests
drive it with fakes. Its promise: at the end of every call at most one vLLM container runs,
whatever failed on the way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from .catalog import Catalog
from .errors import DoesNotFitError, Interrupted, ModelctlError, NotReadyError, UsageError
from .eviction import evictions
from .footprints import Footprint, read_footprints, record_footprint
from .gpu import GpuBudget, GpuDevice, GpuMonitor
from .host import Host, LocalHost
from .lock import switch_lock
from .plan import Plan
from .progress import PhaseClock
from .results import ActiveModel, GpuHolder, GpuReport, Status, SwitchResult
from .runtime import ContainerInfo, Runtime, ensure_names_free
from .settings import Settings
from .vllm.diagnosis import diagnose, diagnose_timeout
from .vllm.readiness import ContainerExited, HttpModelServers, ModelServers, ReadyTimeout

LOG_LINE_EVERY_S = 0.5  # how often the load phase reads the container's last log line
# A running model re-planned under the same name is set aside under this suffix until the new
# one answers, so that a failed re-plan can put the old one back.
PREVIOUS_SUFFIX = "-previous"
DEFAULT_LOCK_TIMEOUT_S = 600.0

log = logging.getLogger("modelctl")


class Controller:
    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        catalog: Catalog,
        gpu: GpuMonitor,
        servers: ModelServers | None = None,
        host: Host | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.catalog = catalog
        self.gpu = gpu
        self.servers = servers or HttpModelServers()
        self.host = host or LocalHost()
        self._lock_holder: int | None = None  # the thread holding the switch lock through this controller

    # --- plans ---------------------------------------------------------------------------

    def budget(self) -> GpuBudget:
        return self.gpu.read().budget(self.settings)

    def plan_for(self, name: str, gpu: GpuBudget | None = None) -> Plan:
        """The plan for a profile on this GPU; refuses an unknown (exit 2) or too big (exit 3) one."""
        return self.catalog.plan(name, gpu or self.budget(), self.settings)

    # --- the switch ----------------------------------------------------------------------

    def switch(
        self,
        name: str,
        *,
        timeout_s: float | None = None,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        rollback: bool = True,
        dry_run: bool = False,
        clock: PhaseClock | None = None,
    ) -> SwitchResult:
        clock = clock or PhaseClock()
        with clock.phase("plan"):
            plan = self.plan_for(name)  # unknown (2) or too big (3): refused before anything
        result = SwitchResult(
            profile=plan.profile.name,
            container=plan.spec.name,
            url=plan.url,
            served_model=plan.profile.served_name,
            outcome="planned",
            warnings=[*self.catalog.load().warnings(), *plan.warnings],
        )
        if dry_run:
            return _finished(result, clock)

        with ExitStack() as held:
            with clock.phase("lock"):
                held.enter_context(self._locked(lock_timeout_s))
            running = self.runtime.vllm_containers()
            target = next((c for c in running if c.name == plan.spec.name), None)

            if target and target.plan_hash == plan.hash and self.servers.is_serving(plan.url, plan.profile.served_name):
                others = evictions(plan, running, keep=target)  # a foreign one may have crept in
                with clock.phase("stop", _names(others)):
                    self.runtime.stop(others, self.settings.stop_grace)
                result.outcome, result.stopped = "unchanged", [c.name for c in others]
                return _finished(result, clock)

            if not self.runtime.has_image(plan.spec.image):
                with clock.phase("pull", plan.spec.image):
                    self.runtime.pull(plan.spec.image)  # fails before anything is stopped
            leaving = evictions(plan, running)
            self._check_before_stop(plan, leaving)  # what would fail after the stop fails now

            try:
                with clock.phase("stop", _names(leaving)):
                    self.runtime.stop(leaving, self.settings.stop_grace)
                result.stopped = [c.name for c in leaving]
                if target:  # the same profile planned otherwise: set aside, the rollback may need it
                    self.runtime.rename(target.id, plan.spec.name + PREVIOUS_SUFFIX)
                self._start_and_wait(plan, clock, timeout_s)
            except BaseException as exc:  # Ctrl-C and SIGTERM included: what ran before comes back
                failure = _failure(exc, plan, clock)
                if rollback:
                    sentence, failure.rolled_back = self._roll_back(leaving, plan, clock)
                    failure.message += sentence
                raise failure from (None if failure is exc else exc)
            if target:
                self.runtime.remove(target.id)
        result.outcome = "switched"
        return _finished(result, clock)

    def _start_and_wait(self, plan: Plan, clock: PhaseClock, timeout_s: float | None) -> None:
        """Wait for the memory, start the plan's container and wait until it serves.

        On failure the new container is stopped and the error says why.
        """
        if timeout_s is None:
            timeout_s = plan.profile.startup_timeout or self.settings.ready_timeout
        with clock.phase("release", f"{plan.start_needs_gib:.2f} GiB free needed"):
            self._wait_for_memory(plan)
        with clock.phase("start", plan.spec.name):
            container = self.runtime.run(plan.spec, self._secret_env())
        last_log_read = 0.0

        def on_poll(seen: str) -> None:
            nonlocal last_log_read
            if time.monotonic() - last_log_read >= LOG_LINE_EVERY_S:
                last_log_read = time.monotonic()
                clock.note(self.runtime.last_log_line(container.id))

        try:
            with clock.phase("load", plan.profile.model):
                self.servers.wait_until_ready(
                    plan.url,
                    plan.profile.served_name,
                    timeout_s=timeout_s,
                    is_alive=lambda: self.runtime.is_running(container.id),
                    on_poll=on_poll,
                )
            # Only a model that became ready is restarted by the engine: never a crash loop.
            self.runtime.set_restart_policy(container.id, "unless-stopped")
        except (ContainerExited, ReadyTimeout) as exc:
            # Keep the stopped container: `modelctl logs NAME` shows the whole story.
            self.runtime.stop([container], self.settings.stop_grace)
            raise self._not_ready(plan, container, exc) from None
        except BaseException:
            self.runtime.stop([container], self.settings.stop_grace)  # never leave an unconfirmed model up
            raise
        try:
            self._measure_footprint(plan, container)
        except Exception as exc:  # advice only: a switch that worked must not fail for it
            log.warning("could not record the footprint of %s: %s", plan.profile.name, exc)

    # --- checks before anything is stopped ------------------------------------------------

    def _check_before_stop(self, plan: Plan, leaving: list[ContainerInfo]) -> None:
        """Everything that would fail after the stop, checked while the old model still runs."""
        # A container modelctl did not start holding one of its names is never removed (exit 2).
        ensure_names_free(self.runtime, plan.spec.name, plan.spec.name + PREVIOUS_SUFFIX)
        self._check_room(plan, leaving)  # a host process that will not go
        self._check_port(plan, leaving)
        cache = self.settings.hf_cache
        if cache.is_absolute():  # else a Docker volume name (settings refuse relative paths)
            try:
                self.host.ensure_directory(cache)
            except OSError as exc:
                raise UsageError(
                    f"cannot create the Hugging Face cache {cache} (MODELCTL_HF_CACHE): {exc.strerror or exc}",
                    hint="create it, or point MODELCTL_HF_CACHE at a directory you can write or a Docker volume name",
                ) from None

    def _check_port(self, plan: Plan, leaving: list[ContainerInfo]) -> None:
        """The target's host port must be free, or held by a vLLM container that is about to stop."""
        port = plan.spec.port
        if not self.host.port_in_use(plan.spec.host_ip, port):
            return
        # A foreign container's published ports are not in its labels: it may be the holder.
        if any(c.foreign or c.port == port for c in leaving):
            return
        raise NotReadyError(
            f"port {port} on {plan.spec.host_ip} is in use by another process, so {plan.profile.name} could not "
            "listen there; nothing was stopped",
            hint=f"stop what listens there (`ss -ltnp 'sport = :{port}'` names it), or give the profile another port",
        )

    # --- GPU memory ----------------------------------------------------------------------

    def _holders(self, device: GpuDevice) -> list[GpuHolder] | None:
        if device.processes is None:
            return None
        containers = self.runtime.container_pids()
        return [GpuHolder(device.index, p.pid, p.name, p.used_gib, containers.get(p.pid)) for p in device.processes]

    def _check_room(self, plan: Plan, leaving: list[ContainerInfo]) -> None:
        """Refuse before stopping anything when memory held outside vLLM leaves too little.

        Only where NVML lists processes: elsewhere (WSL2, no GPU) the release wait decides.
        """
        device = self.gpu.read().planning_device
        holders = self._holders(device) if device else None
        if device is None or holders is None:
            return
        names = {c.name for c in leaving}
        going = [h for h in holders if h.container in names]
        if any(h.used_gib is None for h in going):
            return  # NVML does not say how much the stop frees (some WSL2, MIG): the release wait decides
        freed_by_stop = sum(h.used_gib or 0 for h in going)
        if device.free_gib + freed_by_stop >= plan.start_needs_gib:
            return
        staying = [h for h in holders if h.container not in names]
        raise DoesNotFitError(
            f"{plan.profile.name} needs {plan.start_needs_gib:.2f} GiB free to start, but even after "
            f"stopping the vLLM containers only {device.free_gib + freed_by_stop:.2f} GiB of "
            f"{device.total_gib:.2f} GiB would be: "
            + (", ".join(map(str, staying)) or "held outside any process NVML lists"),
            hint="stop what holds the memory, or switch to a smaller profile (`modelctl list`)",
        )

    def _wait_for_memory(self, plan: Plan) -> None:
        """After the stop, wait until the GPU really has the memory vLLM checks for at start-up."""
        freed, _, state = self.gpu.wait_until_free(plan.start_needs_gib, self.settings.release_timeout)
        if freed:
            return
        device = state.planning_device
        assert device is not None, "only NVML mode can fail to free"
        holders = self._holders(device)
        held = ", ".join(map(str, holders)) if holders else "NVML cannot say by whom here"
        raise DoesNotFitError(
            f"GPU memory did not come free within {self.settings.release_timeout:g} s: {plan.profile.name} "
            f"needs {plan.start_needs_gib:.2f} GiB free, {device.free_gib:.2f} GiB is; {held}",
            hint="stop what holds the memory (see `modelctl gpu`), or raise MODELCTL_RELEASE_TIMEOUT",
        )

    def _measure_footprint(self, plan: Plan, container: ContainerInfo) -> None:
        """Record what the ready model really holds, where NVML can tell by process."""
        device = self.gpu.read().planning_device
        holders = self._holders(device) if device else None
        mine = [h.used_gib for h in holders or [] if h.container == container.name and h.used_gib is not None]
        if mine:
            footprint = Footprint(round(sum(mine), 3), plan.sizing.vram_gib, plan.hash, time.time())
            record_footprint(self.settings.state_dir, plan.profile.name, footprint)

    def gpu_report(self) -> GpuReport:
        state = self.gpu.read()
        budget = state.budget(self.settings)
        device = state.planning_device
        if device is not None:
            holders = None
            if all(d.processes is not None for d in state.devices):
                holders = [h for d in state.devices for h in self._holders(d) or []]
            return GpuReport(state, budget, holders)
        # Degraded: what the running modelctl models were planned to take.
        plans = {p.profile.name: p for p in self.catalog.plans(budget, self.settings)}
        running = [c for c in self.runtime.vllm_containers() if c.profile in plans]
        used = sum(plans[c.profile or ""].sizing.vram_gib for c in running)
        return GpuReport(state, budget, None, estimated_used_gib=used)

    def _not_ready(self, plan: Plan, container: ContainerInfo, exc: Exception) -> NotReadyError:
        log_text = self.runtime.logs(container.id, tail=200)
        name = plan.profile.name
        if isinstance(exc, ContainerExited):
            found = diagnose(log_text)
            code = self.runtime.exit_code(container.id)
            what = f"{name} exited (code {code}) before it was ready"
        else:
            assert isinstance(exc, ReadyTimeout)
            # A named failure, else what the log shows vLLM was doing, else its last lines: never None.
            found = diagnose_timeout(log_text)
            what = f"{name} was not ready after {exc.waited_s:.0f} s (last seen: {exc.last_seen})"
        cause = f": {found.cause}" if found else ""
        tail = "\n".join(log_text.splitlines()[-20:])
        if found and found.evidence and found.evidence not in tail:
            tail = f"{found.evidence}\n...\n{tail}"  # vLLM's tracebacks bury the root cause
        return NotReadyError(
            f"{what}{cause}",
            hint=found.advice.replace("`modelctl logs`", f"`modelctl logs {name}`")
            if found
            else f"see `modelctl logs {name}`",
            log_tail=tail,
        )

    # --- the rollback --------------------------------------------------------------------

    def _roll_back(self, previous: list[ContainerInfo], failed: Plan, clock: PhaseClock) -> tuple[str, bool]:
        """Put back what ran before the switch: (a sentence for the error message, restored?)."""
        known = self.catalog.load().profiles
        managed = [c for c in previous if not c.foreign and c.profile in known]
        foreign = [c for c in previous if c.foreign]
        try:
            if managed:
                back = managed[0]
                if self.runtime.is_running(back.id) and self.servers.is_serving(
                    self._url(back), back.served_model or ""
                ):
                    return f"; {back.profile} was never stopped and still runs", True  # the stop failed first
                with clock.phase("rollback", back.profile or ""):
                    if back.profile == failed.profile.name:
                        self._restart_previous(back, failed.spec.name)
                    else:
                        self._start_and_wait(self.plan_for(back.profile or ""), clock, None)
                return f"; rolled back to {back.profile}", True
            if foreign:
                # Not ours to re-create: start the very container that was stopped (one, not a
                # crowd: only one can have had the GPU to itself).
                with clock.phase("rollback", foreign[0].name):
                    self.runtime.start_existing(foreign[0].id)
                return f"; restarted {foreign[0].name}, which ran before", True
        except Exception as exc:  # whatever failed here, the first failure stays the error
            why = exc.message if isinstance(exc, ModelctlError) else f"{type(exc).__name__}: {exc}"
            return f"; rollback failed too: {why}", False
        return "; nothing ran before, so nothing was rolled back", False

    def _restart_previous(self, previous: ContainerInfo, name: str) -> None:
        """Bring back the same profile's container as it ran before (set aside by the switch)."""
        failed = self.runtime.container(name)
        if failed:
            self.runtime.remove(failed.id)  # its log tail is in the error already
        self.runtime.rename(previous.id, name)
        self.runtime.start_existing(previous.id)
        if self._wait_adopt(previous) is None:
            self.runtime.stop([previous], self.settings.stop_grace)
            raise NotReadyError(f"{name} as it ran before did not answer again")

    def _secret_env(self) -> dict[str, str]:
        token = self.settings.hf_token
        return {"HF_TOKEN": token.get_secret_value()} if token is not None else {}

    # --- other commands ------------------------------------------------------------------

    def stop(self, *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S, clock: PhaseClock | None = None) -> list[str]:
        """Stop every vLLM container (modelctl's and foreign); returns their names."""
        clock = clock or PhaseClock()
        with self._locked(lock_timeout_s):
            leaving = evictions(None, self.runtime.vllm_containers())
            with clock.phase("stop", _names(leaving)):
                self.runtime.stop(leaving, self.settings.stop_grace)
        return [c.name for c in leaving]

    def reconcile(
        self,
        default_profile: str | None = None,
        *,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        clock: PhaseClock | None = None,
    ) -> list[str]:
        """Repair what runs after a crash or a kill: keep one healthy modelctl model, stop the rest.

        A modelctl container that answers is adopted; if none answers, the newest one may still be
        loading (its switch was killed), so it gets its start-up time before it is given up. With
        nothing left running, `default_profile` is started. Returns the names it stopped.
        """
        clock = clock or PhaseClock()
        with self._locked(lock_timeout_s):
            running = self.runtime.vllm_containers()
            known = self.catalog.load().profiles
            ours = [c for c in running if not c.foreign and c.profile in known]
            keep = next(
                (c for c in ours if c.served_model and self.servers.is_serving(self._url(c), c.served_model)), None
            )
            if keep is None and ours:
                keep = self._wait_adopt(ours[0])  # the engine lists the newest first
            extra = evictions(None, running, keep=keep)
            self.runtime.stop(extra, self.settings.stop_grace)
            if keep:
                self.runtime.set_restart_policy(keep.id, "unless-stopped")
            elif default_profile:
                # Still under the lock: released first, a switch from the CLI could slip in and be undone.
                self.switch(default_profile, lock_timeout_s=lock_timeout_s, rollback=False, clock=clock)
        return [c.name for c in extra]

    @contextmanager
    def _locked(self, timeout_s: float) -> Iterator[None]:
        """The switch lock; a call made while this thread holds it (reconcile -> switch) goes on."""
        if self._lock_holder == threading.get_ident():
            yield
            return
        with switch_lock(self.settings.state_dir, timeout_s):
            self._lock_holder = threading.get_ident()
            try:
                yield
            finally:
                self._lock_holder = None

    def _wait_adopt(self, candidate: ContainerInfo) -> ContainerInfo | None:
        profile = self.catalog.load().profiles[candidate.profile or ""]
        try:
            self.servers.wait_until_ready(
                self._url(candidate),
                candidate.served_model or profile.served_name,
                timeout_s=profile.startup_timeout or self.settings.ready_timeout,
                is_alive=lambda: self.runtime.is_running(candidate.id),
            )
        except (ContainerExited, ReadyTimeout):
            return None
        return candidate

    def _url(self, container: ContainerInfo) -> str:
        return f"http://{self.settings.poll_host}:{container.port}/v1"

    def status(self) -> Status:
        containers = self.runtime.vllm_containers(include_stopped=True)
        active = next((c for c in containers if c.running and not c.foreign), None)
        model = None
        if active:
            url = self._url(active)
            model = ActiveModel(
                profile=active.profile or "",
                container=active.name,
                served_model=active.served_model,
                ready=bool(active.served_model) and self.servers.is_serving(url, active.served_model or ""),
                url=url,
            )
        return Status(
            active=model,
            containers=containers,
            gpu=self.gpu_report(),
            footprints=read_footprints(self.settings.state_dir),
            warnings=self.catalog.load().warnings(),
        )


def _failure(exc: BaseException, plan: Plan, clock: PhaseClock) -> ModelctlError:
    """The error a failed switch raises: modelctl's own, an interruption (exit 130), or a bug (exit 1)."""
    if isinstance(exc, ModelctlError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(f"the switch to {plan.profile.name} was interrupted in phase {clock.current}")
    return ModelctlError(f"the switch to {plan.profile.name} failed unexpectedly: {type(exc).__name__}: {exc}")


def _finished(result: SwitchResult, clock: PhaseClock) -> SwitchResult:
    result.phases, result.total_s = dict(clock.phases), clock.elapsed
    return result


def _names(containers: list[ContainerInfo]) -> str:
    return ", ".join(c.name for c in containers)
