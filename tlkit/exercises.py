"""Automatic feedback for the notebooks' exercises.

Each exercise ends with `book.check(name, test, answer, hint)`. An answer still holding its stub (None, `...`, or a
function that raises NotImplementedError) counts as "not attempted" and never raises, so a fresh lesson runs top
to bottom; a wrong answer prints what went wrong and the hint. Solutions end with `book.assert_all_passed()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

NOT_ATTEMPTED, PASSED, FAILED = "not attempted", "passed", "failed"


@dataclass
class ExerciseBook:
    """The exercises of one notebook and how each went."""

    title: str
    results: dict[str, str] = field(default_factory=dict)

    def check(self, name: str, test: Callable[[Any], object], answer: Any, hint: str = "") -> bool:
        """Run `test(answer)` (it asserts); print feedback; record and return whether the exercise passed."""
        status, detail = _run(test, answer)
        self.results[name] = status
        if status == PASSED:
            print(f"✅ {name}: correct.")
        elif status == NOT_ATTEMPTED:
            print(f"📝 {name}: not attempted yet. Replace the stub under '# YOUR CODE HERE' and run the cell again.")
        else:
            print(f"❌ {name}: not quite. {detail}".rstrip())
            if hint:
                print(f"   Hint: {hint}")
        return status == PASSED

    def report(self) -> str:
        """A one-line-per-exercise summary (also printed)."""
        lines = [f"{self.title}: {sum(s == PASSED for s in self.results.values())}/{len(self.results)} exercises passed"]
        lines += [f"  {'✅' if s == PASSED else '·'} {n} ({s})" for n, s in self.results.items()]
        text = "\n".join(lines)
        print(text)
        return text

    def assert_all_passed(self) -> None:
        """Raise AssertionError unless every checked exercise passed (the solutions' final check)."""
        if not self.results:
            raise AssertionError(f"{self.title}: no exercise was checked; a notebook with exercises must call book.check().")
        missing = [n for n, s in self.results.items() if s != PASSED]
        if missing:
            raise AssertionError(f"{self.title}: these exercises did not pass: {missing}")


def _is_stub(answer: Any) -> bool:
    return answer is None or answer is Ellipsis


def _run(test: Callable[[Any], object], answer: Any) -> tuple[str, str]:
    if _is_stub(answer):
        return NOT_ATTEMPTED, ""
    try:
        outcome = test(answer)
    except NotImplementedError:
        return NOT_ATTEMPTED, ""
    except AssertionError as err:
        return FAILED, str(err)
    except Exception as err:  # a learner's bug: show it, don't kill the notebook
        return FAILED, f"{type(err).__name__}: {err}"
    if outcome is False:
        return FAILED, "the check returned False."
    return PASSED, ""
