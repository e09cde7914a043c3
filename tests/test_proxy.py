"""The OpenAI proxy of `modelctl serve` (/v1), driven with the official `openai` client.

Real parts only: the real service subprocess (test_service's start_service fixture), the real
engine with stand-in models (which answer chat/completions and completions, streaming or not),
127.0.0.1 only. Waits are bounded polls, never sleeps used as synchronisation.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
import threading
import time

import httpx
import openai
import pytest
from conftest import running_vllm
from test_service import start_service, until  # noqa: F401  (start_service is a fixture)

pytestmark = pytest.mark.engine

CHAT = [{"role": "user", "content": "hello"}]


def client(service, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{service.url}/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx.Client(trust_env=False, timeout=60),
        **kwargs,
    )


def async_client(service) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{service.url}/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx.AsyncClient(trust_env=False, timeout=60, limits=httpx.Limits(max_connections=100)),
    )


def serve(start_service, **env: str):
    """The service with the proxy's minimum residency off unless a test sets it."""
    service = start_service({"MODELCTL_PROXY_MIN_RESIDENCY": "0", **env})
    service.wait_idle()
    return service


def metric(service, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (0 when absent)."""
    text = service.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match[1] != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match[3])
    return total


def proxy_swaps(service) -> float:
    return metric(service, "modelctl_swaps_total", origin="proxy", outcome="switched")


def test_cold_model_starts_switches_lists_and_refuses_unknown(engine, workspace, start_service):
    workspace.profile("demo-a", aliases=["alpha"])
    workspace.profile("demo-b", served_model_name="org/model-b")
    service = serve(start_service)
    ai = client(service)

    models = {m.id: m for m in ai.models.list().data}
    assert set(models) == {"demo-a", "org/model-b"}
    assert models["demo-a"].model_extra["loaded"] is False and models["demo-a"].model_extra["aliases"] == ["alpha"]

    answer = ai.chat.completions.create(model="demo-a", messages=CHAT)  # cold: the proxy starts it
    assert answer.choices[0].message.content.startswith("Hello from demo-a")
    assert running_vllm(engine) == ["modelctl-demo-a"]
    assert service.status()["active"]["profile"] == "demo-a"
    assert ai.models.retrieve("alpha").model_extra["loaded"] is True

    # By profile name, the served model name is sent upstream; the other model is stopped.
    text = ai.completions.create(model="demo-b", prompt="hi", max_tokens=4)
    assert text.choices[0].text == "Hello from org/model-b ok" and text.model == "org/model-b"
    assert running_vllm(engine) == ["modelctl-demo-b"]
    assert ai.chat.completions.create(model="alpha", messages=CHAT).model == "demo-a"  # an alias

    with pytest.raises(openai.NotFoundError) as refused:
        ai.chat.completions.create(model="no-such-model", messages=CHAT)
    error = refused.value.response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["code"] == "model_not_found" and error["param"] == "model" and "no-such-model" in error["message"]
    assert service.get("/v1/models/no-such-model").status_code == 404
    assert running_vllm(engine) == ["modelctl-demo-a"]  # nothing was touched by the refusal
    assert metric(service, "modelctl_proxy_requests_total", profile="unknown", status="404") == 1


def test_stream_arrives_chunk_by_chunk_and_large_bodies_pass(engine, workspace, start_service):
    workspace.profile(
        "slow-tokens", env={"STANDIN_LOAD_SECONDS": "0.3", "STANDIN_TOKEN_DELAY": "0.25", "STANDIN_TOKENS": "5"}
    )
    service = serve(start_service)
    ai = client(service)

    arrived: list[tuple[float, str]] = []
    for chunk in ai.chat.completions.create(model="slow-tokens", messages=CHAT, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrived.append((time.monotonic(), chunk.choices[0].delta.content))
    assert "".join(word for _, word in arrived) == "Hello from slow-tokens ok ok"
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(arrived)]
    assert len(gaps) == 4 and min(gaps) > 0.15, gaps  # each word when the model sends it, not all at the end

    # A page image of several MB in base64, as the OCR pipelines send them.
    image = base64.b64encode(os.urandom(4 * 1024 * 1024)).decode()
    content = [
        {"type": "text", "text": "OCR this page"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
    ]
    answer = ai.chat.completions.create(
        model="slow-tokens", messages=[{"role": "user", "content": content}], max_tokens=3
    )
    assert answer.choices[0].message.content == "Hello from slow-tokens"
    assert answer.usage.prompt_tokens > len(image) // 4  # the stand-in saw the whole body


def test_alternating_clients_are_grouped_not_thrashed(engine, workspace, start_service):
    workspace.profile("demo-a")
    workspace.profile("demo-b")
    service = start_service({"MODELCTL_PROXY_MIN_RESIDENCY": "1.5", "MODELCTL_PROXY_MAX_WAIT": "20"})
    service.wait_idle()
    per_client = 12
    answers: dict[str, list[str]] = {"demo-a": [], "demo-b": []}
    errors: list[BaseException] = []

    def agent(model: str) -> None:
        ai = client(service)
        try:
            for _ in range(per_client):
                answers[model].append(ai.chat.completions.create(model=model, messages=CHAT).model)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(m,)) for m in answers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert answers == {"demo-a": ["demo-a"] * per_client, "demo-b": ["demo-b"] * per_client}
    # Served one after another without grouping, 24 requests from alternating agents cost up to 24 swaps.
    swaps = proxy_swaps(service)
    assert 2 <= swaps <= 4, swaps
    assert metric(service, "modelctl_swap_phase_seconds_count", phase="load") == swaps


def test_fifty_concurrent_requests_across_two_models(engine, workspace, start_service):
    workspace.profile("demo-a")
    workspace.profile("demo-b")
    service = start_service({"MODELCTL_PROXY_MIN_RESIDENCY": "0.5", "MODELCTL_PROXY_MAX_WAIT": "5"})
    service.wait_idle()

    async def burst() -> list[str]:
        ai = async_client(service)
        async with ai:

            async def one(i: int) -> str:
                model = ("demo-a", "demo-b")[i % 2]
                if i % 3:
                    answer = await ai.chat.completions.create(model=model, messages=CHAT)
                    return answer.choices[0].message.content
                text = ""
                async for chunk in await ai.chat.completions.create(model=model, messages=CHAT, stream=True):
                    text += chunk.choices[0].delta.content or "" if chunk.choices else ""
                return text

            return await asyncio.gather(*(one(i) for i in range(50)))

    answers = asyncio.run(asyncio.wait_for(burst(), 60))
    assert all(a.startswith(f"Hello from {('demo-a', 'demo-b')[i % 2]}") for i, a in enumerate(answers)), answers
    assert proxy_swaps(service) <= 4  # grouped by model, not one swap per request
    assert len(running_vllm(engine)) == 1


def test_crash_is_an_openai_5xx_naming_the_cause_and_the_proxy_stays_up(engine, workspace, start_service):
    workspace.profile("good")
    workspace.profile("broken", env={"STANDIN_LOAD_SECONDS": "0.3", "STANDIN_FAIL": "cuda-oom"})
    service = serve(start_service)
    ai = client(service)
    assert ai.chat.completions.create(model="good", messages=CHAT).model == "good"

    with pytest.raises(openai.InternalServerError) as failed:
        ai.chat.completions.create(model="broken", messages=CHAT)
    assert failed.value.status_code == 502
    error = failed.value.response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["type"] == "server_error"
    assert error["code"] == "model_not_ready" and error["modelctl_code"] == 4
    assert "broken exited (code 1) before it was ready" in error["message"]
    assert "CUDA ran out of memory" in error["message"] and "rolled back to good" in error["message"]
    assert "torch.OutOfMemoryError: CUDA out of memory" in error["log_tail"]  # vLLM's own words

    assert service.get("/health").status_code == 200
    assert ai.chat.completions.create(model="good", messages=CHAT).choices[0].message.content.startswith("Hello")
    assert running_vllm(engine) == ["modelctl-good"]
    assert metric(service, "modelctl_swaps_total", profile="broken", outcome="failed") == 1


def test_full_queue_is_503_with_retry_after_and_a_gone_client_never_aborts_a_switch(engine, workspace, start_service):
    workspace.profile("slow", env={"STANDIN_LOAD_SECONDS": "2"})
    service = serve(start_service, MODELCTL_PROXY_MAX_QUEUE="1")
    body = {"model": "slow", "messages": CHAT}

    # The first request waits for the load and then goes away; the switch goes on regardless.
    def impatient() -> None:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{service.url}/v1/chat/completions", json=body, timeout=httpx.Timeout(60, read=1.0), trust_env=False
            )

    first = threading.Thread(target=impatient)
    first.start()
    until(lambda: metric(service, "modelctl_proxy_queue_length") == 1, "the first request to be queued", 10)
    full = httpx.post(f"{service.url}/v1/chat/completions", json=body, trust_env=False, timeout=10)
    assert full.status_code == 503, full.text
    assert int(full.headers["retry-after"]) >= 1
    assert full.json()["error"]["code"] == "queue_full"
    first.join(timeout=10)

    until(
        lambda: (s := service.status())["switch"] is None and (s["active"] or {}).get("ready"),
        "the switch to finish although its client left",
        20,
    )
    assert running_vllm(engine) == ["modelctl-slow"]
    assert metric(service, "modelctl_proxy_queue_length") == 0
    assert client(service).chat.completions.create(model="slow", messages=CHAT).model == "slow"


def test_idle_ttl_goes_back_to_the_default_and_a_request_without_model_gets_it(engine, workspace, start_service):
    workspace.profile("demo-a")
    workspace.profile("demo-b")
    service = serve(start_service, MODELCTL_DEFAULT_PROFILE="demo-a", MODELCTL_IDLE_TTL="1")
    assert service.status()["active"]["profile"] == "demo-a"  # the start-up reconcile started the default
    ai = client(service)
    assert ai.chat.completions.create(model="demo-b", messages=CHAT).model == "demo-b"
    assert running_vllm(engine) == ["modelctl-demo-b"]
    until(
        lambda: metric(service, "modelctl_swaps_total", profile="demo-a", origin="idle", outcome="switched") == 1,
        "the idle demo-b to give way to the default",
        15,
    )
    assert running_vllm(engine) == ["modelctl-demo-a"]
    # No model named: the default.
    answer = httpx.post(f"{service.url}/v1/completions", json={"prompt": "hi"}, trust_env=False, timeout=30)
    assert answer.status_code == 200 and answer.json()["model"] == "demo-a", answer.text


def test_idle_ttl_without_a_default_stops_the_model(engine, workspace, start_service):
    workspace.profile("demo-a")
    service = serve(start_service, MODELCTL_IDLE_TTL="1")
    assert client(service).chat.completions.create(model="demo-a", messages=CHAT).model == "demo-a"
    until(lambda: running_vllm(engine) == [], "the idle model to be stopped", 15)
    assert client(service).chat.completions.create(model="demo-a", messages=CHAT).model == "demo-a"  # back on demand


def test_a_host_switch_to_another_model_on_the_same_port_is_switched_back(engine, workspace, start_service):
    port = workspace.profile("demo-a")["port"]
    workspace.profile("demo-b", port=port)  # like the shipped profiles: all on one port
    service = serve(start_service)
    ai = client(service)
    assert ai.chat.completions.create(model="demo-a", messages=CHAT).model == "demo-a"
    workspace.cli_json("switch", "demo-b")  # on the host, behind the proxy's back: demo-b answers on that port
    assert running_vllm(engine) == ["modelctl-demo-b"]

    answer = ai.chat.completions.create(model="demo-a", messages=CHAT)  # demo-b says 404: no such model
    assert answer.model == "demo-a" and answer.choices[0].message.content.startswith("Hello from demo-a")
    assert running_vllm(engine) == ["modelctl-demo-a"]
    assert metric(service, "modelctl_proxy_requests_total", profile="demo-a", status="404") == 0


def test_an_upstream_that_drops_the_request_is_an_openai_502(engine, workspace, start_service):
    workspace.profile("demo-a", env={"STANDIN_LOAD_SECONDS": "0.3", "STANDIN_TOKEN_DELAY": "1", "STANDIN_TOKENS": "4"})
    service = serve(start_service)
    ai = client(service)
    assert ai.completions.create(model="demo-a", prompt="hi", max_tokens=1).model == "demo-a"
    container = engine.containers.get("modelctl-demo-a")
    answer: dict[str, httpx.Response] = {}
    request = threading.Thread(
        target=lambda: answer.setdefault(
            "r",
            httpx.post(
                f"{service.url}/v1/chat/completions",
                json={"model": "demo-a", "messages": CHAT},
                trust_env=False,
                timeout=30,
            ),
        )
    )
    request.start()
    try:
        # The stand-in's connection handler keeps the request in /tmp/req.<its pid> while it answers.
        def handler() -> str:
            found = container.exec_run(["sh", "-c", "ls /tmp/req.* 2>/dev/null"]).output.decode().split()
            return found[0].removeprefix("/tmp/req.") if found else ""

        pid = until(handler, "the request to reach the model's server", 10)
        killed = container.exec_run(["kill", "-9", pid])
        assert killed.exit_code == 0, killed.output
    finally:
        request.join(timeout=30)
    failed = answer["r"]
    assert failed.status_code == 502, failed.text
    error = failed.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "model_not_ready" and error["modelctl_code"] == 4
    assert error["message"].startswith("demo-a's server at http://127.0.0.1:") and "failed: " in error["message"]
    assert metric(service, "modelctl_proxy_requests_total", profile="demo-a", status="502") == 1
    assert service.get("/health").status_code == 200


def test_the_model_adopted_at_start_up_takes_requests_without_queueing(engine, workspace, start_service):
    workspace.profile("demo-a")
    service = serve(start_service, MODELCTL_DEFAULT_PROFILE="demo-a", MODELCTL_PROXY_MAX_QUEUE="20")
    until(
        lambda: metric(service, "modelctl_proxy_active_model", profile="demo-a") == 1,
        "the proxy to adopt the model the start-up reconcile started",
        10,
    )

    async def burst() -> list[str]:
        async with async_client(service) as ai:
            answers = await asyncio.gather(
                *(ai.chat.completions.create(model="demo-a", messages=CHAT) for _ in range(100))
            )
        return [a.model for a in answers]

    assert asyncio.run(asyncio.wait_for(burst(), 60)) == ["demo-a"] * 100  # none queued, none refused
    assert metric(service, "modelctl_swaps_total", origin="proxy") == 0  # not even an unchanged switch
    assert metric(service, "modelctl_proxy_rejected_total") == 0


def test_a_paused_model_server_gets_504_and_does_not_freeze_a_swap(engine, workspace, start_service):
    workspace.profile("demo-a")
    workspace.profile("demo-b")
    service = serve(start_service, MODELCTL_PROXY_IDLE_TIMEOUT="2", MODELCTL_PROXY_MAX_WAIT="1")
    ai = client(service)
    assert ai.chat.completions.create(model="demo-a", messages=CHAT).model == "demo-a"
    container = engine.containers.get("modelctl-demo-a")
    container.pause()  # the kernel still accepts its connections; nothing answers
    answer: dict[str, httpx.Response] = {}
    stuck = threading.Thread(
        target=lambda: answer.setdefault(
            "a",
            httpx.post(
                f"{service.url}/v1/chat/completions",
                json={"model": "demo-a", "messages": CHAT},
                trust_env=False,
                timeout=30,
            ),
        )
    )
    stuck.start()
    try:
        # Sent upstream (in flight) before demo-b is asked for: else demo-b's swap may come first.
        until(
            lambda: metric(service, "modelctl_proxy_inflight_requests", profile="demo-a") == 1,
            "the request to reach the paused server",
            10,
        )
        assert service.get("/health", timeout=2).status_code == 200
        # A request for another model: the paused one is stopped (Docker stops a paused container too).
        began = time.monotonic()
        assert ai.chat.completions.create(model="demo-b", messages=CHAT).model == "demo-b"
        assert time.monotonic() - began < 30
    finally:
        stuck.join(timeout=30)
    assert answer["a"].status_code == 504, answer["a"].text
    assert answer["a"].json()["error"]["code"] == "upstream_timeout"
    assert running_vllm(engine) == ["modelctl-demo-b"]
