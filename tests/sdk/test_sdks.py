"""End-to-end tests of shardgate with the official client SDKs.

A session fixture starts the built-in mock provider (`shardgate
mock-upstream`) and a gateway in front of it with three providers, one per
upstream protocol (openai, anthropic, gemini), all backed by that one mock.
Each test then drives the gateway with one SDK (OpenAI Chat Completions,
OpenAI Responses, Anthropic Messages, Google GenAI) against a model routed
to one provider protocol, so every client protocol meets every provider
protocol: same-protocol pass-through and the translations alike.

The mock's scenarios (see src/mock/mod.rs): a canned text answer (streamed
when asked); a call of the first declared tool when the request declares
tools (a string property named `location` gets "Paris"); "The tool said:
<result>" when the conversation ends with a tool result; `mock-error-429`
in the model name gives a 429 in the provider's own error shape.

Everything runs on loopback. The binary under test is $SHARDGATE_BIN,
default target/debug/shardgate under the repository root.
"""

from __future__ import annotations

import json
import os
import urllib.request
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("SHARDGATE_BIN") or str(REPO / "target" / "debug" / "shardgate")

CLIENT_KEY = "sk-sdk-test-client-key-0123456789"
PROVIDERS = ["openai", "anthropic", "gemini"]
# The mock's canned answer.
CANNED = "Hello from the shardgate mock provider."
# The mock's reasoning in the `think` scenario.
THOUGHT = "The user wrote to the mock provider, so a canned answer will do."
TOOL_RESULT = "Sunny, 22 C"
TIMEOUT = 10.0
STARTUP_TIMEOUT = 15.0

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"location": {"type": "string", "description": "City name"}},
    "required": ["location"],
}
WEATHER_DESC = "Current weather at a location"
QUESTION = "What is the weather in Paris?"
TIME_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
# What the mock's parallel-tools scenario calls: the first two declared tools.
PARALLEL_CALLS = [("get_weather", {"location": "Paris"}), ("get_time", {"city": "Paris"})]


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


