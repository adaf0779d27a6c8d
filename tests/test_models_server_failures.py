"""The vllm-server back end against a real local HTTP server that misbehaves (issue #8 part 3).

Each failure mode gets bounded retries with backoff, then a failed result carrying the
reason (never a value that reads as an answer); a server that cannot be used at all gives
a BackendError that names the URL and what to check, within its timeout.

No test times the machine: each counts what the back end did instead (attempts made,
requests the server saw, the waits it slept, the timeout named in the error), which a
slow or busy machine cannot change.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from PIL import Image

from judge.errors import BackendError, LogprobsError, NoVisionError, TokenizerError
from judge.models import Message, YesNoQuery, load_backend
from judge.models.vllm_server import VLLMServerBackend

FAST = {"timeout": 2.0, "retries": 2, "backoff": 0.05, "breaker_threshold": 50}


def server_backend(url: str, **options: Any) -> VLLMServerBackend:
    backend = load_backend("vllm-server", server=url, **{**FAST, **options})
    assert isinstance(backend, VLLMServerBackend)
    return backend


def queries(n: int, image: bool = True) -> list[YesNoQuery]:
    img = Image.new("RGB", (32, 32), (255, 0, 0)) if image else None
    return [YesNoQuery("Look.", f"Statement {i}: red?", img) for i in range(n)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def chat_retry_waits(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The waits the back end announced before each retry of a query, in order. Start-up
    requests (the model list, /tokenize) are left out: on a loaded machine they may need a
    retry of their own, which says nothing about the query."""
    return [
        float(r.args[4])
        for r in caplog.records
        if r.name == "judge.models.vllm_server"
        and isinstance(r.args, tuple)
        and len(r.args) == 5
        and r.args[2] == "/v1/chat/completions"
    ]


async def ask(backend: VLLMServerBackend, qs: list[YesNoQuery]) -> list[Any]:
    try:
        return await backend.yes_no(qs)
    finally:
        await backend.aclose()


