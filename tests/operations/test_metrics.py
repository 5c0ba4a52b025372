"""`GET /metrics`: off by default, behind its bearer token, and counting a known sequence of turns right."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend.settings import Settings
from tests.conftest import live
from tests.fakes.gemini import FakeGemini, function_call_turn, handoff_turn, text_turn
from tests.servers import free_port, server_env, server_process
from tests.sse import chat

pytestmark = pytest.mark.timeout(90)
TOKEN = "metrics-token-0123456789"
MODEL = "gemini/gemini-2.5-flash"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a series grew; labels not given are summed over."""

    def total(samples: Samples) -> float:
        return sum(
            value
            for (sample, sample_labels), value in samples.items()
            if sample == name and set(labels.items()) <= sample_labels
        )

    return total(after) - total(before)


async def test_metrics_are_off_by_default_and_need_the_token(make_settings: Callable[..., Settings]):
    async with live(make_settings()) as client:
        assert (await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 404
    async with live(make_settings(metrics="token", metrics_token=TOKEN)) as client:
        assert (await client.get("/metrics")).status_code == 404
        assert (
            await client.get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"})
        ).status_code == 404
        assert (await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200


async def test_a_scrape_after_known_turns_counts_them(gemini_settings: Callable[..., Settings], fake: FakeGemini):
    fake.script(
        handoff_turn(usage=(10, 2)),
        function_call_turn("list_tasks", {}, usage=(20, 7)),
        text_turn("You have no tasks.", usage=(30, 5)),
        text_turn("Hello.", usage=(10, 1)),
    )
    async with live(gemini_settings(metrics="token", metrics_token=TOKEN)) as client:
        before = await scrape(client)
        first = await chat(client, {"message": "what are my tasks?"})
        second = await chat(client, {"message": "hi"})
        assert first.types[-1] == second.types[-1] == "done"
        after = await scrape(client)
    assert delta(before, after, "chat_turns_started_total") == 2
    assert delta(before, after, "chat_turns_finished_total", outcome="stop") == 2
    assert delta(before, after, "chat_turns_finished_total") == 2
    assert delta(before, after, "chat_turn_duration_seconds_count") == 2
    assert delta(before, after, "chat_time_to_first_token_seconds_count") == 2
    assert delta(before, after, "chat_model_calls_total", model=MODEL, outcome="ok") == 4
    assert delta(before, after, "chat_model_tokens_total", model=MODEL, kind="input") == 70
    assert delta(before, after, "chat_model_tokens_total", model=MODEL, kind="output") == 15
    assert delta(before, after, "chat_model_cost_usd_total", model=MODEL) > 0
    assert delta(before, after, "chat_tool_calls_total", tool="list_tasks") == 1
    assert delta(before, after, "chat_tool_errors_total") == 0
    assert delta(before, after, "chat_model_errors_total") == 0
    assert ("chat_event_log_batch_events_count", frozenset()) in after  # a turn's last events go with its end
    assert delta(before, after, "http_requests_total", method="POST", path="/chatkit", status_code="200") == 2
    assert after[("chat_running_turns", frozenset())] == 0
    assert after[("chat_active_streams", frozenset())] == 0
    assert ("db_pool_checked_out", frozenset()) in after


@pytest.mark.timeout(400)  # two cold workers start slowly on a loaded machine
async def test_two_workers_sum_their_values_on_the_metrics_port(clean_db: str, fake: FakeGemini):
    """`WORKERS=2` with `METRICS=port`: the parent process runs no turn, so it can only show them by summing the
    workers' values (prometheus-client's multi-process mode)."""
    if not clean_db.startswith("postgresql"):
        pytest.skip("several workers share PostgreSQL (SQLite serves one process)")
    turns = 6
    fake.script(*(text_turn([f"t{i} ", "done."], delay=0.3) for i in range(turns)))
    metrics_port = free_port()
    env = server_env(
        clean_db, fake.base_url, WORKERS="2", METRICS="port", METRICS_PORT=str(metrics_port), MAX_TURNS_PER_USER="0"
    )
    async with (
        server_process(env, start_timeout=300) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=60) as client,
    ):
        streams = await asyncio.gather(*(chat(client, {"message": f"hello {i}"}) for i in range(turns)))
        assert [s.types[-1] for s in streams] == ["done"] * turns
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}", timeout=10) as scraper:
            response = await scraper.get("/metrics")
    assert response.status_code == 200
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert delta({}, samples, "chat_turns_started_total") == turns
    assert delta({}, samples, "chat_turns_finished_total", outcome="stop") == turns
    assert delta({}, samples, "chat_model_calls_total", model=MODEL, outcome="ok") == turns
    assert delta({}, samples, "http_requests_total", method="POST", path="/chatkit", status_code="200") == turns
    assert samples[("chat_running_turns", frozenset())] == 0
