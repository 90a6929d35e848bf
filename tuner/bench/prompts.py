"""Random prompts of a target token length, deterministic for a given seed.

With the endpoint's tokenizer at hand (a local model directory), prompts are random tokens
drawn from the vocabulary (special tokens excluded), decoded to text, and re-encoded and
trimmed until the text encodes to exactly the target count: the method of vLLM's random
dataset. Without it, random words from a list of common English words, priced in the server's
own tokens before the run (tuner.bench.lengths): with each word's exact cost (`word_costs`) a
prompt is drawn word by word to exactly the target; with only a mean cost (`tokens_per_word`) the
word count is scaled to hit the target on average. Either way no metric uses these targets: token
counts come from the server's `usage`, and results report the actual mean input length.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from tuner.bench.config import WorkloadSpec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

COMMON_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there one all we their been has more if will would about "
    "so out up them some what time only when can other new into two may first then do any like "
    "my now over such our man me even most made after also did many before must through back "
    "years where much your way well down should because each just those people how too little "
    "state good very make world still own see men work long get here between both life being "
    "under never day same another know while last might us great old year off come since against "
    "go came right used take three"
).split()
_WORDS = np.array([f" {word}" for word in COMMON_WORDS])
_RETOKENIZE_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class Prompt:
    text: str
    target_input_len: int
    output_len: int


def length_range(mean: int, ratio: float) -> tuple[int, int]:
    """Inclusive [low, high] of lengths drawn for ``mean`` and ``range_ratio`` (vLLM's formula)."""
    return max(1, math.floor(mean * (1 - ratio))), max(1, math.ceil(mean * (1 + ratio)))


@lru_cache(maxsize=4)
def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@lru_cache(maxsize=4)
def prompt_token_ids(tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """Token ids safe to build prompts from: not special, and whole characters on their own.

    Byte-fallback tokens (pieces of a UTF-8 character) decode to U+FFFD, and text full of
    those does not re-encode to the same count; leaving them out makes lengths exact.
    """
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special]
    pieces = tokenizer.batch_decode([[i] for i in ids])
    return np.array([i for i, piece in zip(ids, pieces, strict=True) if piece and "\ufffd" not in piece])


class PromptFactory:
    """Makes the prompts of one traffic stream, in a reproducible order.

    ``seed`` and ``stream`` together pick the random sequence, so streams of one run and
    runs with different seeds do not share prompts (which would hit the server's prefix cache).
    """

    def __init__(
        self,
        workload: WorkloadSpec,
        *,
        seed: int,
        stream: int,
        tokenizer: PreTrainedTokenizerBase | None = None,
        word_costs: Mapping[str, int] | None = None,
        tokens_per_word: float = 1.0,
    ) -> None:
        self._workload = workload
        self._rng = np.random.default_rng([seed, stream])
        self._tokenizer = tokenizer
        self._tokens_per_word = tokens_per_word
        self._costs = np.array([word_costs[w] for w in COMMON_WORDS]) if word_costs is not None else None
        self._input_range = length_range(workload.input_len, workload.range_ratio)
        self._output_range = length_range(workload.output_len, workload.range_ratio)
        if tokenizer is not None:
            self._allowed = prompt_token_ids(tokenizer)
        self._ready: deque[Prompt] = deque()

    def prepare(self, count: int) -> None:
        """Make the next ``count`` prompts now, so building them costs nothing during the run.

        The order is the same as making them one by one, so results do not depend on it.
        """
        self._ready.extend(self._make() for _ in range(count))

    def next(self) -> Prompt:
        return self._ready.popleft() if self._ready else self._make()

    def _make(self) -> Prompt:
        input_len = int(self._rng.integers(self._input_range[0], self._input_range[1] + 1))
        output_len = int(self._rng.integers(self._output_range[0], self._output_range[1] + 1))
        text = self._from_tokens(input_len) if self._tokenizer is not None else self._from_words(input_len)
        return Prompt(text=text, target_input_len=input_len, output_len=output_len)

    def _from_words(self, length: int) -> str:
        if self._costs is None:
            count = max(1, round(length / self._tokens_per_word))
            return "".join(self._rng.choice(_WORDS, size=count)).lstrip()
        # Exact: draw words while they fit; once one does not, draw among those that do. The
        # leading space stays, since each word was priced with it.
        picked: list[int] = []
        remaining = length
        while remaining > 0:
            index = int(self._rng.integers(len(_WORDS)))
            if self._costs[index] > remaining:
                fitting = np.flatnonzero(self._costs <= remaining)
                if not len(fitting):
                    break
                index = int(fitting[self._rng.integers(len(fitting))])
            picked.append(index)
            remaining -= int(self._costs[index])
        return "".join(_WORDS[picked])

    def _from_tokens(self, length: int) -> str:
        tokenizer = self._tokenizer
        assert tokenizer is not None
        tokens = self._allowed[self._rng.integers(0, len(self._allowed), size=length)].tolist()
        # Decoding and re-encoding can merge or split tokens; adjust until the count holds.
        for _ in range(_RETOKENIZE_ATTEMPTS):
            text = tokenizer.decode(tokens)
            tokens = tokenizer.encode(text, add_special_tokens=False)
            if len(tokens) == length:
                return text
            if len(tokens) > length:
                tokens = tokens[:length]
            else:
                extra = self._rng.integers(0, len(self._allowed), size=length - len(tokens))
                tokens = tokens + self._allowed[extra].tolist()
        return tokenizer.decode(tokens)
