"""One CLI vocabulary (#42): every ``dw`` subcommand spells the same things the same way, shows its
defaults in ``--help``, and keeps the old spellings working (hidden, with a note) for one release;
``dw run --tls-ca`` (#41) trusts a ``dw serve --tls-cert`` desktop."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from agent.cli.main import build_parser, main
from agent.cli.util import HUMAN_LIKE, shows_default
from tests.test_stream import _serve_proc

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_token_env(monkeypatch):
    # tokens from the environment are option defaults; --help must not depend on (or print) them
    for name in ("DW_TOKEN", "DW_MCP_TOKEN", "DW_VIEWER_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "dw"):
    """(name, parser) for every subcommand, nested ones too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in sorted(action.choices.items()):
                yield f"{prefix} {name}", sub
                yield from _subparsers(sub, f"{prefix} {name}")


def _commands():
    from agent.desktops.miniwob.cli import build_parser as miniwob_parser

    return [*_subparsers(build_parser()), *_subparsers(miniwob_parser(), "python -m agent.desktops.miniwob")]


def _visible(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if a.help is not argparse.SUPPRESS]


def _value_spellings(value) -> set[str]:
    if isinstance(value, bool):
        return {"on" if value else "off", str(value)}
    if isinstance(value, float):
        return {str(value), f"{value:g}"}
    return {str(value)}


def test_every_command_is_walked():
    names = {n for n, _ in _commands()}
    assert {"dw demo", "dw demos", "dw eval", "dw serve", "dw train", "dw reader", "dw run", "dw mcp",
            "dw bench", "dw encoders"} <= names


def test_no_visible_size_task_or_plain_option():
    for name, p in _commands():
        flags = {s for a in _visible(p) for s in a.option_strings}
        assert not flags & {"--size", "--task", "--plain"}, (name, sorted(flags & {"--size", "--task", "--plain"}))


def test_each_option_with_a_default_shows_it_in_its_help():
    for name, p in _commands():
        fmt = p._get_formatter()
        for a in _visible(p):
            if not shows_default(a) or isinstance(a.default, bool) and not isinstance(a, argparse.BooleanOptionalAction):
                continue
            text = fmt._expand_help(a)
            assert "default" in text.lower(), (name, a.option_strings or a.dest, text)
            assert any(v in text for v in _value_spellings(a.default)), (name, a.option_strings or a.dest, text)


def test_help_has_no_noise_defaults():
    for name, p in [("dw", build_parser()), *_commands()]:
        text = p.format_help()
        for noise in ("(default: None)", "(default: False)", "(default: True)", "(default: [])"):
            assert noise not in text, (name, noise)


def test_one_human_like_flag_with_each_commands_default():
    seen = {}
    for name, p in _commands():
        for a in _visible(p):
            timing = [s for s in a.option_strings if "human" in s or "plain" in s]
            if timing:
                assert a.option_strings == [HUMAN_LIKE, "--no-human-like"], (name, a.option_strings)
                assert isinstance(a, argparse.BooleanOptionalAction)
                seen[name] = a.default
    # the defaults as before the rename: dw demo plain unless asked, dw demos human-like unless --no-human-like
    assert seen == {"dw demo": False, "dw demos": True}


def test_model_sizes_are_model_size_and_single_screens_are_screen():
    cmds = dict(_commands())
    for name in ("dw train", "dw reader"):
        assert "--model-size" in cmds[name]._option_string_actions
    for name in ("dw serve", "dw mcp"):
        screen = cmds[name]._option_string_actions["--screen"]
        assert screen.default == "1280x720"


