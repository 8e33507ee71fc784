"""Exercise feedback: stubs are 'not attempted' and never raise; wrong answers explain; hints only on request."""

import pytest

from tlkit.exercises import ExerciseBook, Question


def _is_two(x):
    assert x == 2, f"expected 2, got {x}"


def test_stub_answers_are_not_attempted(capsys):
    book = ExerciseBook("t")
    book.check("a", _is_two, None)
    book.check("b", _is_two, ...)

    def stub():
        raise NotImplementedError

    book.check("c", lambda f: f(), stub)
    assert set(book.results.values()) == {"not attempted"}
    assert "not attempted yet" in capsys.readouterr().out


def test_check_returns_nothing_so_a_notebook_shows_no_stray_output():
    assert ExerciseBook("t").check("a", _is_two, 2) is None


def test_wrong_answer_prints_the_reason_but_not_the_hint(capsys):
    book = ExerciseBook("t")
    book.check("a", _is_two, 3, hint="add one")
    out = capsys.readouterr().out
    assert "expected 2, got 3" in out and "add one" not in out and "book.hint('a')" in out
    with pytest.raises(AssertionError, match="did not pass"):
        book.assert_all_passed()


def test_hints_come_one_tier_at_a_time(capsys):
    book = ExerciseBook("t")
    book.add_hints("a", "think about it", "x + 1")
    book.check("a", _is_two, 3)
    capsys.readouterr()
    book.hint("a")
    assert "hint 1 of 2: think about it" in capsys.readouterr().out
    book.hint("a")
    assert "hint 2 of 2: x + 1" in capsys.readouterr().out
    book.hint("a")
    assert "last hint" in capsys.readouterr().out
    book.hint("zzz")
    assert "No hints for 'zzz'" in capsys.readouterr().out
    with pytest.raises(ValueError, match="at least one"):
        book.add_hints("b")


def test_right_answer_passes_and_report_prints_once(capsys):
    book = ExerciseBook("t")
    book.check("a", _is_two, 2)
    book.assert_all_passed()
    assert book.report() is None
    assert capsys.readouterr().out.count("1/1") == 1


def test_multiple_choice_gives_feedback_for_each_option(capsys):
    book = ExerciseBook("t")
    q = Question("Small data, close domain?", {"a": "fine-tune all", "b": "frozen features"}, correct="b",
                 feedback={"a": "overfits", "b": "the features already fit"})
    book.ask("q1", q)
    assert book.results["q1"] == "not attempted"
    book.answer("q1", "a")
    assert "overfits" in capsys.readouterr().out and book.results["q1"] == "failed"
    book.answer("q1", "(B)")
    assert "already fit" in capsys.readouterr().out and book.results["q1"] == "passed"
    book.answer("q1", "z")
    assert "not an option" in capsys.readouterr().out
    with pytest.raises(KeyError, match="run the cell that asks it"):
        book.answer("q9", "a")
    with pytest.raises(ValueError, match="not one of the options"):
        Question("?", {"a": "x"}, correct="c")


def test_a_book_with_no_checks_fails_the_solution_check():
    with pytest.raises(AssertionError, match="no exercise"):
        ExerciseBook("t").assert_all_passed()


def test_use_hands_on_the_learners_function_only_once_it_passed(capsys):
    book = ExerciseBook("t")
    mine, ref = (lambda: "mine"), (lambda: "reference")
    book.check("a", _is_two, 3)
    assert book.use("a", mine, ref)() == "reference" and "not solved yet" in capsys.readouterr().out
    book.check("a", _is_two, 2)
    assert book.use("a", mine, ref)() == "mine"
