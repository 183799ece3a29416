"""The OpenAI-compatible request bodies the gateway accepts, validated with field-named errors.

Only what the gateway itself needs is typed: the model name, the prompt or the messages (to count
prompt tokens and to find the prefix for affinity routing), ``max_tokens`` (the output the request
may cost), ``stream`` and ``stream_options``, and ``user`` (a session key). Every other field is
passed to the replica untouched (``extra="allow"``), so sampling parameters work as the engine
defines them. Purely computational.

Token counts before the engine has seen a prompt are estimates: one per token id, about four
characters per token for text (the simulated engine counts the same way; a real engine's
``usage`` replaces the estimate for metering).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from controlplane.errors import InvalidArgument

DEFAULT_MAX_TOKENS = 16
MAX_TOKENS_LIMIT = 1_000_000
PREFIX_CHARS = 512  # the part of a prompt that decides prefix affinity (a shared system prompt)
PREFIX_TOKEN_IDS = 128
MAX_BODY_BYTES = 4 * 1024 * 1024

MaxTokens = Annotated[StrictInt, Field(ge=1, le=MAX_TOKENS_LIMIT)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    model: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: Annotated[StrictStr, Field(max_length=256)] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=1)] = 1  # one choice per request: tokens are metered per choice


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    include_usage: StrictBool = False


class CompletionBody(_Body):
    prompt: StrictStr | Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)]
    max_tokens: MaxTokens = DEFAULT_MAX_TOKENS


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[dict[str, Any]] | None = None


class ChatBody(_Body):
    messages: Annotated[list[Message], Field(min_length=1, max_length=10_000)]
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None


_Body.model_rebuild()
CompletionBody.model_rebuild()
ChatBody.model_rebuild()


@dataclass(frozen=True, slots=True)
class Call:
    """One validated call: what routing, admission and metering need, and the body to forward."""

    kind: Literal["completions", "chat"]
    model: str
    stream: bool
    include_usage: bool  # the client asked for the usage event of a stream
    prompt_tokens: int  # estimate
    max_tokens: int
    affinity: str  # hex digest of the session id or the prompt prefix
    payload: dict[str, Any]  # the client's body, forwarded (stream_options adjusted for streams)

    @property
    def cost(self) -> int:
        """Tokens the call may cost a replica: the prompt and every output token it may produce."""
        return self.prompt_tokens + self.max_tokens

    def upstream_body(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":")).encode()


def _text_of(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


_UNION_TAGS = frozenset({"str", "int", "bool", "float", "none"})
_UNION_TAG_PREFIXES = ("list[", "dict[", "function-", "literal[")


def _field_error(exc: ValidationError) -> tuple[str, str]:
    """The first error's field as a user writes it (``messages[0].role``), without pydantic's
    union-member tags (``prompt.str``)."""
    first = exc.errors(include_url=False)[0]
    path = ""
    for part in first["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in _UNION_TAGS and not part.startswith(_UNION_TAG_PREFIXES):
            path += f".{part}" if path else part
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    return path or "body", message


def parse(kind: Literal["completions", "chat"], raw: bytes, *, session: str | None = None) -> Call:
    """Validate a request body; :class:`InvalidArgument` names the first bad field."""
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidArgument("body", f"larger than {MAX_BODY_BYTES} bytes")
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument("body", f"not JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise InvalidArgument("body", "expected a JSON object")
    try:
        body: CompletionBody | ChatBody = (
            CompletionBody.model_validate(payload)
            if kind == "completions"
            else ChatBody.model_validate(payload)
        )
    except ValidationError as exc:
        raise InvalidArgument(*_field_error(exc)) from None
    if isinstance(body, CompletionBody):
        if isinstance(body.prompt, str):
            prompt_tokens = max(1, math.ceil(len(body.prompt) / 4))
            prefix = body.prompt[:PREFIX_CHARS]
        else:
            prompt_tokens = len(body.prompt)
            prefix = ",".join(map(str, body.prompt[:PREFIX_TOKEN_IDS]))
        max_tokens = body.max_tokens
    else:
        texts = [_text_of(m.content) for m in body.messages]
        prompt_tokens = max(1, math.ceil(sum(len(t) + 4 for t in texts) / 4))
        prefix = "\x1e".join(texts)[:PREFIX_CHARS]
        max_tokens = body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS
    key = session or body.user
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    if body.stream:  # the gateway always wants the usage event (metering); it hides it when not asked
        payload = {
            **payload,
            "stream_options": {**(payload.get("stream_options") or {}), "include_usage": True},
        }
    return Call(
        kind=kind,
        model=body.model,
        stream=body.stream,
        include_usage=include_usage,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        affinity=_digest("s:" + key if key else "p:" + prefix),
        payload=payload,
    )


def error_body(message: str, *, kind: str, code: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