def test_healthy_server_sums_label_variants_with_token_ids(misbehaving_server: Any) -> None:
    server = misbehaving_server(p_yes=0.6, p_no=0.3)
    backend = server_backend(server.url)
    [result] = run(ask(backend, queries(1)))
    assert result.error is None and not result.missing
    # "Yes"=0.6, the other yes spellings at -12; "No"=0.3 likewise.
    assert result.p_yes == pytest.approx(0.6 + 3 * 6.1442e-06, rel=1e-3)
    assert result.m == pytest.approx(result.p_yes / (result.p_yes + result.p_no))
    assert result.prompt_tokens == 40 + 64 and result.cached_tokens == 32
    assert backend.uses_token_ids and backend.model_id == "toy-vlm"
    chat = next(r for r in server.requests if r["path"] == "/v1/chat/completions")["body"]
    assert chat["max_tokens"] == 1 and chat["temperature"] == 0.0 and chat["logprobs"] is True
    assert sorted(chat["logprob_token_ids"]) == [10, 11, 12, 13, 20, 21, 22, 23]
    parts = [p["type"] for p in chat["messages"][0]["content"]]
    assert parts == ["text", "image_url", "text"]
    assert chat["messages"][0]["content"][1]["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )


def test_no_image_query_sends_no_image_part(misbehaving_server: Any) -> None:
    server = misbehaving_server()
    [result] = run(ask(server_backend(server.url), queries(1, image=False)))
    chat = next(r for r in server.requests if r["path"] == "/v1/chat/completions")["body"]
    assert [p["type"] for p in chat["messages"][0]["content"]] == ["text", "text"]
    assert result.prompt_tokens == 40


def test_falls_back_to_top_logprobs_without_token_ids(misbehaving_server: Any) -> None:
    server = misbehaving_server(token_ids=False, p_yes=0.5, p_no=0.4)
    backend = server_backend(server.url)
    results = run(ask(backend, queries(3)))
    assert not backend.uses_token_ids
    assert all(r.m == pytest.approx(0.5 / 0.9) for r in results)
    later = [r["body"] for r in server.requests if r["path"] == "/v1/chat/completions"][-1]
    assert later["top_logprobs"] == 20 and "logprob_token_ids" not in later


def test_falls_back_to_top_logprobs_without_tokenize(misbehaving_server: Any) -> None:
    server = misbehaving_server(tokenize=False, p_yes=0.3, p_no=0.6)
    [result] = run(ask(server_backend(server.url), queries(1)))
    assert result.m == pytest.approx(1 / 3)


def test_labels_absent_is_missing_never_half(misbehaving_server: Any) -> None:
    for token_ids in (True, False):
        server = misbehaving_server(mode="no_labels", token_ids=token_ids)
        backend = server_backend(server.url)
        if not token_ids:
            backend._use_token_ids = False  # the top-k path
        results = run(ask(backend, queries(2)))
        assert all(r.missing and r.m is None for r in results)


def test_down_at_start_raises_backend_error_naming_url(down_url: str) -> None:
    backend = server_backend(down_url)
    with pytest.raises(BackendError) as info:
        run(ask(backend, queries(1)))
    text = str(info.value)
    assert down_url in text and "connection refused" in text and "JUDGE_SERVER" in text
    assert info.value.exit_code == 3
    # Bounded: the model list was tried 1 + `retries` times, and no query went out.
    assert "(after 3 attempts)" in text
    assert backend.stats.requests == 3 and backend.stats.retries == 2
    assert backend.stats.yes_no_queries == 0


def test_hanging_at_start_raises_within_timeout(misbehaving_server: Any) -> None:
    server = misbehaving_server(models_delay=30)
    backend = server_backend(server.url, timeout=0.5, retries=1)
    # The configured 0.5 s fired (not the 30 s the server would take, nor the default
    # 60 s), on each of the 2 attempts; the query itself was never sent.
    with pytest.raises(BackendError, match=r"no answer within 0\.5 s \(after 2 attempts\)"):
        run(ask(backend, queries(1)))
    assert server.count("/v1/models") == 2
    assert server.chat_count == 0


def test_slow_server_times_out_with_bounded_retries(
    misbehaving_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="judge.models.vllm_server")
    server = misbehaving_server(mode="hang")
    backend = server_backend(server.url, timeout=0.4, retries=2, backoff=0.1)
    results = run(ask(backend, queries(2)))
    assert all(r.error and "no answer within 0.4 s (after 3 attempts)" in r.error for r in results)
    assert all(r.m is None for r in results)
    assert server.chat_count == 6  # 2 queries x 3 attempts, never more
    assert sorted(chat_retry_waits(caplog)) == [0.1, 0.1, 0.2, 0.2]
    assert backend.stats.failures == 2


def test_500s_are_retried_with_exponential_backoff(
    misbehaving_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="judge.models.vllm_server")
    server = misbehaving_server(mode="500")
    backend = server_backend(server.url, retries=3, backoff=0.1)
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, *args: Any, **kwargs: Any) -> Any:
        if delay > 0:  # sleep(0) is how asyncio code yields, not a wait
            waits.append(delay)
        return await real_sleep(delay, *args, **kwargs)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    [result] = run(ask(backend, queries(1)))
    assert result.error is not None and "HTTP 500" in result.error and "4 attempts" in result.error
    assert server.chat_count == 4
    # The waits doubled, one before each retry, and were slept (the query's come last:
    # start-up is over before it is sent).
    assert chat_retry_waits(caplog) == [0.1, 0.2, 0.4]
    assert waits[-3:] == [0.1, 0.2, 0.4]
    assert backend.stats.failures == 1


def test_transient_500s_recover(misbehaving_server: Any) -> None:
    server = misbehaving_server(mode="flaky", fail_first=2)
    [result] = run(ask(server_backend(server.url, retries=3), queries(1)))
    assert result.error is None and result.m is not None


