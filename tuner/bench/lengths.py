"""Prompt lengths in the server's own tokens when no local tokenizer is given.

Without a tokenizer, prompts are made of common words (tuner.bench.prompts). A word is one token
in the big BPE vocabularies, but not in every one: the demo model's small vocabulary spends about
three tokens on each, so `--input-len 128` once sent 406 prompt tokens. Before a run, the bench
therefore prices every prompt word in the server's tokens:

1. **`/tokenize`** (vLLM's server and Tandem's gateway answer it at their root): each word's exact
   token count, then one check that a long run of words costs the sum of its words (it does for
   tokenizers that split on spaces first). Prompts are then exact to the token.
2. **Usage calibration**, for servers without `/tokenize`: two one-token completions of 32 and 160
   words; the slope of `usage.prompt_tokens` is the mean cost of a word (the template and special
   tokens cancel out). Lengths are then right on average only, and the run says so before it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import numpy as np

from tuner.bench.config import Endpoint
from tuner.bench.prompts import COMMON_WORDS

_SHORT, _LONG = 32, 160
_CHECK_WORDS = 256
_CHECK_TOLERANCE = 0.02
_PROBE_ERRORS = (LookupError, aiohttp.ClientError, TimeoutError, KeyError, ValueError, TypeError)


@dataclass(frozen=True)
class WordTokens:
    """What each prompt word costs in the server's tokens: exact per word (from `/tokenize`), or
    one calibrated mean (from usage), with a note for the user when lengths are not exact."""

    source: Literal["tokenize", "usage"]
    mean: float
    per_word: dict[str, int] | None = None
    note: str = ""

    @property
    def exact(self) -> bool:
        return self.per_word is not None


def _root(endpoint: Endpoint) -> str:
    return endpoint.url.rstrip("/").removesuffix("/v1")


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    async with session.post(url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as response:
        if response.status != 200:
            raise LookupError(f"{url} answered {response.status}")
        return await response.json()


async def _from_tokenize(
    session: aiohttp.ClientSession, endpoint: Endpoint, headers: dict[str, str]
) -> WordTokens | None:
    url = f"{_root(endpoint)}/tokenize"

    async def count(text: str) -> int:
        answer = await _post(
            session, url, {"model": endpoint.model, "prompt": text, "add_special_tokens": False}, headers
        )
        return int(answer["count"])

    sample = [COMMON_WORDS[i % len(COMMON_WORDS)] for i in range(0, _CHECK_WORDS * 7, 7)]
    try:
        costs = {word: await count(f" {word}") for word in COMMON_WORDS}  # one at a time: cheap, and no burst
        whole = await count("".join(f" {word}" for word in sample))
    except _PROBE_ERRORS:
        return None
    summed = sum(costs[word] for word in sample)
    mean = float(np.mean(list(costs.values())))
    if abs(whole - summed) > _CHECK_TOLERANCE * summed:
        return WordTokens(
            "tokenize",
            whole / len(sample),
            note=f"the server's tokenizer merges across words ({whole} tokens for words costing {summed} "
            "one by one): prompt lengths are right on average only",
        )
    return WordTokens("tokenize", mean, per_word=costs)


async def _from_usage(session: aiohttp.ClientSession, endpoint: Endpoint, headers: dict[str, str]) -> WordTokens:
    rng = np.random.default_rng(0)

    async def prompt_tokens(words: int) -> int:
        text = "".join(f" {w}" for w in rng.choice(COMMON_WORDS, size=words))
        body: dict[str, Any] = {"model": endpoint.model, "max_tokens": 1}
        if endpoint.api == "completions":
            body["prompt"] = text
        else:
            body["messages"] = [{"role": "user", "content": text}]
        answer = await _post(session, endpoint.request_url, body, headers)
        return int(answer["usage"]["prompt_tokens"])

    mean = (await prompt_tokens(_LONG) - await prompt_tokens(_SHORT)) / (_LONG - _SHORT)
    return WordTokens(
        "usage",
        max(mean, 0.1),
        note=f"{endpoint.url} has no /tokenize: prompt lengths come from a calibrated {mean:.2f} tokens per "
        "word and are right on average only (pass --tokenizer DIR for exact lengths)",
    )


_PRICED: dict[tuple[str, str, str], WordTokens] = {}
"""Prices already found in this process, per (url, model, api): a sweep's runs ask once."""


async def price_words(session: aiohttp.ClientSession, endpoint: Endpoint, headers: dict[str, str]) -> WordTokens:
    """What prompt words cost on this server: from `/tokenize` if it answers, else from usage."""
    key = (endpoint.url, endpoint.model, endpoint.api)
    if key in _PRICED:
        return _PRICED[key]
    words = await _from_tokenize(session, endpoint, headers)
    if words is None:
        try:
            words = await _from_usage(session, endpoint, headers)
        except _PROBE_ERRORS as exc:  # not kept: the next run asks again
            return WordTokens(
                "usage", 1.0, note=f"could not calibrate prompt lengths ({exc!r}): one token per word is assumed"
            )
    _PRICED[key] = words
    return words
