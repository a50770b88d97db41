"""The photo pipeline's regression set (tests/data/regression, training/pipeline_regression.py):
every committed photo answered as recorded, and a changed rule reported by name."""

from __future__ import annotations

import dataclasses
from functools import cache

from app.ink_params import PARAMS
from training import pipeline_regression as regression


@cache
def _expected() -> tuple[regression.Answer, ...]:
    return tuple(regression.read_expected())


def test_the_regression_set_is_answered_as_recorded() -> None:
    found = regression.answers()
    changes = regression.moved(list(_expected()), found)
    # On failure the message is the report: each moved answer and the rule that moved it.
    # If the change was meant, `make regression-set` (or --record) accepts the new answers.
    assert not changes, regression.report(changes, len(found))


def test_the_set_holds_digits_and_refusals_of_several_rules() -> None:
    answers = _expected()
    assert 200 <= len(answers) <= 400
    assert sum(a.answer == "read" for a in answers) >= 150
    assert {a.rule for a in answers} >= {"model", "no_mark", "blank", "noise"}


def test_a_changed_rule_names_itself_in_the_report() -> None:
    """A haze threshold far too strict refuses written digits, and the report says so."""
    strict = dataclasses.replace(PARAMS, haze=0.1)
    changes = regression.moved(list(_expected()), regression.answers(params=strict))
    assert changes
    by_haze = [c for c in changes if c.rule == "haze"]
    assert len(by_haze) >= len(changes) // 2
    assert all(c.after.answer == "no_digit" for c in by_haze)
    assert any(c.before.answer == "read" for c in by_haze)  # written digits, now refused
    report = regression.report(changes, len(_expected()))
    assert "haze" in report.splitlines()[0]
    assert by_haze[0].before.file in report