class Proc:
    """A shardgate child process whose stdout/stderr go to files; `addr` is
    from its "listening on http://ADDR" line."""

    def __init__(self, name: str, args: list[str], workdir: Path):
        self.name = name
        self.out_path = workdir / f"{name}.stdout"
        self.err_path = workdir / f"{name}.stderr"
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDGATE_")}
        env["RUST_BACKTRACE"] = "1"
        self.popen = subprocess.Popen(
            [BIN, *args],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            env=env,
        )
        self.addr = self._wait_for_address()

    def _wait_for_address(self) -> str:
        marker = "listening on http://"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            text = self.out_path.read_text(errors="replace")
            for line in text.splitlines():
                pos = line.find(marker)
                if pos >= 0:
                    return line[pos + len(marker) :].strip()
            if self.popen.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"{self.name} ({BIN}) did not report its address "
            f"(exit status {self.popen.returncode})\n--- stdout:\n{self.output()}\n"
            f"--- stderr:\n{self.errors()}"
        )

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def errors(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        self._out.close()
        self._err.close()


def gateway_config(mock_addr: str) -> str:
    def provider(name: str, protocol: str, path: str, key: str) -> str:
        return (
            f'[[providers]]\nname = "{name}"\nprotocol = "{protocol}"\n'
            f'base_url = "http://{mock_addr}{path}"\napi_key = "{key}"\n'
            # The error scenarios answer 429/5xx by model name on purpose:
            # the single key must not cool down or be disabled between tests.
            f'pool = {{ cooldown_max_ms = 0, error_threshold = 1000 }}\n\n'
        )

    def model(name: str, provider: str, upstream: str) -> str:
        return f'[[models]]\nname = "{name}"\nprovider = "{provider}"\nupstream_model = "{upstream}"\n\n'

    text = '[server]\nlisten = "127.0.0.1:0"\nshards = 1\ndrain_timeout_ms = 1000\n\n'
    text += f'[[auth.keys]]\nid = "sdk-tests"\nkey = "{CLIENT_KEY}"\n\n'
    text += provider("p-openai", "openai", "/v1", "sk-openai-provider-key")
    text += provider("p-anthropic", "anthropic", "/v1", "sk-ant-provider-key")
    text += provider("p-gemini", "gemini", "/v1beta", "gemini-provider-key")
    for p in PROVIDERS:
        text += model(f"m-{p}", f"p-{p}", "mock-model")
        text += model(f"m-{p}-err", f"p-{p}", "mock-error-429")
        text += model(f"m-{p}-think", f"p-{p}", "mock-model-think")
        text += model(f"m-{p}-stream-err", f"p-{p}", "mock-stream-error")
        text += model(f"m-{p}-parallel", f"p-{p}", "mock-parallel-tools")
    return text


@dataclass
class Stack:
    mock: Proc
    gateway: Proc

    @property
    def url(self) -> str:
        return f"http://{self.gateway.addr}"


@pytest.fixture(scope="session")
def stack():
    if not os.access(BIN, os.X_OK):
        pytest.fail(f"no shardgate binary at {BIN} (build it, or set SHARDGATE_BIN)")
    with tempfile.TemporaryDirectory(prefix="shardgate-sdk-") as tmp:
        workdir = Path(tmp)
        mock = Proc("mock", ["mock-upstream", "--port", "0", "--shards", "1", "--record-requests"], workdir)
        try:
            config = workdir / "gateway.toml"
            config.write_text(gateway_config(mock.addr))
            gateway = Proc("gateway", ["serve", "--config", str(config)], workdir)
        except BaseException:
            mock.stop()
            raise
        s = Stack(mock, gateway)
        try:
            yield s
        finally:
            gateway.stop()
            mock.stop()
            # Shown by pytest only when something failed (-rA shows always).
            print("--- gateway stderr (tail):\n" + "\n".join(gateway.errors().splitlines()[-40:]))


def upstream_request(stack: Stack) -> tuple[str, dict]:
    """The mock's last model request (the tests run one at a time): the
    request line with headers, and the JSON body."""
    with urllib.request.urlopen(f"http://{stack.mock.addr}/mock/last-request", timeout=TIMEOUT) as r:
        rec = json.loads(r.read())
    return rec["head"], json.loads(rec["body"])


def upstream_path(head: str) -> str:
    return head.split(" ")[1]


SYSTEM = "You are terse. Marker: sys-7731."
HISTORY_Q = "Earlier question, marker q-4410"
HISTORY_A = "Earlier answer, marker a-5521"


def check_upstream_options(stack: Stack, provider: str, stop: bool = True) -> None:
    """Checks that the request's system prompt, history and sampling options
    reached the provider in its own fields."""
    head, body = upstream_request(stack)
    text = json.dumps(body)
    for marker in ("sys-7731", "q-4410", "a-5521"):
        assert marker in text, (marker, body)
    if provider == "openai":
        assert upstream_path(head).endswith("/chat/completions"), head
        assert body["messages"][0]["role"] in ("system", "developer"), body
        assert "sys-7731" in json.dumps(body["messages"][0]), body
        assert body.get("max_tokens", body.get("max_completion_tokens")) == 50, body
        assert body["temperature"] == 0.5, body
        if stop:
            assert body["stop"] in (["STOP-X"], "STOP-X"), body
    elif provider == "anthropic":
        assert upstream_path(head) == "/v1/messages", head
        assert "sys-7731" in json.dumps(body["system"]), body
        assert all(m["role"] != "system" for m in body["messages"]), body
        assert body["max_tokens"] == 50, body
        assert body["temperature"] == 0.5, body
        if stop:
            assert body["stop_sequences"] == ["STOP-X"], body
    else:
        assert upstream_path(head).startswith("/v1beta/models/mock-model:"), head
        assert "sys-7731" in json.dumps(body["systemInstruction"]), body
        assert [c.get("role") for c in body["contents"]] == ["user", "model", "user"], body
        gc = body["generationConfig"]
        assert gc["maxOutputTokens"] == 50, body
        assert gc["temperature"] == 0.5, body
        if stop:
            assert gc["stopSequences"] == ["STOP-X"], body


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def oai(stack) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=CLIENT_KEY, base_url=stack.url + "/v1", max_retries=0, timeout=TIMEOUT
    )


