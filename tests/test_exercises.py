"""Exercise feedback: stubs are 'not attempted' and never raise; wrong answers explain; solutions must pass all."""

import pytest

from tlkit.exercises import ExerciseBook


def _is_two(x):
    assert x == 2, f"expected 2, got {x}"


def test_stub_answers_are_not_attempted(capsys):
    book = ExerciseBook("t")
    assert not book.check("a", _is_two, None)
    assert not book.check("b", _is_two, ...)

    def stub():
        raise NotImplementedError

    assert not book.check("c", lambda f: f(), stub)
    assert set(book.results.values()) == {"not attempted"}
    assert "not attempted yet" in capsys.readouterr().out


def test_wrong_answer_prints_reason_and_hint(capsys):
    book = ExerciseBook("t")
    assert not book.check("a", _is_two, 3, hint="add one")
    out = capsys.readouterr().out
    assert "expected 2, got 3" in out and "add one" in out
    with pytest.raises(AssertionError, match="did not pass"):
        book.assert_all_passed()


def test_right_answer_passes():
    book = ExerciseBook("t")
    assert book.check("a", _is_two, 2)
    book.assert_all_passed()
    assert "1/1" in book.report()


def test_a_book_with_no_checks_fails_the_solution_check():
    with pytest.raises(AssertionError, match="no exercise"):
        ExerciseBook("t").assert_all_passed()
