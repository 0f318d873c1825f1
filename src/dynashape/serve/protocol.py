"""The OpenAI completions wire format: the request schema, errors, and response bodies.

https://platform.openai.com/docs/api-reference/completions

Fields follow OpenAI's types strictly (a string where a number belongs is a 400, not a guess);
unknown fields are ignored, since clients send extras. Defaults are OpenAI's: max_tokens 16,
temperature 1 (send 0 for greedy), top_p 1; without a seed each request draws a random one.
Options this server does not implement (n > 1, best_of, echo, logprobs, suffix, penalties,
logit_bias) are a 400 rather than silently ignored. Extensions, as other servers spell them:
``top_k``, ``stop_token_ids``, ``ignore_eos``, and ``token_ids`` in every choice (the generated ids;
for an engine without a tokenizer the text is those ids joined with commas). Every error body is
``{"error": {"message", "type", "param", "code"}}`` with our one-line "what is wrong. Fix: ..." message.
"""
from __future__ import annotations

import json
from typing import Annotated, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from ..errors import DynashapeError

Float = Annotated[float, Field(strict=True)]
INT64 = 2 ** 63
EXAMPLE = '{"model": "gpt2", "prompt": [464, 3290], "max_tokens": 16}'


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: Optional[StrictBool] = False


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    prompt: Union[StrictStr, list[StrictStr], list[StrictInt], list[list[StrictInt]]]
    max_tokens: Optional[Annotated[int, Field(strict=True, ge=1)]] = 16
    temperature: Optional[Annotated[float, Field(strict=True, ge=0.0, le=2.0)]] = 1.0
    top_p: Optional[Annotated[float, Field(strict=True, gt=0.0, le=1.0)]] = 1.0
    top_k: Optional[Annotated[int, Field(strict=True, ge=0, lt=INT64)]] = 0
    seed: Optional[Annotated[int, Field(strict=True, ge=-INT64, lt=INT64)]] = None
    stop: Union[None, StrictStr, list[StrictStr]] = None
    stop_token_ids: Optional[list[StrictInt]] = None
    ignore_eos: Optional[StrictBool] = False
    stream: Optional[StrictBool] = False
    stream_options: Optional[StreamOptions] = None
    n: Optional[StrictInt] = 1
    best_of: Optional[StrictInt] = None
    echo: Optional[StrictBool] = False
    logprobs: Optional[StrictInt] = None
    suffix: Optional[StrictStr] = None
    presence_penalty: Optional[Float] = 0.0
    frequency_penalty: Optional[Float] = 0.0
    logit_bias: Optional[dict[str, Float]] = None
    user: Optional[StrictStr] = None

    def unsupported(self) -> tuple[str, str] | None:
        """(field, value) of the first option this server does not implement, set to a non-default."""
        checks = (("n", self.n not in (None, 1)), ("best_of", self.best_of not in (None, 1)),
                  ("echo", bool(self.echo)), ("logprobs", self.logprobs is not None),
                  ("suffix", bool(self.suffix)), ("presence_penalty", bool(self.presence_penalty)),
                  ("frequency_penalty", bool(self.frequency_penalty)), ("logit_bias", bool(self.logit_bias)))
        for name, bad in checks:
            if bad:
                return name, getattr(self, name)
        return None


class APIError(Exception):
    """An HTTP error in OpenAI's shape; ``message`` is one line: what is wrong. Fix: what to do."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    @classmethod
    def bad(cls, error: DynashapeError | str, fix: str = "", param: str | None = None) -> "APIError":
        text = error if isinstance(error, str) else error.one_line()
        if fix:
            text = DynashapeError(text, fix).one_line()
        return cls(400, text, "invalid_request_error", param)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def parse_request(raw: bytes) -> CompletionRequest:
    """The body as JSON whatever its Content-Type (``curl -d`` says form-urlencoded), then the schema."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        where = f" (at character {e.pos})" if isinstance(e, json.JSONDecodeError) else ""
        raise APIError.bad(f"the request body is not valid JSON{where}.", f"send a JSON object such as {EXAMPLE}.")
    if not isinstance(data, dict):
        raise APIError.bad(f"the request body is a JSON {type(data).__name__}, not an object.",
                           f"send a JSON object such as {EXAMPLE}.")
    try:
        return CompletionRequest.model_validate(data)
    except ValidationError as e:
        raise validation_error(e) from None


def validation_error(exc: ValidationError) -> APIError:
    """Pydantic's first error as one line naming the field; a prompt of the wrong shape gets one sentence."""
    errors = exc.errors()
    first = errors[0]
    loc = [str(x) for x in first.get("loc", ()) if not (isinstance(x, str) and "[" in x)]
    param = loc[0] if loc else None
    if param == "prompt" and first.get("type") != "missing":
        return APIError.bad("prompt must be a string, a list of strings, a list of token ids or a list of lists "
                            "of token ids.", 'send e.g. "prompt": [464, 3290] or "prompt": "Hello".', "prompt")
    where = ".".join(loc) or "the request"
    msg = first.get("msg", "is invalid").rstrip(".")
    if first.get("type") == "missing":
        return APIError.bad(f"{where} is required.", f"add it, e.g. {EXAMPLE}.", param)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return APIError.bad(f"{where}: {msg}, got {_short(first.get('input'))}{more}.",
                        f"send {where} as OpenAI's completions API defines it.", param)


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


# ---- responses -------------------------------------------------------------------------------------

def choice(index: int, text: str, token_ids: list[int], finish_reason: str | None) -> dict:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason, "token_ids": token_ids}


def completion(cid: str, created: int, model: str, choices: list[dict], usage: dict | None) -> dict:
    body = {"id": cid, "object": "text_completion", "created": created, "model": model, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(data) -> bytes:
    """One server-sent event; ``data`` is a dict (JSON) or the literal [DONE]."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()