@pytest.fixture(scope="session")
def ant(stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key=CLIENT_KEY, base_url=stack.url, max_retries=0, timeout=TIMEOUT
    )


@pytest.fixture(scope="session")
def gem(stack) -> genai.Client:
    return genai.Client(
        api_key=CLIENT_KEY,
        http_options=gtypes.HttpOptions(
            base_url=stack.url,
            api_version="v1beta",
            timeout=int(TIMEOUT * 1000),
            retry_options=gtypes.HttpRetryOptions(attempts=1),
        ),
    )


def model_for(provider: str) -> str:
    return f"m-{provider}"


provider_param = pytest.mark.parametrize("provider", PROVIDERS)
stream_param = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


# ---------------------------------------------------------------------------
# OpenAI Chat Completions
# ---------------------------------------------------------------------------

OAI_CHAT_TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": WEATHER_DESC, "parameters": WEATHER_SCHEMA},
    }
]


@provider_param
def test_chat_text(oai, provider):
    r = oai.chat.completions.create(
        model=model_for(provider), messages=[{"role": "user", "content": "Hello"}]
    )
    assert r.object == "chat.completion"
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == CANNED
    assert choice.finish_reason == "stop"
    assert r.usage is not None and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0


@provider_param
def test_chat_stream_text(oai, provider):
    stream = oai.chat.completions.create(
        model=model_for(provider),
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, ids = "", None, None, set()
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text.strip(), "no content deltas"
    assert set(text.split()) <= set(CANNED.split()), text
    assert finish == "stop"
    assert len(ids) == 1, f"chunks of one stream have different ids: {ids}"
    assert usage is not None and usage.completion_tokens > 0


def _chat_tool_call(oai, provider, stream: bool):
    messages = [{"role": "user", "content": QUESTION}]
    if not stream:
        r = oai.chat.completions.create(
            model=model_for(provider), messages=messages, tools=OAI_CHAT_TOOLS
        )
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls"
        calls = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in choice.message.tool_calls or []
        ]
    else:
        calls_by_index: dict[int, dict] = {}
        finish = None
        for chunk in oai.chat.completions.create(
            model=model_for(provider), messages=messages, tools=OAI_CHAT_TOOLS, stream=True
        ):
            for c in chunk.choices:
                finish = c.finish_reason or finish
                for tc in c.delta.tool_calls or []:
                    slot = calls_by_index.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                    if tc.id:
                        slot["id"] = tc.id
                    if tc.function and tc.function.name:
                        slot["name"] += tc.function.name
                    if tc.function and tc.function.arguments:
                        slot["arguments"] += tc.function.arguments
        assert finish == "tool_calls"
        calls = [calls_by_index[i] for i in sorted(calls_by_index)]
    assert len(calls) == 1, calls
    call = calls[0]
    assert call["id"], "tool call without id"
    assert call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"location": "Paris"}
    return call


@provider_param
@stream_param
def test_chat_tool_round_trip(oai, provider, stream):
    call = _chat_tool_call(oai, provider, stream)
    messages = [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": TOOL_RESULT},
    ]
    r = oai.chat.completions.create(model=model_for(provider), messages=messages, tools=OAI_CHAT_TOOLS)
    assert r.choices[0].finish_reason == "stop"
    assert TOOL_RESULT in (r.choices[0].message.content or "")


@provider_param
@stream_param
def test_chat_error(oai, provider, stream):
    with pytest.raises(openai.RateLimitError) as e:
        r = oai.chat.completions.create(
            model=f"m-{provider}-err", messages=[{"role": "user", "content": "Hello"}], stream=stream
        )
        for _ in r if stream else []:
            pass
    assert e.value.status_code == 429
    assert isinstance(e.value.body, dict) and e.value.message, e.value.body


@provider_param
def test_chat_stream_midway_error(oai, provider):
    """An error event after some content makes the SDK raise while iterating."""
    text = ""
    with pytest.raises(openai.APIError) as e:
        for chunk in oai.chat.completions.create(
            model=f"m-{provider}-stream-err", messages=[{"role": "user", "content": "Hello"}], stream=True
        ):
            for c in chunk.choices:
                text += c.delta.content or ""
    assert text.strip(), "no content before the error"
    assert e.value.message