@pytest.mark.parametrize(("argv", "dest", "value", "new"), [
    (["demo", "--task", "click-button"], "tasks", "click-button", "--tasks"),
    (["demo", "--size", "640x480"], "sizes", "640x480", "--sizes"),
    (["demos", "--out", "x", "--plain"], "human_like", False, "--no-human-like"),
    (["serve", "--size", "320x240"], "screen", "320x240", "--screen"),
    (["serve", "--task", "drag-slider"], "tasks", "drag-slider", "--tasks"),
    (["mcp", "--sizes", "800x600"], "screen", "800x600", "--screen"),
    (["train", "--out", "x", "--size", "pixel-tiny"], "model_size", "pixel-tiny", "--model-size"),
])
def test_old_spellings_still_work_with_a_note(argv, dest, value, new, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    old = next(a for a in argv if a.startswith("--") and a not in ("--out",))
    assert err.count("\n") == 1 and f"{old} is deprecated" in err and new in err, err


def test_new_spellings_print_no_note_and_defaults_hold(capsys):
    p = build_parser()
    a = p.parse_args(["demo", "--tasks", "click-button", "--sizes", "640x480", "--human-like"])
    assert (a.tasks, a.sizes, a.human_like) == ("click-button", "640x480", True)
    assert p.parse_args(["demo"]).human_like is False
    assert p.parse_args(["demos", "--out", "x"]).human_like is True
    assert p.parse_args(["demos", "--out", "x", "--no-human-like"]).human_like is False
    s = p.parse_args(["serve"])
    assert (s.tasks, s.screen) == ("click-button", "1280x720")
    assert capsys.readouterr().err == ""


def test_reader_model_size_overrides_the_recipe():
    from agent.cli.commands.reader import _settings

    args = build_parser().parse_args(["reader", "--out", "x", "--model-size", "pixel-tiny"])
    assert _settings(args)["size"] == "pixel-tiny"
    assert "size" not in _settings(build_parser().parse_args(["reader", "--out", "x"]))


def test_serve_takes_one_task():
    from agent.cli.commands.serve import _desktop
    from agent.errors import UserError

    args = build_parser().parse_args(["serve", "--tasks", "click-button,drag-slider"])
    with pytest.raises(UserError, match="one virtual-desktop task"):
        _desktop(args)


def test_version():
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--version"])
    assert e.value.code == 0


# -- dw run --tls-ca against dw serve --tls-cert/--tls-key -----------------------------------------------------
def test_tls_ca_needs_a_wss_desktop(tmp_path, capsys):
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    assert main(["run", "--tls-ca", str(ca), "--policy", "scripted", "--max-steps", "1"]) == 2
    assert "--tls-ca applies to a TLS desktop" in capsys.readouterr().err
    assert main(["run", "--desktop", "wss://127.0.0.1:1", "--token", "t" * 24, "--tls-ca", str(ca),
                 "--policy", "scripted"]) == 2
    assert "not a PEM certificate file" in capsys.readouterr().err
    assert main(["run", "--desktop", "wss://127.0.0.1:1", "--token", "t" * 24, "--tls-ca",
                 str(tmp_path / "missing.pem"), "--policy", "scripted"]) == 2
    assert "missing.pem: no such file" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the self-signed certificate needs openssl")
def test_dw_run_tls_ca_trusts_a_self_signed_dw_serve(tmp_path, capsys):
    from agent.stream.tls import self_signed

    self_signed("127.0.0.1", out_dir=tmp_path)
    cert, key, token = tmp_path / "cert.pem", tmp_path / "key.pem", "c" * 24
    proc, url = _serve_proc("--tasks", "click-button", "--screen", "320x240", "--fps", "10", "--no-video",
                            "--tls-cert", str(cert), "--tls-key", str(key), token=token)
    try:
        assert url.startswith("wss://"), url
        base = ["run", "--desktop", url, "--token", token, "--policy", "scripted", "--max-steps", "30", "--json"]
        assert main(base) == 2  # not trusted without --tls-ca
        assert "certificate verify failed" in capsys.readouterr().err
        assert main([*base, "--tls-ca", str(cert)]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["steps"] >= 1 and out["success"] is True, out
    finally:
        proc.terminate()
        proc.wait(10)


def test_recipe_commands_parse_in_the_current_vocabulary(capsys):
    import shlex
    import tomllib

    commands = [c for f in sorted((ROOT / "recipes").glob("*.toml"))
                for c in tomllib.loads(f.read_text()).get("data", {}).get("commands", [])]
    assert commands
    from agent.desktops.miniwob.cli import build_parser as miniwob_parser

    parsers = {("dw",): build_parser, ("python", "-m", "agent.desktops.miniwob"): miniwob_parser}
    for c in commands:
        argv = shlex.split(c)
        prefix = next(k for k in parsers if tuple(argv[:len(k)]) == k)
        parsers[prefix]().parse_args(argv[len(prefix):])
        assert capsys.readouterr().err == "", c  # no deprecated spelling
