"""Every command the README, the container entrypoint and the help name exists.

The README's code (fenced blocks and inline code) is read for ``hstred WORD`` and
``make TARGET``; the entrypoint's usage comment for ``hstred WORD`` and its list of
subcommands. A lower-case WORD must be an hstred subcommand, a target a Makefile rule;
an upper-case word (OUTNAME, COMMAND) is a placeholder. Each subcommand's help runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from hstred.cli import app

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = sorted(typer.main.get_command(app).commands)
#: ``hstred WORD`` where WORD starts with a lower-case letter: not ``hstred.sif``,
#: ``hstred_work``, ``hstred-entrypoint`` or the image name before an option.
_HSTRED_WORD = re.compile(r"(?<![\w./-])hstred[ \t]+([a-z][a-z0-9_-]*)")
_MAKE_TARGET = re.compile(r"(?<![\w./-])make[ \t]+([a-z][a-z0-9_-]*)")


def _readme_code() -> str:
    text = (ROOT / "README.md").read_text()
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    inline = re.findall(r"`([^`\n]+)`", prose)
    return "\n".join(fenced + inline)


def _entrypoint_usage() -> str:
    """The usage table in the entrypoint's header comment (lines indented under ``#``)."""
    script = ROOT / "entrypoint" / "hstred-entrypoint.sh"
    return "\n".join(line for line in script.read_text().splitlines()
                     if line.startswith("#   "))


def _named(pattern: re.Pattern, text: str) -> set[str]:
    # "docker run ... hstred OUTNAME" names the image, then a placeholder: skipped by the
    # lower-case rule; "docker build -t hstred ." names no word.
    return set(pattern.findall(text))


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9_-]*):", text, flags=re.M))


def test_readme_names_only_existing_subcommands():
    named = _named(_HSTRED_WORD, _readme_code())
    assert {"run", "plan", "simulate", "calibrate", "drizzle", "refs"} <= named
    assert named <= set(SUBCOMMANDS), f"README names {sorted(named - set(SUBCOMMANDS))}"


def test_readme_names_only_existing_make_targets():
    named = _named(_MAKE_TARGET, _readme_code())
    assert {"demo", "test", "install"} <= named
    assert named <= _makefile_targets(), f"README names {sorted(named - _makefile_targets())}"


def test_entrypoint_names_only_existing_subcommands():
    usage = _entrypoint_usage()
    named = _named(_HSTRED_WORD, usage)
    assert "run" in named
    listed = re.search(r"\(([a-z, ]+), \.\.\.\)", usage)
    assert listed, "the entrypoint's usage lists example subcommands"
    named |= {w.strip() for w in listed.group(1).split(",")}
    assert named <= set(SUBCOMMANDS), f"entrypoint names {sorted(named - set(SUBCOMMANDS))}"


