"""The switch, read top to bottom as the algorithm (ARCHITECTURE.md "The life of a switch").

The controller composes the outside worlds through their Protocols - the container runtime
(`Runtime`), the GPU (`GpuMonitor`), the model servers over HTTP (`ModelServers`) - with the
catalog, the plan and the eviction rule, and the lock. It does no I/O of its own, so unit tests
drive it with fakes. Its promise: at the end of every call at most one vLLM container runs,
whatever failed on the way.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from .catalog import Catalog
from .errors import DoesNotFitError, Interrupted, ModelctlError, NotReadyError, UsageError
from .eviction import Eviction, Room, Sleeper, decide, evictions
from .fetch import WeightsFetcher, ensure_weights
from .footprints import Footprint, read_footprints, record_footprint
from .gpu import GpuBudget, GpuDevice, GpuMonitor, GpuState
from .host import Host, LocalHost
from .lock import switch_lock
from .plan import Plan, is_loopback_host
from .profiles import Profile
from .progress import PhaseClock
from .results import ActiveModel, GpuHolder, GpuReport, Status, SwitchResult
from .runtime import ContainerInfo, Runtime, ensure_names_free
from .settings import Settings
from .vllm.diagnosis import diagnose, diagnose_timeout
from .vllm.readiness import ContainerExited, HttpModelServers, ModelServers, ReadyTimeout
from .vllm.sleep import HttpSleepControl, SleepControl, SleepFailed

# Bounds the sleep of one model: level 1 copies the weights to host memory (seconds for 16 GiB).
SLEEP_TIMEOUT_S = 120.0
# vLLM's start-up line with the weights' size: "Model loading took 4.1523 GiB memory and 12.3
# seconds" (0.11.1 gpu_model_runner.py:3335) / "Model loading took 4.15 GiB memory ..." (0.33.0).
WEIGHTS_LINE = re.compile(r"Model loading took ([0-9.]+) GiB")
WEIGHTS_LOG_TAIL = 2000
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
        sleep: SleepControl | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.catalog = catalog
        self.gpu = gpu
        self.servers = servers or HttpModelServers()
        self.host = host or LocalHost()
        self.sleep = sleep or HttpSleepControl()
        self._holders_seen: tuple[GpuDevice, list[GpuHolder]] | None = None  # the last reading's holders
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
            current = target if target and target.plan_hash == plan.hash else None
            state = self.gpu.read()
            sleepers = self._sleepers(running, state)
            asleep = sleepers.get(current.id) if current else None
            wake = asleep if asleep and asleep.asleep else None

            if current and not wake and self.servers.is_serving(plan.url, plan.profile.served_name):
                # A foreign one may have crept in, or a second awake model: one awake at the end.
                eviction = decide(plan, running, keep=current, sleepers=sleepers)
                self._evict(eviction, state, result, clock)
                result.outcome = "unchanged"
                return _finished(result, clock)

            if not wake and not self.runtime.has_image(plan.spec.image):
                with clock.phase("pull", plan.spec.image):
                    self.runtime.pull(plan.spec.image)  # fails before anything is stopped
            eviction = decide(
                plan, running, keep=current if wake else None, sleepers=sleepers, room=self._room(state, running)
            )
            self._check_before_stop(plan, eviction, sleepers, state, waking=wake is not None)
            if not wake:
                self._fetch_weights(plan, clock)  # missing weights download while the old model serves
            # What served before: put back on failure (a sleeper it put to sleep is woken again).
            before = [c for c in eviction.leaving if not (c.id in sleepers and sleepers[c.id].asleep)]

            try:
                self._evict(eviction, state, result, clock)
                if eviction.sleep:  # what the new sleepers really keep may leave less room than expected
                    self._settle(plan, current if wake else None, result, clock)
                if wake and current:
                    self._wake_or_cold_start(plan, current, wake.level, result, clock, timeout_s)
                else:
                    if target:  # the same profile planned otherwise: set aside, the rollback may need it
                        self.runtime.rename(target.id, plan.spec.name + PREVIOUS_SUFFIX)
                    self._start_and_wait(plan, clock, timeout_s)
            except BaseException as exc:  # Ctrl-C and SIGTERM included: what ran before comes back
                failure = _failure(exc, plan, clock)
                if rollback:
                    sentence, failure.rolled_back = self._roll_back(before, plan, clock)
                    failure.message += sentence
                raise failure from (None if failure is exc else exc)
            if target and not wake:
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

    def _check_before_stop(
        self,
        plan: Plan,
        eviction: Eviction,
        sleepers: dict[str, Sleeper],
        state: GpuState,
        *,
        waking: bool = False,
    ) -> None:
        """Everything that would fail after the stop, checked while the old model still runs."""
        # A container modelctl did not start holding one of its names is never removed (exit 2).
        # (A wake creates and renames nothing: the sleeper holds its name.)
        if not waking:
            ensure_names_free(self.runtime, plan.spec.name, plan.spec.name + PREVIOUS_SUFFIX)
        if plan.profile.sleep_level is not None and not is_loopback_host(plan.spec.host_ip):
            raise UsageError(
                f"{plan.profile.name} has sleep_level, and its development endpoints (/sleep, /wake_up, "
                f"/collective_rpc) have no authentication: it is published on loopback only, but "
                f"MODELCTL_HOST={plan.spec.host_ip}",
                hint="set MODELCTL_HOST=127.0.0.1 and serve others through `modelctl serve`, or remove "
                "sleep_level from the profile",
            )
        self._check_room(plan, eviction, sleepers, state)  # a host process that will not go
        if not waking:  # a sleeper keeps its port: waking it binds nothing
            self._check_port(plan, eviction.stop)
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
        """The processes of one reading of the device, with their containers (asked once per reading)."""
        if device.processes is None:
            return None
        if self._holders_seen is not None and self._holders_seen[0] is device:
            return self._holders_seen[1]
        containers = self.runtime.container_pids()
        holders = [GpuHolder(device.index, p.pid, p.name, p.used_gib, containers.get(p.pid)) for p in device.processes]
        self._holders_seen = (device, holders)
        return holders

    def _check_room(self, plan: Plan, eviction: Eviction, sleepers: dict[str, Sleeper], state: GpuState) -> None:
        """Refuse before stopping anything when memory held outside vLLM leaves too little.

        Only where NVML lists processes: elsewhere (WSL2, no GPU) the release wait decides. What a
        model going to sleep frees is its use now less what it is expected to keep asleep.
        """
        device = state.planning_device
        holders = self._holders(device) if device else None
        if device is None or holders is None:
            return
        stopping = {c.name for c in eviction.stop}
        sleeping = {c.name: sleepers[c.id] for c in eviction.sleep if c.id in sleepers}
        going = [h for h in holders if h.container in stopping or h.container in sleeping]
        if any(h.used_gib is None for h in going):
            return  # NVML does not say how much the stop frees (some WSL2, MIG): the release wait decides
        freed_by_stop = sum(h.used_gib or 0 for h in going if h.container in stopping)
        for name, sleeper in sleeping.items():
            use = sum(h.used_gib or 0 for h in going if h.container == name)
            freed_by_stop += max(0.0, use - sleeper.residual_gib)
        # A sleeper woken grows from what it keeps asleep to its full size.
        own = sum(h.used_gib or 0 for h in holders if h.container == plan.spec.name and h.container not in stopping)
        if device.free_gib + freed_by_stop >= plan.start_needs_gib - own:
            return
        staying = [h for h in holders if h.container not in stopping and h.container not in sleeping]
        raise DoesNotFitError(
            f"{plan.profile.name} needs {plan.start_needs_gib - own:.2f} GiB free to start, but even after "
            f"stopping the vLLM containers only {device.free_gib + freed_by_stop:.2f} GiB of "
            f"{device.total_gib:.2f} GiB would be: "
            + (", ".join(map(str, staying)) or "held outside any process NVML lists"),
            hint="stop what holds the memory, or switch to a smaller profile (`modelctl list`)",
        )

    def _wait_for_memory(self, plan: Plan, need_gib: float | None = None) -> None:
        """After the stop, wait until the GPU really has the memory vLLM checks for at start-up
        (or, for a wake, what the sleeper needs beyond what it kept)."""
        need = plan.start_needs_gib if need_gib is None else need_gib
        freed, _, state = self.gpu.wait_until_free(need, self.settings.release_timeout)
        if freed:
            return
        device = state.planning_device
        assert device is not None, "only NVML mode can fail to free"
        holders = self._holders(device)
        held = ", ".join(map(str, holders)) if holders else "NVML cannot say by whom here"
        raise DoesNotFitError(
            f"GPU memory did not come free within {self.settings.release_timeout:g} s: {plan.profile.name} "
            f"needs {need:.2f} GiB free, {device.free_gib:.2f} GiB is; {held}",
            hint="stop what holds the memory (see `modelctl gpu`), or raise MODELCTL_RELEASE_TIMEOUT",
        )

    # --- sleep mode ----------------------------------------------------------------------

    def _sleep_profile(self, container: ContainerInfo) -> Profile | None:
        """The profile of a modelctl container whose profile has sleep mode on (else None)."""
        if container.foreign:
            return None
        profile = self.catalog.load().profiles.get(container.profile or "")
        return profile if profile is not None and profile.sleep_level is not None else None

    def _sleepers(self, running: list[ContainerInfo], state: GpuState) -> dict[str, Sleeper]:
        """The running containers started with sleep mode, awake or asleep, by id.

        Sleep mode is asked of the container itself: only a server with the development endpoints
        answers `/is_sleeping` (one started before its profile had sleep_level does not).
        """
        found: dict[str, Sleeper] = {}
        candidates = [(c, p) for c in running if c.running and (p := self._sleep_profile(c)) is not None]
        if not candidates:
            return found
        used = self._container_use(state)
        records = read_footprints(self.settings.state_dir)
        now = time.time()
        for container, profile in candidates:
            asleep = self.sleep.is_sleeping(self._url(container))
            if asleep is None:
                continue
            level = profile.sleep_level or 1
            record = records.get(sleep_key(profile.name))
            if record is not None and record.plan_hash != container.plan_hash:
                record = None  # measured for another plan
            expected = record.measured_gib if record else profile.sleep_vram_gib
            if asleep:
                measured = used.get(container.name) if used is not None else None
                found[container.id] = Sleeper(
                    container,
                    level,
                    True,
                    measured if measured is not None else expected,
                    record.measured_at if record else 0.0,
                )
            else:
                pin = self._host_pin_gib(container, profile) if level == 1 else 0.0
                found[container.id] = Sleeper(container, level, False, expected, now, pin)
        return found

    def _container_use(self, state: GpuState) -> dict[str, float] | None:
        """GPU memory each container holds now, by name; None where NVML cannot say by process."""
        device = state.planning_device
        holders = self._holders(device) if device else None
        if holders is None or any(h.used_gib is None for h in holders):
            return None
        use: dict[str, float] = {}
        for h in holders:
            if h.container:
                use[h.container] = use.get(h.container, 0.0) + (h.used_gib or 0.0)
        return use

    def _host_pin_gib(self, container: ContainerInfo, profile: Profile) -> float:
        """Host memory a level-1 sleep pins: the weights. The profile's vram_gib bounds them; only
        where that bound would eat into the host reserve is vLLM's own figure read from the log
        ("Model loading took X GiB"), which costs a Docker call."""
        available = self.host.available_memory_gib()
        if available is None or available - profile.vram_gib >= self.settings.sleep_host_reserve_gib:
            return profile.vram_gib
        found = WEIGHTS_LINE.findall(self.runtime.logs(container.id, tail=WEIGHTS_LOG_TAIL))
        return float(found[-1]) if found else profile.vram_gib

    def _room(self, state: GpuState, running: list[ContainerInfo]) -> Room:
        """What vLLM containers may hold together on the GPU, and the host's available memory."""
        reserve = self.settings.sleep_host_reserve_gib
        host = self.host.available_memory_gib()
        device = state.planning_device
        if device is None:  # degraded: the assumed total, sleepers at their recorded or assumed size
            return Room(self.settings.gpu_total_gib, host, reserve)
        use = self._container_use(state)
        if use is None:  # who holds what is unknown: the release wait decides
            return Room(device.total_gib, host, reserve)
        vllm_names = {c.name for c in running}
        held_by_vllm = sum(gib for name, gib in use.items() if name in vllm_names)
        return Room(device.total_gib - (device.used_gib - held_by_vllm), host, reserve)

    def _evict(self, eviction: Eviction, state: GpuState, result: SwitchResult, clock: PhaseClock) -> None:
        """Stop what stops, then put to sleep what sleeps (a sleep that fails stops the container)."""
        for name, why in eviction.reasons.items():
            log.info("stopping sleeper %s: %s", name, why)
        with clock.phase("stop", _names(eviction.stop)):
            self.runtime.stop(eviction.stop, self.settings.stop_grace)
        result.stopped += [c.name for c in eviction.stop]
        if not eviction.sleep:
            return
        with clock.phase("sleep", _names(eviction.sleep)):
            for container in eviction.sleep:
                slept = self._put_to_sleep(container)
                (result.slept if slept else result.stopped).append(container.name)
                if not slept:
                    result.warnings.append(f"{container.name} could not sleep and was stopped: {slept.why}")

    def _settle(self, plan: Plan, keep: ContainerInfo | None, result: SwitchResult, clock: PhaseClock) -> None:
        """Decide again with the residuals measured after the sleep: where the new sleepers keep more
        than expected, the least recently used sleepers stop now rather than the start fail."""
        state = self.gpu.read()
        if self._container_use(state) is None:
            return  # nothing measured: the figures the decision used stand
        running = self.runtime.vllm_containers()
        again = decide(
            plan, running, keep=keep, sleepers=self._sleepers(running, state), room=self._room(state, running)
        )
        extra = [c for c in again.stop if c.name != plan.spec.name]
        if not extra:
            return
        for name, why in again.reasons.items():
            log.info("stopping sleeper %s: %s", name, why)
        with clock.phase("stop", _names(extra)):
            self.runtime.stop(extra, self.settings.stop_grace)
        for c in extra:
            if c.name in result.slept:
                result.slept.remove(c.name)
            result.stopped.append(c.name)

    def _put_to_sleep(self, container: ContainerInfo) -> _Slept:
        """Sleep one model, record what it keeps; stop it when the sleep fails or host memory runs low."""
        profile = self._sleep_profile(container)
        level = profile.sleep_level if profile else None
        why = ""
        if profile is None or level is None:
            why = "its profile has no sleep_level any more"
        else:
            try:
                self.sleep.sleep(self._url(container), level, timeout_s=SLEEP_TIMEOUT_S)
            except SleepFailed as exc:
                why = str(exc)
        if not why and profile is not None:
            # A sleeper is not restarted by the engine: after a reboot they would all wake at once.
            self.runtime.set_restart_policy(container.id, "no")
            self._record_residual(container, profile)
            available = self.host.available_memory_gib()
            reserve = self.settings.sleep_host_reserve_gib
            if available is not None and available < reserve:
                why = (
                    f"host memory available fell to {available:.1f} GiB, under "
                    f"MODELCTL_SLEEP_HOST_RESERVE_GIB={reserve:g}"
                )
        if why:
            log.warning("%s could not stay asleep, stopping it: %s", container.name, why)
            self.runtime.stop([container], self.settings.stop_grace)
            return _Slept(False, why)
        return _Slept(True)

    def _record_residual(self, container: ContainerInfo, profile: Profile) -> None:
        """What the sleeper keeps on the GPU, measured by process (else the profile's assumption),
        and when it went to sleep (the least recently used sleeper stops first)."""
        try:
            use = self._container_use(self.gpu.read())
            measured = use.get(container.name) if use is not None else None
            kept = round(measured, 3) if measured is not None else profile.sleep_vram_gib
            footprint = Footprint(kept, profile.sleep_vram_gib, container.plan_hash or "", time.time())
            record_footprint(self.settings.state_dir, sleep_key(profile.name), footprint)
            if measured is not None:
                log.info("%s asleep keeps %.2f GiB of GPU memory (NVML, by process)", container.name, measured)
        except Exception as exc:  # advice only: a sleep that worked must not fail for it
            log.warning("could not record what %s keeps asleep: %s", container.name, exc)

    def _wake_or_cold_start(
        self,
        plan: Plan,
        container: ContainerInfo,
        level: int,
        result: SwitchResult,
        clock: PhaseClock,
        timeout_s: float | None,
    ) -> None:
        """Wake the sleeping target; a wake that fails stops it and starts the profile cold."""
        if timeout_s is None:
            timeout_s = plan.profile.startup_timeout or self.settings.ready_timeout
        kept = (self._container_use(self.gpu.read()) or {}).get(container.name, 0.0)
        need = max(0.0, plan.start_needs_gib - kept)  # it grows from what it kept to its full size
        with clock.phase("release", f"{need:.2f} GiB free needed"):
            self._wait_for_memory(plan, need)
        try:
            with clock.phase("wake", f"{container.name} (level {level})"):
                self.sleep.wake(
                    self._url(container),
                    plan.profile.served_name,
                    level,
                    timeout_s=timeout_s,
                    is_alive=lambda: self.runtime.is_running(container.id),
                )
            self.runtime.set_restart_policy(container.id, "unless-stopped")
            result.woke = True
            return
        except (SleepFailed, ContainerExited, ReadyTimeout) as exc:
            why = _wake_failure(exc, self.runtime.logs(container.id, tail=200))
        log.warning("the wake of %s failed (%s): stopping it and starting it cold", container.name, why)
        result.warnings.append(f"the wake of {plan.profile.name} failed ({why}); it was started cold")
        self.runtime.stop([container], self.settings.stop_grace)
        self._start_and_wait(plan, clock, timeout_s)

    def _measure_footprint(self, plan: Plan, container: ContainerInfo) -> None:
        """Record what the ready model really holds, where NVML can tell by process."""
        device = self.gpu.read().planning_device
        holders = self._holders(device) if device else None
        mine = [h.used_gib for h in holders or [] if h.container == container.name and h.used_gib is not None]
        if mine:
            footprint = Footprint(round(sum(mine), 3), plan.sizing.vram_gib, plan.hash, time.time())
            record_footprint(self.settings.state_dir, plan.profile.name, footprint)

    def gpu_report(self, sleepers: dict[str, Sleeper] | None = None, state: GpuState | None = None) -> GpuReport:
        state = state or self.gpu.read()
        budget = state.budget(self.settings)
        device = state.planning_device
        if sleepers is None:
            sleepers = self._sleepers(self.runtime.vllm_containers(), state)
        asleep = {s.container.name: s.residual_gib for s in sleepers.values() if s.asleep}
        if device is not None:
            holders = None
            if all(d.processes is not None for d in state.devices):
                holders = [h for d in state.devices for h in self._holders(d) or []]
            measured = holders is not None and all(h.used_gib is not None for h in holders)
            return GpuReport(state, budget, holders, asleep=asleep, asleep_measured=measured)
        # Degraded: what the running modelctl models were planned to take (a sleeper: what it keeps).
        plans = {p.profile.name: p for p in self.catalog.plans(budget, self.settings)}
        running = [c for c in self.runtime.vllm_containers() if c.profile in plans]
        used = sum(asleep.get(c.name, plans[c.profile or ""].sizing.vram_gib) for c in running)
        return GpuReport(state, budget, None, estimated_used_gib=used, asleep=asleep, asleep_measured=False)

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
                running = self.runtime.is_running(back.id)
                level = self._asleep_level(back) if running else None
                if level is not None:  # it went to sleep for the switch: wake it again
                    with clock.phase("rollback", back.profile or ""):
                        self.sleep.wake(
                            self._url(back),
                            back.served_model or "",
                            level,
                            timeout_s=self.settings.ready_timeout,
                            is_alive=lambda: self.runtime.is_running(back.id),
                        )
                        self.runtime.set_restart_policy(back.id, "unless-stopped")
                    return f"; rolled back to {back.profile} (woken)", True
                if running and self.servers.is_serving(self._url(back), back.served_model or ""):
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

    def _asleep_level(self, container: ContainerInfo) -> int | None:
        """The sleep level of a sleeping modelctl container; None when it is awake or not a sleeper."""
        profile = self._sleep_profile(container)
        if profile is None or not self.sleep.is_sleeping(self._url(container)):
            return None
        return profile.sleep_level

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
        """Stop every vLLM container (modelctl's, its sleepers, and foreign); returns their names."""
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
        """Repair what runs after a crash or a kill: keep one healthy modelctl model and the
        sleepers, put other awake sleep-enabled models to sleep, stop the rest.

        A modelctl container that answers (and is not asleep) is adopted; if none answers, the
        newest one may still be loading (its switch was killed), so it gets its start-up time before
        it is given up. With nothing awake, `default_profile` is started (or woken). Returns the
        names it stopped.
        """
        clock = clock or PhaseClock()
        with self._locked(lock_timeout_s):
            running = self.runtime.vllm_containers()
            known = self.catalog.load().profiles
            sleepers = self._sleepers(running, self.gpu.read())
            ours = [
                c
                for c in running
                if not c.foreign and c.profile in known and not (c.id in sleepers and sleepers[c.id].asleep)
            ]
            keep = next(
                (c for c in ours if c.served_model and self.servers.is_serving(self._url(c), c.served_model)), None
            )
            if keep is None and ours:
                keep = self._wait_adopt(ours[0])  # the engine lists the newest first
            eviction = decide(None, running, keep=keep, sleepers=sleepers)  # sleepers stay asleep
            extra = list(eviction.stop)
            self.runtime.stop(extra, self.settings.stop_grace)
            for container in eviction.sleep:
                if not self._put_to_sleep(container):
                    extra.append(container)
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
        state = self.gpu.read()
        sleepers = self._sleepers([c for c in containers if c.running], state)
        asleep = {i for i, s in sleepers.items() if s.asleep}
        active = next((c for c in containers if c.running and not c.foreign and c.id not in asleep), None)
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
        sleeping: dict[str, bool | None] = {}
        for c in containers:
            if c.id in sleepers:
                sleeping[c.id] = sleepers[c.id].asleep
            elif not c.running and self._sleep_profile(c) is not None:
                sleeping[c.id] = False  # a stopped container of a sleep-enabled profile
            else:
                sleeping[c.id] = None
        footprints = read_footprints(self.settings.state_dir)
        return Status(
            active=model,
            containers=containers,
            gpu=self.gpu_report(sleepers, state),
            footprints={k: v for k, v in footprints.items() if not k.startswith(sleep_key(""))},
            warnings=self.catalog.load().warnings(),
            sleeping=sleeping,
            residual_gib={i: s.residual_gib for i, s in sleepers.items() if s.asleep},
        )

    # --- weights (phase `fetch`, modelctl/fetch.py) -----------------------------------------

    def _fetch_weights(self, plan: Plan, clock: PhaseClock) -> None:
        """Weights missing from the Hugging Face cache are downloaded now, while the old model still
        serves; a download that fails raises here, so nothing is stopped for it."""
        fetched = ensure_weights(WeightsFetcher(self.runtime, self.settings, self._secret_env()), plan, clock)
        if fetched.outcome == "fetched":
            log.info("fetched the weights of %s in %.1f s (%s)", plan.profile.name, fetched.seconds, fetched.detail)