def test_4xx_is_never_retried(misbehaving_server: Any) -> None:
    server = misbehaving_server(mode="400")
    backend = server_backend(server.url, retries=3)
    [result] = run(ask(backend, queries(1)))
    assert result.error is not None and "HTTP 400" in result.error and "2048" in result.error
    assert server.chat_count == 1 and backend.stats.retries == 0


def test_malformed_json_is_retried_then_fails(misbehaving_server: Any) -> None:
    server = misbehaving_server(mode="malformed")
    [result] = run(ask(server_backend(server.url, retries=2), queries(1)))
    assert result.error is not None and "malformed JSON" in result.error
    assert server.chat_count == 3 and result.m is None


def test_different_model_at_start_is_an_error(misbehaving_server: Any) -> None:
    server = misbehaving_server(model="other/model")
    with pytest.raises(BackendError, match="not the requested model 'toy-vlm'"):
        run(ask(server_backend(server.url, model="toy-vlm"), queries(1)))


def test_different_model_in_answers_fails_the_query(misbehaving_server: Any) -> None:
    server = misbehaving_server(mode="wrong_model")
    [result] = run(ask(server_backend(server.url, retries=1), queries(1)))
    assert result.error is not None and "someone-else/other-model" in result.error
    assert server.chat_count == 2


def test_server_dying_mid_batch(
    misbehaving_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="judge.models.vllm_server")
    server = misbehaving_server(die_after=5, delay=0.05)
    backend = server_backend(server.url, concurrency=2, retries=2, backoff=0.05)
    results = run(ask(backend, queries(12)))
    answered = [r for r in results if r.error is None]
    failed = [r for r in results if r.error is not None]
    assert len(answered) == 5 and len(failed) == 7
    assert all(r.m is None and r.missing for r in failed)
    assert all("connection" in (r.error or "") for r in failed)
    # Each failed query gave up after its 1 + 2 attempts, none waited for more.
    assert all("(after 3 attempts)" in (r.error or "") for r in failed)
    assert len(chat_retry_waits(caplog)) == 2 * len(failed)


def test_circuit_breaker_stops_hammering(misbehaving_server: Any) -> None:
    server = misbehaving_server(mode="500")
    backend = server_backend(
        server.url, retries=2, backoff=0.01, breaker_threshold=4, breaker_cooldown=60, concurrency=1
    )
    results = run(ask(backend, queries(10)))
    assert all(r.error for r in results)
    assert server.chat_count == 4  # then every request failed at once
    assert backend.breaker.is_open
    assert any("circuit breaker open" in (r.error or "") for r in results)
    assert "HTTP 500" in (results[-1].error or "")  # the open breaker says why


def test_circuit_breaker_half_opens_after_cooldown(misbehaving_server: Any) -> None:
    server = misbehaving_server(mode="500")
    backend = server_backend(server.url, retries=0, breaker_threshold=2, breaker_cooldown=0.3)

    async def main() -> list[Any]:
        first = await backend.yes_no(queries(3))
        server.mode = "ok"
        await asyncio.sleep(0.35)
        second = await backend.yes_no(queries(2))
        await backend.aclose()
        return [*first, *second]

    results = run(main())
    assert all(r.error for r in results[:3])
    assert all(r.error is None for r in results[3:])
    assert not backend.breaker.is_open


def test_concurrency_bound_holds(misbehaving_server: Any) -> None:
    server = misbehaving_server(delay=0.1)
    backend = server_backend(server.url, concurrency=3)
    results = run(ask(backend, queries(15)))
    assert all(r.error is None for r in results)
    assert server.max_in_flight == 3  # reached, never passed


def test_generate_sends_json_schema_and_chat_turns(misbehaving_server: Any) -> None:
    server = misbehaving_server()
    backend = server_backend(server.url)
    img = Image.new("RGB", (16, 16), "blue")
    chat = [
        Message.user("Think.", img, "Is it blue?"),
        Message.assistant("It looks blue."),
        Message.user("Summarise as JSON."),
    ]
    schema = {"type": "object", "properties": {"rating": {"enum": ["Yes", "No"]}}}

    async def main() -> Any:
        out = await backend.generate([chat], 50, json_schema=schema)
        await backend.aclose()
        return out

    [gen] = run(main())
    assert gen.error is None and '"rating": "Yes"' in gen.text
    body = next(r for r in server.requests if r["path"] == "/v1/chat/completions")["body"]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert body["temperature"] == 0.0 and body["max_tokens"] == 50


