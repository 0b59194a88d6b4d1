"""The command's surface: help, version, option checks (no benchmark is run)."""

from __future__ import annotations

from click.testing import CliRunner

from zcounter import __version__
from zcounter.bench import main


def test_help_and_version() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for option in ("--quick", "--json", "--keys", "--dist", "--scale", "--scale-keys"):
        assert option in result.output
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"zcounter-bench {__version__}"


def test_bad_distribution_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["--dist", "pareto"])
    assert result.exit_code == 2
