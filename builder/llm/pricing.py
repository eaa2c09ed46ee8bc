"""Prices of paid models: ``llm.prices`` maps a model (or a prefix of its name) to dollars per 1M tokens."""

from __future__ import annotations

BATCH_DISCOUNT = 0.5  # the Batch API costs half of the online price


def price_of(prices: dict, model: str) -> dict | None:
    """The price entry for a model: exact name, else the longest configured prefix (gpt-4o-2024-08-06 -> gpt-4o)."""
    if not prices:
        return None
    if model in prices:
        return prices[model]
    matches = [name for name in prices if model.startswith(name)]
    return prices[max(matches, key=len)] if matches else None


def cost_of(prices: dict, model: str, prompt_tokens: int, completion_tokens: int, factor: float = 1.0) -> float:
    price = price_of(prices, model)
    if not price:
        return 0.0
    return factor * (prompt_tokens * float(price.get("input", 0)) + completion_tokens * float(price.get("output", 0))) / 1e6
