"""What a batch costs: standard prices per model, at the batch rate (50% of standard).

Prices are USD per million tokens at the standard (non-batch) rate; a model id matches the
longest entry it starts with (``claude-sonnet-4-5-20250929`` uses ``claude-sonnet-4-5``).
`[plugins.batch.prices]` adds or overrides entries. Cache writes cost 1.25x input, cache reads
0.1x input. A model with no entry is priced as the most expensive one, so a reservation is never
too small; the log says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BATCH_RATE = 0.5
CACHE_WRITE = 1.25
CACHE_READ = 0.1


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float


STANDARD: dict[str, Price] = {
    "claude-opus-4-5": Price(5.0, 25.0),
    "claude-opus-4-1": Price(15.0, 75.0),
    "claude-opus-4": Price(15.0, 75.0),
    "claude-sonnet-4-5": Price(3.0, 15.0),
    "claude-sonnet-4": Price(3.0, 15.0),
    "claude-3-7-sonnet": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-3-5-haiku": Price(0.8, 4.0),
    "claude-3-haiku": Price(0.25, 1.25),
}


class PriceTable:
    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self.prices = {**STANDARD, **(overrides or {})}
        self.fallback = max(self.prices.values(), key=lambda p: p.output_per_mtok)

    def price(self, model: str) -> tuple[Price, bool]:
        """The price for `model`, and whether it was known."""
        matches = [name for name in self.prices if model.startswith(name)]
        if not matches:
            return self.fallback, False
        return self.prices[max(matches, key=len)], True

    def cost(self, model: str, usage: Mapping[str, Any]) -> float:
        """The batch-rate cost in USD of one result's `usage`."""
        price, _ = self.price(model)
        per_input = price.input_per_mtok / 1e6
        total = (
            (usage.get("input_tokens") or 0) * per_input
            + (usage.get("cache_creation_input_tokens") or 0) * per_input * CACHE_WRITE
            + (usage.get("cache_read_input_tokens") or 0) * per_input * CACHE_READ
            + (usage.get("output_tokens") or 0) * price.output_per_mtok / 1e6
        )
        return total * BATCH_RATE

    def upper_bound(self, model: str, input_bytes: int, max_tokens: int) -> float:
        """At most what one request can cost: every input byte a token (no tokenizer makes
        more tokens than UTF-8 bytes), plus `max_tokens` of output, at the batch rate."""
        price, _ = self.price(model)
        tokens_in = input_bytes + 16  # role and message framing
        return (
            math.fsum([tokens_in * price.input_per_mtok, max_tokens * price.output_per_mtok])
            / 1e6
            * BATCH_RATE
        )