@provider_param
@stream_param
def test_chat_think(oai, provider, stream):
    """The reasoning comes as `reasoning_content` (the de facto field of
    OpenAI-compatible providers), never mixed into the answer's content."""
    kwargs = dict(model=f"m-{provider}-think", messages=[{"role": "user", "content": "Hello"}])
    if stream:
        text, reasoning = "", ""
        for chunk in oai.chat.completions.create(stream=True, **kwargs):
            for c in chunk.choices:
                text += c.delta.content or ""
                reasoning += (c.delta.model_extra or {}).get("reasoning_content") or ""
        assert set(text.split()) <= set(CANNED.split()), text
    else:
        m = oai.chat.completions.create(**kwargs).choices[0].message
        text, reasoning = m.content, (m.model_extra or {}).get("reasoning_content")
        assert text == CANNED
    assert reasoning == THOUGHT


@provider_param
def test_chat_options(stack, oai, provider):
    r = oai.chat.completions.create(
        model=model_for(provider),
        messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": HISTORY_Q},
            {"role": "assistant", "content": HISTORY_A},
            {"role": "user", "content": "Hello"},
        ],
        max_tokens=50,
        temperature=0.5,
        stop=["STOP-X"],
    )
    assert r.choices[0].message.content == CANNED
    check_upstream_options(stack, provider)


@provider_param
def test_chat_parallel_tools(oai, provider):
    tools = OAI_CHAT_TOOLS + [
        {"type": "function", "function": {"name": "get_time", "parameters": TIME_SCHEMA}}
    ]
    user = {"role": "user", "content": QUESTION}
    m = oai.chat.completions.create(model=f"m-{provider}-parallel", messages=[user], tools=tools).choices[0].message
    calls = m.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == PARALLEL_CALLS
    assert len({c.id for c in calls}) == 2, "tool call ids not distinct"
    messages = [user, m.model_dump(exclude_none=True)] + [
        {"role": "tool", "tool_call_id": c.id, "content": f"{TOOL_RESULT} ({c.function.name})"} for c in calls
    ]
    r = oai.chat.completions.create(model=model_for(provider), messages=messages, tools=tools)
    assert "The tool said:" in r.choices[0].message.content


def test_openai_models_list(oai):
    ids = {m.id for m in oai.models.list()}
    assert {"m-openai", "m-anthropic", "m-gemini"} <= ids, ids


def test_openai_bad_key(stack):
    client = openai.OpenAI(api_key="sk-wrong", base_url=stack.url + "/v1", max_retries=0, timeout=TIMEOUT)
    with pytest.raises(openai.AuthenticationError) as e:
        client.chat.completions.create(model="m-openai", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.status_code == 401


# ---------------------------------------------------------------------------
# OpenAI Responses
# ---------------------------------------------------------------------------

OAI_RESP_TOOLS = [
    {"type": "function", "name": "get_weather", "description": WEATHER_DESC, "parameters": WEATHER_SCHEMA}
]


@provider_param
def test_responses_text(oai, provider):
    r = oai.responses.create(model=model_for(provider), input="Hello")
    assert r.object == "response"
    assert r.status == "completed"
    assert r.output_text == CANNED
    assert r.usage is not None and r.usage.input_tokens > 0 and r.usage.output_tokens > 0


@provider_param
def test_responses_stream_text(oai, provider):
    deltas, types_seen = [], []
    with oai.responses.stream(model=model_for(provider), input="Hello") as stream:
        for event in stream:
            types_seen.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    text = "".join(deltas)
    assert text.strip(), f"no text deltas; events: {types_seen}"
    assert set(text.split()) <= set(CANNED.split()), text
    assert types_seen[0] == "response.created", types_seen
    assert types_seen[-1] == "response.completed", types_seen
    assert final.status == "completed"
    assert final.output_text == text


@provider_param
def test_responses_create_stream(oai, provider):
    text, completed = "", None
    for event in oai.responses.create(model=model_for(provider), input="Hello", stream=True):
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type == "response.completed":
            completed = event.response
    assert completed is not None
    assert text.strip()
    assert completed.output_text == text


@provider_param
@stream_param
def test_responses_tool_round_trip(oai, provider, stream):
    user = {"role": "user", "content": QUESTION}
    if stream:
        with oai.responses.stream(model=model_for(provider), input=[user], tools=OAI_RESP_TOOLS) as s:
            for _ in s:
                pass
            r = s.get_final_response()
    else:
        r = oai.responses.create(model=model_for(provider), input=[user], tools=OAI_RESP_TOOLS)
    calls = [item for item in r.output if item.type == "function_call"]
    assert len(calls) == 1, r.output
    call = calls[0]
    assert call.call_id, "function_call without call_id"
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"location": "Paris"}
    r2 = oai.responses.create(
        model=model_for(provider),
        tools=OAI_RESP_TOOLS,
        input=[
            user,
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT},
        ],
    )
    assert r2.status == "completed"
    assert TOOL_RESULT in r2.output_text