def test_generate_failure_is_an_error_result(misbehaving_server: Any) -> None:
    server = misbehaving_server(mode="500")
    backend = server_backend(server.url, retries=1)

    async def main() -> Any:
        out = await backend.generate([[Message.user("hi")]], 5)
        await backend.aclose()
        return out

    [gen] = run(main())
    assert gen.text == "" and gen.error is not None and "HTTP 500" in gen.error


def test_logprobs_disabled_is_a_logprobs_error(misbehaving_server: Any) -> None:
    server = misbehaving_server(logprobs=False)
    with pytest.raises(LogprobsError) as info:
        run(ask(server_backend(server.url), queries(1)))
    assert "--max-logprobs 20" in str(info.value) and info.value.exit_code == 6


def test_no_vision_is_a_no_vision_error(misbehaving_server: Any) -> None:
    server = misbehaving_server(vision=False)
    with pytest.raises(NoVisionError) as info:
        run(ask(server_backend(server.url), queries(1)))
    assert "--limit-mm-per-prompt" in str(info.value) and info.value.exit_code == 5


def test_multi_token_labels_is_a_tokenizer_error(misbehaving_server: Any) -> None:
    server = misbehaving_server(multi_token_labels=True)
    with pytest.raises(TokenizerError) as info:
        run(ask(server_backend(server.url), queries(1)))
    assert info.value.exit_code == 7


