"""Readiness against scripted answers (httpx.MockTransport) and a scripted clock: every answer short
of vLLM's model list is "not yet" with what was seen, and the waited time is the clock's."""

from __future__ import annotations

import httpx
import pytest

from modelctl.vllm import readiness
from modelctl.vllm.readiness import (
    HttpModelServers,
    NotYet,
    ReadyTimeout,
    fetch_models,
    http_client,
    is_serving,
    wait_until_ready,
)

URL = "http://127.0.0.1:8011/v1"
MODELS = {"object": "list", "data": [{"id": "demo", "object": "model"}, {"id": "demo-2", "object": "model"}]}


def client_answering(*answers: httpx.Response | Exception, seen: list[str] | None = None) -> httpx.Client:
    """A client whose requests get `answers` in turn (the last one again and again)."""
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(str(request.url))
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.Client(transport=httpx.MockTransport(handle))


def test_the_model_list_is_read_from_data_ids():
    seen: list[str] = []
    assert fetch_models(client_answering(httpx.Response(200, json=MODELS), seen=seen), URL) == ["demo", "demo-2"]
    assert seen == ["http://127.0.0.1:8011/v1/models"]


@pytest.mark.parametrize(
    ("answer", "seen"),
    [
        (httpx.Response(503, text="loading"), "HTTP 503"),
        (httpx.Response(201, json=MODELS), "HTTP 201"),
        (httpx.Response(404, json=MODELS), "HTTP 404"),
        (httpx.Response(200, text="<html>not json</html>"), "an answer that is not an OpenAI model list"),
        (httpx.Response(200, json={"models": ["demo"]}), "an answer that is not an OpenAI model list"),
        (httpx.Response(200, json={"data": [{"name": "demo"}]}), "an answer that is not an OpenAI model list"),
        (httpx.Response(200, json={"data": ["demo"]}), "an answer that is not an OpenAI model list"),
        (httpx.Response(200, json=["demo"]), "an answer that is not an OpenAI model list"),
        (httpx.ConnectError("refused"), "ConnectError"),
        (httpx.ReadTimeout("slow"), "ReadTimeout"),
    ],
)
def test_anything_short_of_the_model_list_is_not_yet(answer, seen):
    with pytest.raises(NotYet) as caught:
        fetch_models(client_answering(answer), URL)
    assert str(caught.value) == seen


def test_is_serving_asks_once_and_says_no_to_a_wrong_answer(monkeypatch):
    answers = iter([httpx.Response(200, json=MODELS), httpx.Response(500)] + [httpx.Response(200, json=MODELS)] * 2)
    monkeypatch.setattr(readiness, "http_client", lambda: client_answering(next(answers)))
    assert is_serving(URL, "demo") is True
    assert is_serving(URL, "demo") is False  # HTTP 500: not serving
    assert HttpModelServers().is_serving(URL, "other") is False
    assert HttpModelServers().is_serving(URL, "demo-2") is True


class Clock:
    """time.monotonic for readiness: each call moves on by `step` seconds."""

    def __init__(self, start: float = 100.0, step: float = 1.5) -> None:
        self.now, self.step = start - step, step

    def monotonic(self) -> float:
        self.now += self.step
        return self.now


def test_the_wait_polls_until_the_model_is_listed_and_returns_the_seconds_waited(monkeypatch):
    clock = Clock(start=100.0, step=1.5)
    monkeypatch.setattr(readiness, "time", clock)
    seen: list[str] = []
    client = client_answering(
        httpx.ConnectError("refused"),
        httpx.Response(503),
        httpx.Response(200, json={"data": [{"id": "other"}]}),
        httpx.Response(200, json=MODELS),
        seen=seen,
    )
    monkeypatch.setattr(readiness, "http_client", lambda: client)
    polls: list[str] = []
    waited = HttpModelServers().wait_until_ready(URL, "demo", timeout_s=30, is_alive=lambda: True, on_poll=polls.append)
    # the clock is read at the start (100.0) and at the end (101.5): 1.5 s
    assert waited == 1.5
    assert polls == ["ConnectError", "HTTP 503", "serving ['other'], not 'demo'"]
    assert seen == [f"{URL}/models"] * 4, "polled until listed, at the base URL given"


def test_a_timeout_says_how_long_and_what_was_seen_last(monkeypatch):
    clock = Clock(start=200.0, step=7.0)
    monkeypatch.setattr(readiness, "time", clock)
    monkeypatch.setattr(
        readiness, "http_client", lambda: client_answering(httpx.Response(200, json={"data": [{"id": "other"}]}))
    )
    with pytest.raises(ReadyTimeout) as caught:
        wait_until_ready(URL, "demo", timeout_s=0.2, is_alive=lambda: True)
    # started at 200, raised at 207: 7 s
    assert caught.value.waited_s == 7.0
    assert caught.value.last_seen == "serving ['other'], not 'demo'"
    assert str(caught.value) == "not ready after 7 s (last seen: serving ['other'], not 'demo')"


def test_a_server_that_never_answers_times_out_having_seen_it_refuse(monkeypatch):
    monkeypatch.setattr(readiness, "http_client", lambda: client_answering(httpx.ConnectError("refused")))
    polls: list[str] = []
    with pytest.raises(ReadyTimeout) as caught:
        wait_until_ready(URL, "demo", timeout_s=0.2, is_alive=lambda: True, on_poll=polls.append)
    assert caught.value.last_seen == "ConnectError"
    # every 20 ms for 0.2 s: about 10 polls, never a busy loop, never one poll only
    assert 3 <= len(polls) <= 15


def test_a_model_listed_at_once_is_ready_at_the_first_poll(monkeypatch):
    monkeypatch.setattr(readiness, "http_client", lambda: client_answering(httpx.Response(200, json=MODELS)))
    polls: list[str] = []
    waited = wait_until_ready(URL, "demo-2", timeout_s=5, is_alive=lambda: True, on_poll=polls.append)
    assert polls == [] and 0 <= waited < 1


def test_the_http_client_has_short_timeouts_and_ignores_proxy_settings(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("ALL_PROXY", "http://proxy.invalid:3128")
    with http_client() as client:
        assert client.timeout == httpx.Timeout(2.0, connect=1.0)
        assert client.trust_env is False