@provider_param
def test_responses_parallel_tools(oai, provider):
    tools = OAI_RESP_TOOLS + [{"type": "function", "name": "get_time", "parameters": TIME_SCHEMA}]
    user = {"role": "user", "content": QUESTION}
    r = oai.responses.create(model=f"m-{provider}-parallel", input=[user], tools=tools)
    calls = [item for item in r.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == PARALLEL_CALLS
    assert len({c.call_id for c in calls}) == 2, "call ids not distinct"
    items = [user]
    items += [{"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments} for c in calls]
    items += [
        {"type": "function_call_output", "call_id": c.call_id, "output": f"{TOOL_RESULT} ({c.name})"} for c in calls
    ]
    r2 = oai.responses.create(model=model_for(provider), input=items, tools=tools)
    assert "The tool said:" in r2.output_text


@provider_param
def test_responses_options(stack, oai, provider):
    r = oai.responses.create(
        model=model_for(provider),
        instructions=SYSTEM,
        input=[
            {"role": "user", "content": HISTORY_Q},
            {"role": "assistant", "content": HISTORY_A},
            {"role": "user", "content": "Hello"},
        ],
        max_output_tokens=50,
        temperature=0.5,
    )
    assert r.output_text == CANNED
    check_upstream_options(stack, provider, stop=False)


@provider_param
@stream_param
def test_responses_think(oai, provider, stream):
    """The reasoning comes as a `reasoning` output item before the message."""
    kwargs = dict(model=f"m-{provider}-think", input="Hello")
    if stream:
        with oai.responses.stream(**kwargs) as s:
            for _ in s:
                pass
            r = s.get_final_response()
    else:
        r = oai.responses.create(**kwargs)
    assert r.output_text == CANNED or (stream and set(r.output_text.split()) <= set(CANNED.split()))
    kinds = [item.type for item in r.output]
    assert kinds == ["reasoning", "message"], kinds
    item = r.output[0]
    parts = [c.text for c in (item.content or [])] + [c.text for c in (item.summary or [])]
    assert THOUGHT in "".join(parts), item


@provider_param
@stream_param
def test_responses_error(oai, provider, stream):
    with pytest.raises(openai.RateLimitError) as e:
        r = oai.responses.create(model=f"m-{provider}-err", input="Hello", stream=stream)
        for _ in r if stream else []:
            pass
    assert e.value.status_code == 429


@provider_param
def test_responses_stream_midway_error(oai, provider):
    """An upstream error after some content ends the stream with a
    `response.failed` event (or an `error` event) after the deltas."""
    text, last = "", None
    try:
        for event in oai.responses.create(model=f"m-{provider}-stream-err", input="Hello", stream=True):
            last = event
            if event.type == "response.output_text.delta":
                text += event.delta
    except openai.APIError:
        last = "raised"
    assert text.strip(), "no content before the error"
    assert last == "raised" or last.type in ("response.failed", "error"), last


# ---------------------------------------------------------------------------
# Anthropic Messages
# ---------------------------------------------------------------------------

ANT_TOOLS = [{"name": "get_weather", "description": WEATHER_DESC, "input_schema": WEATHER_SCHEMA}]


@provider_param
def test_messages_text(ant, provider):
    m = ant.messages.create(
        model=model_for(provider), max_tokens=256, messages=[{"role": "user", "content": "Hello"}]
    )
    assert m.type == "message" and m.role == "assistant"
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == CANNED
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


@provider_param
def test_messages_stream_text(ant, provider):
    with ant.messages.stream(
        model=model_for(provider), max_tokens=256, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip(), "no text deltas"
    assert set(text.split()) <= set(CANNED.split()), text
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@provider_param
@stream_param
def test_messages_tool_round_trip(ant, provider, stream):
    user = {"role": "user", "content": QUESTION}
    kwargs = dict(model=model_for(provider), max_tokens=256, tools=ANT_TOOLS)
    if stream:
        with ant.messages.stream(messages=[user], **kwargs) as s:
            m = s.get_final_message()
    else:
        m = ant.messages.create(messages=[user], **kwargs)
    assert m.stop_reason == "tool_use"
    uses = [b for b in m.content if b.type == "tool_use"]
    assert len(uses) == 1, m.content
    use = uses[0]
    assert use.id, "tool_use without id"
    assert use.name == "get_weather"
    assert use.input == {"location": "Paris"}
    assistant_blocks = []
    for b in m.content:
        if b.type == "text":
            assistant_blocks.append({"type": "text", "text": b.text})
        elif b.type == "tool_use":
            assistant_blocks.append({"type": "tool_use", "id": b.id, "name": b.name, "input": b.input})
    m2 = ant.messages.create(
        messages=[
            user,
            {"role": "assistant", "content": assistant_blocks},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": TOOL_RESULT}],
            },
        ],
        **kwargs,
    )
    assert m2.stop_reason == "end_turn"
    text = "".join(b.text for b in m2.content if b.type == "text")
    assert TOOL_RESULT in text


@provider_param
def test_messages_parallel_tools(ant, provider):
    tools = ANT_TOOLS + [{"name": "get_time", "input_schema": TIME_SCHEMA}]
    user = {"role": "user", "content": QUESTION}
    m = ant.messages.create(model=f"m-{provider}-parallel", max_tokens=256, messages=[user], tools=tools)
    uses = [b for b in m.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == PARALLEL_CALLS
    assert len({u.id for u in uses}) == 2, "tool_use ids not distinct"
    blocks = [{"type": "tool_use", "id": u.id, "name": u.name, "input": u.input} for u in uses]
    results = [
        {"type": "tool_result", "tool_use_id": u.id, "content": f"{TOOL_RESULT} ({u.name})"} for u in uses
    ]
    m2 = ant.messages.create(
        model=model_for(provider),
        max_tokens=256,
        tools=tools,
        messages=[user, {"role": "assistant", "content": blocks}, {"role": "user", "content": results}],
    )
    assert "The tool said:" in "".join(b.text for b in m2.content if b.type == "text")


@provider_param
def test_messages_options(stack, ant, provider):
    m = ant.messages.create(
        model=model_for(provider),
        system=SYSTEM,
        messages=[
            {"role": "user", "content": HISTORY_Q},
            {"role": "assistant", "content": HISTORY_A},
            {"role": "user", "content": "Hello"},
        ],
        max_tokens=50,
        stop_sequences=["STOP-X"],
        # Gone from this SDK's signature, still sent by older clients.
        extra_body={"temperature": 0.5},
    )
    assert m.content[0].text == CANNED
    check_upstream_options(stack, provider)


@provider_param
@stream_param
def test_messages_think(ant, provider, stream):
    """The reasoning comes as a `thinking` block before the text."""
    kwargs = dict(model=f"m-{provider}-think", max_tokens=256, messages=[{"role": "user", "content": "Hello"}])
    if stream:
        with ant.messages.stream(**kwargs) as s:
            m = s.get_final_message()
    else:
        m = ant.messages.create(**kwargs)
    assert [b.type for b in m.content] == ["thinking", "text"], m.content
    assert m.content[0].thinking == THOUGHT
    assert set(m.content[1].text.split()) <= set(CANNED.split())


@provider_param
@stream_param
def test_messages_error(ant, provider, stream):
    kwargs = dict(model=f"m-{provider}-err", max_tokens=64, messages=[{"role": "user", "content": "Hello"}])
    with pytest.raises(anthropic.RateLimitError) as e:
        if stream:
            with ant.messages.stream(**kwargs) as s:
                s.get_final_message()
        else:
            ant.messages.create(**kwargs)
    assert e.value.status_code == 429
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "rate_limit_error", e.value.body


@provider_param
def test_messages_stream_midway_error(ant, provider):
    """An `error` event after some content makes the SDK raise."""
    text = ""
    with pytest.raises(anthropic.APIError) as e:
        with ant.messages.stream(
            model=f"m-{provider}-stream-err", max_tokens=64, messages=[{"role": "user", "content": "Hello"}]
        ) as s:
            for delta in s.text_stream:
                text += delta
    assert text.strip(), "no content before the error"
    assert e.value.message


@provider_param
def test_messages_count_tokens(ant, provider):
    r = ant.messages.count_tokens(
        model=model_for(provider), messages=[{"role": "user", "content": "Hello, how are you today?"}]
    )
    assert isinstance(r.input_tokens, int) and r.input_tokens > 0


def test_anthropic_models_list(ant):
    ids = {m.id for m in ant.models.list()}
    assert {"m-openai", "m-anthropic", "m-gemini"} <= ids, ids


# ---------------------------------------------------------------------------
# Google GenAI
# ---------------------------------------------------------------------------

def gem_tool_config(style: str) -> gtypes.GenerateContentConfig:
    """get_weather declared with a typed `Schema` (sent as `parameters`) or
    with a plain JSON schema (`parameters_json_schema`, which the SDK sends
    under that snake_case name; the Gemini API accepts both spellings)."""
    if style == "schema":
        decl = gtypes.FunctionDeclaration(
            name="get_weather",
            description=WEATHER_DESC,
            parameters=gtypes.Schema(
                type=gtypes.Type.OBJECT,
                properties={"location": gtypes.Schema(type=gtypes.Type.STRING, description="City name")},
                required=["location"],
            ),
        )
    else:
        decl = gtypes.FunctionDeclaration(
            name="get_weather", description=WEATHER_DESC, parameters_json_schema=WEATHER_SCHEMA
        )
    return gtypes.GenerateContentConfig(
        tools=[gtypes.Tool(function_declarations=[decl])],
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
    )


@provider_param
def test_genai_text(gem, provider):
    r = gem.models.generate_content(model=model_for(provider), contents="Hello")
    assert r.text == CANNED
    assert r.candidates[0].finish_reason == gtypes.FinishReason.STOP
    assert r.usage_metadata is not None and r.usage_metadata.prompt_token_count > 0


@provider_param
def test_genai_stream_text(gem, provider):
    text, finish, chunks = "", None, 0
    for chunk in gem.models.generate_content_stream(model=model_for(provider), contents="Hello"):
        chunks += 1
        text += chunk.text or ""
        if chunk.candidates and chunk.candidates[0].finish_reason:
            finish = chunk.candidates[0].finish_reason
    assert chunks >= 1
    assert text.strip(), "no text"
    assert set(text.split()) <= set(CANNED.split()), text
    assert finish == gtypes.FinishReason.STOP


@provider_param
@stream_param
@pytest.mark.parametrize("style", ["schema", "jsonschema"])
def test_genai_tool_round_trip(gem, provider, stream, style):
    config = gem_tool_config(style)
    user = gtypes.Content(role="user", parts=[gtypes.Part(text=QUESTION)])
    if stream:
        calls, parts = [], []
        for chunk in gem.models.generate_content_stream(
            model=model_for(provider), contents=[user], config=config
        ):
            calls += chunk.function_calls or []
            if chunk.candidates and chunk.candidates[0].content:
                parts += chunk.candidates[0].content.parts or []
        model_content = gtypes.Content(role="model", parts=parts)
    else:
        r = gem.models.generate_content(model=model_for(provider), contents=[user], config=config)
        calls = r.function_calls or []
        model_content = r.candidates[0].content
    assert len(calls) == 1, calls
    call = calls[0]
    assert call.name == "get_weather"
    assert call.args == {"location": "Paris"}
    response = gtypes.Content(
        role="user",
        parts=[
            gtypes.Part(
                function_response=gtypes.FunctionResponse(
                    id=call.id, name=call.name, response={"result": TOOL_RESULT}
                )
            )
        ],
    )
    r2 = gem.models.generate_content(
        model=model_for(provider), contents=[user, model_content, response], config=config
    )
    assert not r2.function_calls
    assert TOOL_RESULT in (r2.text or "")


@provider_param
def test_genai_parallel_tools(gem, provider):
    config = gem_tool_config("schema")
    config.tools[0].function_declarations.append(
        gtypes.FunctionDeclaration(name="get_time", parameters_json_schema=TIME_SCHEMA)
    )
    user = gtypes.Content(role="user", parts=[gtypes.Part(text=QUESTION)])
    r = gem.models.generate_content(model=f"m-{provider}-parallel", contents=[user], config=config)
    calls = r.function_calls or []
    assert [(c.name, c.args) for c in calls] == PARALLEL_CALLS
    responses = gtypes.Content(
        role="user",
        parts=[
            gtypes.Part(
                function_response=gtypes.FunctionResponse(
                    id=c.id, name=c.name, response={"result": f"{TOOL_RESULT} ({c.name})"}
                )
            )
            for c in calls
        ],
    )
    r2 = gem.models.generate_content(
        model=model_for(provider), contents=[user, r.candidates[0].content, responses], config=config
    )
    assert "The tool said:" in (r2.text or "")


@provider_param
def test_genai_options(stack, gem, provider):
    r = gem.models.generate_content(
        model=model_for(provider),
        contents=[
            gtypes.Content(role="user", parts=[gtypes.Part(text=HISTORY_Q)]),
            gtypes.Content(role="model", parts=[gtypes.Part(text=HISTORY_A)]),
            gtypes.Content(role="user", parts=[gtypes.Part(text="Hello")]),
        ],
        config=gtypes.GenerateContentConfig(
            system_instruction=SYSTEM, max_output_tokens=50, temperature=0.5, stop_sequences=["STOP-X"]
        ),
    )
    assert r.text == CANNED
    check_upstream_options(stack, provider)


@provider_param
@stream_param
def test_genai_think(gem, provider, stream):
    """The reasoning comes as parts with `thought: true`, and `.text` leaves
    them out."""
    kwargs = dict(model=f"m-{provider}-think", contents="Hello")
    parts = []
    if stream:
        for chunk in gem.models.generate_content_stream(**kwargs):
            if chunk.candidates and chunk.candidates[0].content:
                parts += chunk.candidates[0].content.parts or []
    else:
        r = gem.models.generate_content(**kwargs)
        parts = r.candidates[0].content.parts
    thought = "".join(p.text or "" for p in parts if p.thought)
    text = "".join(p.text or "" for p in parts if not p.thought)
    assert thought == THOUGHT, parts
    assert set(text.split()) <= set(CANNED.split()) and text.strip(), parts


@provider_param
@stream_param
def test_genai_error(gem, provider, stream):
    with pytest.raises(genai_errors.ClientError) as e:
        if stream:
            for _ in gem.models.generate_content_stream(model=f"m-{provider}-err", contents="Hello"):
                pass
        else:
            gem.models.generate_content(model=f"m-{provider}-err", contents="Hello")
    assert e.value.code == 429
    assert e.value.status == "RESOURCE_EXHAUSTED", e.value.details


@provider_param
def test_genai_stream_midway_error(gem, provider):
    """An error chunk after some content makes the SDK raise."""
    text = ""
    with pytest.raises(genai_errors.APIError) as e:
        for chunk in gem.models.generate_content_stream(model=f"m-{provider}-stream-err", contents="Hello"):
            text += chunk.text or ""
    assert text.strip(), "no content before the error"
    assert e.value.code >= 400


@provider_param
def test_genai_count_tokens(gem, provider):
    r = gem.models.count_tokens(model=model_for(provider), contents="Hello, how are you today?")
    assert isinstance(r.total_tokens, int) and r.total_tokens > 0


def test_genai_models_list(gem):
    names = {m.name for m in gem.models.list()}
    assert {"models/m-openai", "models/m-anthropic", "models/m-gemini"} <= names, names