def test_api_key_is_sent_but_never_shown(
    misbehaving_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key = "sk-very-secret-123"
    monkeypatch.setenv("JUDGE_API_KEY", key)
    caplog.set_level(logging.DEBUG)
    server = misbehaving_server(mode="500")
    backend = server_backend(server.url, retries=1, breaker_threshold=1)
    results = run(ask(backend, queries(2)))
    assert all(r.error for r in results)
    assert {r["headers"].get("Authorization") for r in server.requests} == {f"Bearer {key}"}
    shown = [repr(backend), str(backend.__dict__), caplog.text, *(r.error or "" for r in results)]
    assert not any(key in text for text in shown)
    assert "***" in repr(backend)


def test_api_key_refused_names_the_settings(misbehaving_server: Any) -> None:
    server = misbehaving_server(require_key="the-right-key")
    with pytest.raises(BackendError) as info:
        run(ask(server_backend(server.url, api_key="wrong-key-xyz"), queries(1)))
    assert "refused the API key" in str(info.value) and "JUDGE_API_KEY" in str(info.value)
    assert "wrong-key-xyz" not in str(info.value)
    [result] = run(ask(server_backend(server.url, api_key="the-right-key"), queries(1)))
    assert result.error is None


def test_api_key_from_file(misbehaving_server: Any, tmp_path: Any) -> None:
    server = misbehaving_server(require_key="from-a-file")
    (tmp_path / "key").write_text("from-a-file\n")
    [result] = run(ask(server_backend(server.url, api_key=f"@{tmp_path / 'key'}"), queries(1)))
    assert result.error is None


def test_one_backend_across_event_loops(misbehaving_server: Any) -> None:
    server = misbehaving_server()
    backend = server_backend(server.url)
    first = asyncio.run(backend.yes_no(queries(1)))
    second = asyncio.run(backend.yes_no(queries(1)))  # a new loop: a new client, same answers
    assert first[0].m == second[0].m is not None
    assert server.count("/v1/models") == 1  # started once


# -- judge doctor against the misbehaving server -------------------------------------------


def doctor_rows(url: str, **options: Any) -> dict[str, Any]:
    from judge.models.doctor import diagnose

    return {c.name: c for c in diagnose("vllm-server", server=url, **{**FAST, **options})}


def test_doctor_all_good(misbehaving_server: Any) -> None:
    from judge.models.doctor import raise_for

    server = misbehaving_server()
    rows = doctor_rows(server.url)
    assert all(c.ok for c in rows.values()), rows
    assert "logprob_token_ids works" in rows["logprobs"].found
    raise_for(list(rows.values()))


def test_doctor_logprobs_disabled(misbehaving_server: Any) -> None:
    from judge.models.doctor import raise_for

    server = misbehaving_server(logprobs=False)
    rows = doctor_rows(server.url)
    assert not rows["logprobs"].ok and "--max-logprobs 20" in rows["logprobs"].found
    with pytest.raises(LogprobsError) as info:
        raise_for(list(rows.values()))
    assert "--max-logprobs 20" in info.value.fix and info.value.exit_code == 6


def test_doctor_old_server_with_top_k_passes(misbehaving_server: Any) -> None:
    server = misbehaving_server(token_ids=False)
    rows = doctor_rows(server.url)
    assert rows["logprobs"].ok and "ignores logprob_token_ids" in rows["logprobs"].found


def test_doctor_no_vision(misbehaving_server: Any) -> None:
    from judge.models.doctor import raise_for

    server = misbehaving_server(vision=False)
    rows = doctor_rows(server.url)
    assert not rows["vision"].ok and "--limit-mm-per-prompt" in rows["vision"].found
    with pytest.raises(NoVisionError):
        raise_for(list(rows.values()))


def test_doctor_multi_token_labels(misbehaving_server: Any) -> None:
    from judge.models.doctor import raise_for

    server = misbehaving_server(multi_token_labels=True)
    rows = doctor_rows(server.url)
    assert not rows["labels"].ok
    with pytest.raises(TokenizerError) as info:
        raise_for(list(rows.values()))
    assert "single tokens" in info.value.fix


def test_doctor_server_down(down_url: str) -> None:
    from judge.models.doctor import raise_for

    rows = doctor_rows(down_url)
    assert list(rows) == ["server"] and not rows["server"].ok
    with pytest.raises(BackendError) as info:
        raise_for(list(rows.values()))
    assert down_url in str(info.value) and type(info.value) is BackendError


def test_doctor_wrong_model(misbehaving_server: Any) -> None:
    server = misbehaving_server(model="other/model")
    rows = doctor_rows(server.url, model="toy-vlm")
    assert rows["server"].ok and not rows["model"].ok and "other/model" in rows["model"].found


def test_doctor_command_prints_table_and_exit_code(
    misbehaving_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from judge.cli import main

    server = misbehaving_server(logprobs=False)
    with pytest.raises(SystemExit) as info:
        main(["doctor", "--server", server.url])
    out = capsys.readouterr()
    assert info.value.code == 6  # LogprobsError's own exit code
    assert "logprobs" in out.out and "FAIL" in out.out and "--max-logprobs 20" in out.err
    good = misbehaving_server()
    with pytest.raises(SystemExit) as info:
        main(["doctor", "--server", good.url])
    assert info.value.code == 0


def test_first_query_about_an_image_goes_alone(misbehaving_server: Any) -> None:
    """vLLM reuses a prefix only once a request has computed it: the first query about a
    new image is sent alone, the rest together after it; a known image sends all at once."""
    server = misbehaving_server(delay=0.3)
    other = YesNoQuery("Look.", "Statement: blue?", Image.new("RGB", (32, 32), (0, 0, 255)))

    async def main() -> list[int]:
        backend = server_backend(server.url)
        peaks = []
        try:
            # Image one: 1 query alone, then 3 at once; image two: 1, beside the first.
            for batch in ([*queries(4), other], queries(4), queries(4, image=False)):
                server.max_in_flight = 0
                await backend.yes_no(batch)
                peaks.append(server.max_in_flight)
        finally:
            await backend.aclose()
        return peaks

    # Then the known image: all 4 at once; and with no image, no prefix to warm.
    assert run(main()) == [3, 4, 4]
