"""Reading a /metrics answer: one sample's value, for tests that assert what requests changed."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text answer: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """One sample's value; 0 for a series not yet there (a labelled counter never incremented)."""
    return samples(text).get((name, frozenset((labels or {}).items())), 0.0)