def _failure(exc: BaseException, plan: Plan, clock: PhaseClock) -> ModelctlError:
    """The error a failed switch raises: modelctl's own, an interruption (exit 130), or a bug (exit 1)."""
    if isinstance(exc, ModelctlError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(f"the switch to {plan.profile.name} was interrupted in phase {clock.current}")
    return ModelctlError(f"the switch to {plan.profile.name} failed unexpectedly: {type(exc).__name__}: {exc}")


def sleep_key(profile: str) -> str:
    """A sleeper's record among the footprints: what it kept asleep, and when it went to sleep
    (`:` is in no profile name)."""
    return f"asleep:{profile}"


@dataclass(frozen=True)
class _Slept:
    ok: bool
    why: str = ""

    def __bool__(self) -> bool:
        return self.ok


def _wake_failure(exc: Exception, log_text: str) -> str:
    """A failed wake in words: what the server answered, or how it died (from its log)."""
    if isinstance(exc, ContainerExited):
        found = diagnose(log_text)
        return f"the container exited while waking{': ' + found.cause if found else ''}"
    if isinstance(exc, ReadyTimeout):
        return f"not awake after {exc.waited_s:.0f} s (last seen: {exc.last_seen})"
    return str(exc)


def _finished(result: SwitchResult, clock: PhaseClock) -> SwitchResult:
    result.phases, result.total_s = dict(clock.phases), clock.elapsed
    return result


def _names(containers: list[ContainerInfo]) -> str:
    return ", ".join(c.name for c in containers)
