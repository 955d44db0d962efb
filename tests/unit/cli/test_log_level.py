"""The log level: ``--log-level``, else ``AUDITOR_LOG_LEVEL``, else info for the daemon."""

from __future__ import annotations

import logging

import pytest

from auditor.cli import build_parser, log_level_of, main


def test_the_daemon_logs_its_lifecycle_by_default_and_the_tools_only_warnings():
    assert log_level_of("run", None, {}) == "info"
    assert log_level_of("check", None, {}) == "warning"
    assert log_level_of("demo", None, {}) == "warning"
    assert log_level_of(None, None, {}) == "warning"


def test_the_flag_wins_over_the_environment_which_wins_over_the_default():
    assert log_level_of("run", "error", {"AUDITOR_LOG_LEVEL": "debug"}) == "error"
    assert log_level_of("run", None, {"AUDITOR_LOG_LEVEL": " Warning "}) == "warning"
    assert log_level_of("check", None, {"AUDITOR_LOG_LEVEL": "debug"}) == "debug"
    assert log_level_of("run", None, {"AUDITOR_LOG_LEVEL": ""}) == "info"


def test_the_parser_leaves_the_level_unset_so_the_environment_can_decide():
    assert build_parser().parse_args(["run"]).log_level is None


def test_an_unknown_level_in_the_environment_is_a_usage_error_that_names_the_choices(monkeypatch, capsys):
    monkeypatch.setenv("AUDITOR_LOG_LEVEL", "verbose")
    with pytest.raises(SystemExit) as exc:
        main(["policy", "list"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "AUDITOR_LOG_LEVEL='verbose'" in err and "debug, info, warning, error" in err


def test_the_environment_level_reaches_the_root_logger(monkeypatch, capsys):
    monkeypatch.setenv("AUDITOR_LOG_LEVEL", "error")
    assert main(["policy", "list"]) == 0
    assert logging.getLogger().level == logging.ERROR
