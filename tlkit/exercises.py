"""Automatic feedback for the notebooks' exercises, hints on request, and end-of-lesson questions.

Each code exercise ends with `book.check(name, test, answer)`. An answer still holding its stub (None, `...`, or a
function that raises NotImplementedError) counts as "not attempted" and never raises, so a fresh lesson runs top to
bottom; a wrong answer prints what went wrong. Hints are never printed unasked: `book.hint(name)` gives the first
(a nudge), the next call the second (more), and so on. Questions (`book.ask`) are multiple choice with feedback on
every option. Solutions end with `book.assert_all_passed()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

NOT_ATTEMPTED, PASSED, FAILED = "not attempted", "passed", "failed"


@dataclass
class Question:
    """A multiple-choice question: options {letter: text}, the correct letter, and feedback {letter: why}."""

    text: str
    options: Mapping[str, str]
    correct: str
    feedback: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.correct not in self.options:
            raise ValueError(f"correct={self.correct!r} is not one of the options {sorted(self.options)}.")

    def show(self) -> str:
        """The question and its options as text."""
        return "\n".join([self.text, *[f"  ({k}) {v}" for k, v in self.options.items()]])


@dataclass
class ExerciseBook:
    """The exercises and questions of one notebook, how each went, and the hints still to give."""

    title: str
    results: dict[str, str] = field(default_factory=dict)
    hints: dict[str, list[str]] = field(default_factory=dict)
    questions: dict[str, Question] = field(default_factory=dict)
    _hints_given: dict[str, int] = field(default_factory=dict, repr=False)

    def add_hints(self, name: str, *hints: str) -> None:
        """Register tiered hints for exercise `name`: a nudge first, then more. Shown only by `hint(name)`."""
        if not hints or not all(isinstance(h, str) and h for h in hints):
            raise ValueError("add_hints needs at least one non-empty hint string, the gentlest first.")
        self.hints[name] = list(hints)

    def hint(self, name: str) -> None:
        """Print the next hint for exercise `name` (each call gives one more, until there are none left)."""
        tiers = self.hints.get(name)
        if not tiers:
            known = ", ".join(repr(n) for n in self.hints) or "none"
            print(f"No hints for {name!r}; exercises with hints: {known}.")
            return
        given = self._hints_given.get(name, 0)
        if given >= len(tiers):
            print(f"💡 {name}: that was the last hint. The solved notebook in solutions/ has the answer.")
            return
        self._hints_given[name] = given + 1
        print(f"💡 {name}, hint {given + 1} of {len(tiers)}: {tiers[given]}")

    def check(self, name: str, test: Callable[[Any], object], answer: Any, hint: str | Sequence[str] = "") -> None:
        """Run `test(answer)` (it asserts); print feedback and record the result. `hint`: hints for `hint(name)`."""
        if hint and name not in self.hints:
            self.add_hints(name, *([hint] if isinstance(hint, str) else hint))
        status, detail = _run(test, answer)
        self.results[name] = status
        if status == PASSED:
            print(f"✅ {name}: correct.")
        elif status == NOT_ATTEMPTED:
            print(f"📝 {name}: not attempted yet. Replace the stub under '# YOUR CODE HERE' and run the cell again.")
        else:
            print(f"❌ {name}: not quite. {detail}".rstrip())
            if name in self.hints:
                print(f"   Stuck? book.hint({name!r}) gives a hint ({len(self.hints[name])} in all, gentlest first).")

    def use(self, name: str, yours: Any, reference: Any, what: str = "the reference version") -> Any:
        """`yours` once exercise `name` has passed, else `reference` (and say so): later cells run before it is solved."""
        if self.results.get(name) == PASSED:
            return yours
        print(f"ℹ️ {name}: not solved yet, so the cells below use {what}; solve it and run them again to use yours.")
        return reference

    def ask(self, name: str, question: Question) -> None:
        """Register and print a multiple-choice question; the learner answers with `answer(name, letter)`."""
        self.questions[name] = question
        self.results.setdefault(name, NOT_ATTEMPTED)
        print(f"❓ {name}: {question.show()}\n   Answer with book.answer({name!r}, 'letter').")

    def answer(self, name: str, choice: str | None) -> None:
        """Check a multiple-choice answer and print the feedback for the chosen option."""
        if name not in self.questions:
            raise KeyError(f"No question {name!r}; run the cell that asks it first (questions: {sorted(self.questions)}).")
        q = self.questions[name]
        if choice is None or choice is Ellipsis:
            self.results[name] = NOT_ATTEMPTED
            print(f"📝 {name}: not answered yet. Put one of {sorted(q.options)} in the call and run it again.")
            return
        choice = str(choice).strip().lower().strip("()")
        if choice not in q.options:
            print(f"❔ {name}: {choice!r} is not an option; choose one of {sorted(q.options)}.")
            return
        right = choice == q.correct
        self.results[name] = PASSED if right else FAILED
        why = q.feedback.get(choice, "")
        print(f"{'✅' if right else '❌'} {name}: ({choice}) {'is right' if right else 'is not the best answer'}. {why}".rstrip())

    def report(self) -> None:
        """Print a one-line-per-exercise summary."""
        passed = sum(s == PASSED for s in self.results.values())
        lines = [f"{self.title}: {passed}/{len(self.results)} exercises and questions passed"]
        lines += [f"  {'✅' if s == PASSED else '·'} {n} ({s})" for n, s in self.results.items()]
        print("\n".join(lines))

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