def test_every_readme_subcommand_is_documented():
    """The other way round: the README's command list shows every subcommand."""
    named = _named(_HSTRED_WORD, _readme_code())
    assert set(SUBCOMMANDS) <= named, f"README omits {sorted(set(SUBCOMMANDS) - named)}"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_every_subcommand(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert f"hstred {command}" in result.output


def test_help_keeps_units_in_brackets():
    result = CliRunner().invoke(app, ["run", "--help"], terminal_width=200)
    assert "Output pixel scale [arcsec]" in result.output


def test_plan_takes_runs_options():
    """``plan`` is declared from ``run``'s parameters: the same options, bar --quiet."""
    def options(name):
        command = typer.main.get_command(app).commands[name]
        return {o for p in command.params for o in p.opts}

    assert options("plan") == options("run") - {"--quiet", "-q"}


@pytest.mark.parametrize(("args", "named"), [
    (["simulate", "{tmp}/sim", "--visits", "0"], "visits"),
    (["simulate", "{tmp}/sim", "--exptime", "0.1"], "exptime"),
    (["simulate", "{tmp}/sim", "--satellites", "1.5"], "satellites"),
    (["simulate", "{tmp}/sim", "--pointings", "3by3"], "--pointings"),
    (["simulate", "{tmp}/sim", "--pointings", "0x2"], "pointings"),
    (["simulate", "{tmp}/sim", "--pointings", "7x7", "--visits", "3"], "pointings"),
    (["run", "X", "--data", "{tmp}", "--min-matches", "2"], "--min-matches"),
    (["plan", "X", "--data", "{tmp}", "--pixfrac", "1.5"], "--pixfrac"),
    (["run", "X", "--data", "{tmp}", "--satellites", "maybe"], "--satellites"),
    (["drizzle", "X", "--data", "{tmp}", "--satellites", "maybe"], "--satellites"),
    (["run", "X", "--data", "{tmp}", "--cte-noise", "hide"], "--cte-noise"),
    (["run", "X", "--data", "{tmp}", "--tile-size", "10", "--no-rms"], "--tile-size"),
    (["drizzle", "X", "--data", "{tmp}", "--tile-size", "63"], "--tile-size"),
    (["plan", "X", "--data", "{tmp}", "--tile-size", "-1", "--no-rms"], "--tile-size"),
    (["run", "X", "--data", "{tmp}", "--tiled-products", "--tile-size", "0"],
     "--tiled-products"),
    (["drizzle", "X", "--data", "{tmp}", "--tiled-products", "--tile-size", "0"],
     "--tiled-products"),
    (["calibrate", "--data", "{tmp}", "--cte-noise", "hide"], "--cte-noise"),
])
def test_option_limits_come_from_the_configs(tmp_path, args, named):
    """A limit is checked once, by the stage's config: the CLI gives the same one-line
    error (exit 2) as the library, before any work."""
    args = [a.format(tmp=tmp_path) for a in args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hstred: error: ") and named in lines[0]
    assert not (tmp_path / "sim").exists()


def test_config_replays_a_record_and_given_options_override_it(tmp_path, monkeypatch):
    """``--config OUTNAME_run.json``: the recorded science options, those given on the
    command line on top; workers are this machine's."""
    import json

    import hstred.plan
    from hstred.calibrate import CalibrateConfig
    from hstred.drizzle import DrizzleConfig
    from hstred.execution import ExecutionConfig
    from hstred.pipeline import PipelineConfig

    recorded = PipelineConfig(calibrate=CalibrateConfig(cte="none"),
                              drizzle=DrizzleConfig(pixfrac=0.6, kernel="gaussian"),
                              execution=ExecutionConfig(workers=7), allow_mixed_targets=True)
    record = tmp_path / "X_run.json"
    record.write_text(json.dumps({"schema": "hstred-run/3", "config": recorded.to_dict()}))
    seen = []

    def capture(data_dir, config, outname=None, **kwargs):
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(hstred.plan, "make_plan", capture)
    for extra in ([], ["--pixfrac", "0.9", "--workers", "1"]):
        CliRunner().invoke(app, ["plan", "X", "--data", str(tmp_path), "--config", str(record),
                                 *extra])
    replayed, overridden = seen
    assert replayed.calibrate.cte == "none" and replayed.drizzle.kernel == "gaussian"
    assert replayed.drizzle.pixfrac == 0.6 and replayed.allow_mixed_targets
    assert replayed.execution.workers is None  # not the recorded machine's 7
    assert overridden.drizzle.pixfrac == 0.9 and overridden.drizzle.kernel == "gaussian"
    assert overridden.execution.workers == 1
    for bad, message in (("{}", "holds no run options"), ("not json", "not readable"),
                         (None, "no such file")):
        path = tmp_path / "bad.json"
        path.unlink(missing_ok=True)
        if bad is not None:
            path.write_text(bad)
        result = CliRunner().invoke(app, ["plan", "--data", str(tmp_path), "--config",
                                          str(path)])
        assert result.exit_code == 2 and message in result.stderr, result.output
