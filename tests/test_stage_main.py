"""pipelines.stage_main: every DVC stage's entry answers bad input in one line, Ctrl-C in one line, and keeps the
traceback of a bug."""
import pytest

from pipelines.stage_main import stage_main
from restorevar.errors import UserError


def test_success_prints_the_summary_lines_and_exits_zero(capsys):
    assert stage_main("demo", lambda: {"n": 3}, lambda r: [f"demo: {r['n']} things", "demo: done"]) == 0
    assert capsys.readouterr().out.splitlines() == ["demo: 3 things", "demo: done"]


def _raise(e: BaseException):
    def work():
        raise e
    return work


@pytest.mark.parametrize("where", ["work", "summary"])
def test_a_user_error_is_one_line_and_exit_2_wherever_it_comes_from(where, capsys):
    bad = _raise(UserError("params.yaml: no profile 'x'; choose one of default, small"))
    code = stage_main("demo", bad) if where == "work" else stage_main("demo", lambda: 1, lambda r: bad())
    out = capsys.readouterr()
    assert code == 2 and out.out == ""
    assert out.err == "demo: error: params.yaml: no profile 'x'; choose one of default, small\n"


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    assert stage_main("demo", _raise(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "demo: interrupted\n"


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        stage_main("demo", lambda: 1 / 0)
