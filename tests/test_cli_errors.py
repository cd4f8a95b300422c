"""dw never shows a traceback for an OSError a user can cause (an --out that is a file, a path
that cannot be written): one line on stderr, exit 2. Run in this process, cheap settings."""

import contextlib
import errno
import io

import pytest

from agent.cli.main import main


def run_dw(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, err.getvalue()


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("not a folder\n")
    return f


DEMO = ["demo", "--tasks", "click-button", "--sizes", "160x120", "--policy", "scripted", "--max-steps", "2"]
DEMOS = ["demos", "--tasks", "click-button", "--sizes", "160x120", "--episodes", "1"]

CASES = {
    "demo --out FILE": lambda f: [*DEMO, "--out", str(f)],
    "demo --out FILE/x": lambda f: [*DEMO, "--out", f"{f}/x"],
    "demo --out /proc/x": lambda f: [*DEMO, "--out", "/proc/dw-cannot-write-here"],
    "demos --out FILE": lambda f: [*DEMOS, "--out", str(f)],
    "demos --out FILE/x": lambda f: [*DEMOS, "--out", f"{f}/x"],
    "reader --out FILE/x": lambda f: ["reader", "--out", f"{f}/x"],
    "bench --plot FILE/x.png": lambda f: ["bench", "loop", "--quick", "--plot", f"{f}/x.png"],
    "cache FILE": lambda f: ["cache", str(f)],
    "info FILE": lambda f: ["info", str(f)],
    "info --verify /proc/self": lambda f: ["info", "--verify", "/proc/self"],
    "replay FILE": lambda f: ["replay", str(f)],
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_path_the_user_got_wrong_is_one_line_and_exit_2(a_file, case):
    argv = CASES[case](a_file)
    rc, err = run_dw(argv)
    lines = err.strip().splitlines()
    assert rc == 2, (case, err)
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith(f"dw {argv[0]}: error: "), (case, err)
    assert a_file.read_text() == "not a folder\n"  # nothing written over it


@pytest.mark.parametrize("exc, line", [
    (PermissionError(errno.EACCES, "Permission denied", "/srv/out"), "dw info: error: /srv/out: Permission denied"),
    (OSError(errno.ENOSPC, "No space left on device"), "dw info: error: No space left on device"),
    (FileExistsError(errno.EEXIST, "File exists", "/a", None, "/b"), "dw info: error: /a: /b: File exists"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", b"/bytes/path"), "dw info: error: /bytes/path: Is a directory"),
])
def test_any_os_error_from_a_command_is_one_line_exit_2(monkeypatch, exc, line):
    """One place (agent.cli.main) turns an OSError any command lets out into one line."""
    def boom(args):
        raise exc

    monkeypatch.setattr("agent.cli.commands.info.run", boom)
    rc, err = run_dw(["info", "whatever"])
    assert rc == 2 and err.strip() == line



def test_run_fps_must_be_zero_or_positive(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":999")  # never reached: the value is refused first
    rc, err = run_dw(["run", "--fps", "-1", "--policy", "random", "--dry-run"])
    assert rc == 2 and "--fps must be 0 (no cap) or positive, got -1" in err and "Traceback" not in err
