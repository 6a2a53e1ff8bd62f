"""Assertions shared by the tests of the exercise checks (tests/test_checks_*.py)."""


def the_only_hint(result) -> str:
    """The single hint a failed check shows; a test fails when a mistake is confused with another."""
    hints = {case.hint for case in result.cases if case.hint}
    assert len(hints) == 1, result.report()
    return hints.pop()


def assert_fails_with_hint(result, words_of_the_hint: str) -> None:
    assert not result
    assert result.status == "failed"
    assert words_of_the_hint in the_only_hint(result), result.report()
    assert f"hint: {the_only_hint(result)}" in result.report()


def assert_passes(result) -> None:
    assert bool(result), result.report()
    assert result.status == "passed"
    assert "✗" not in result.report()
