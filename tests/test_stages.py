"""The stage loop: every command is the pipeline limited to its stages; plan only looks."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import hstred.stages as stages
from hstred.cli import app
from hstred.manifest import Manifest
from hstred.pipeline import COMMAND_STAGES, PipelineConfig
from hstred.stages import Context, Events, Stage, plan_stages, run_stages


class _Recording(Stage):
    def __init__(self, name: str, calls: list, *, cached: bool = False, applies: bool = True):
        self.name, self.calls, self.cached, self._applies = name, calls, cached, applies

    def applies(self, ctx):
        return self._applies

    def plan(self, ctx):
        self.calls.append((self.name, "plan"))
        return self.name

    def run(self, ctx):
        self.calls.append((self.name, "run"))
        return self.cached

    def reuse(self, ctx):
        self.calls.append((self.name, "reuse"))


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    calls: list = []
    events: list = []

    def make(command: str, outname: str | None = "X", **flags):
        fakes = tuple(_Recording(n, calls, **flags.get(n, {}))
                      for n in ("inputs", "calibrate", "drizzle", "report"))
        monkeypatch.setattr(stages, "STAGES", fakes)
        ctx = Context(data_dir=tmp_path, outname=outname, config=PipelineConfig(),
                      manifest=Manifest(tmp_path / "work"), command=command,
                      events=Events(on_stage=lambda s, state: events.append((s, state))))
        return ctx

    return make, calls, events


@pytest.mark.parametrize("command, expected", [
    ("run", [("inputs", "run"), ("calibrate", "run"), ("drizzle", "run"), ("report", "run")]),
    ("calibrate", [("inputs", "run"), ("calibrate", "run")]),
    ("drizzle", [("inputs", "run"), ("calibrate", "reuse"), ("drizzle", "run"),
                 ("report", "run")]),
])
def test_each_command_is_the_loop_limited_to_its_stages(recorded, command, expected):
    make, calls, events = recorded
    run_stages(make(command))
    assert calls == expected
    ran = [name for name, what in expected if what == "run" and name != "inputs"]
    assert events == [e for name in ran for e in ((name, "start"), (name, "done"))]


def test_a_stage_with_nothing_to_do_is_reused_silently(recorded):
    """Archive-calibrated inputs: calibration passes them through, with no progress line."""
    make, calls, events = recorded
    run_stages(make("run", calibrate={"applies": False}, drizzle={"cached": True}))
    assert calls == [("inputs", "run"), ("calibrate", "reuse"), ("drizzle", "run"),
                     ("report", "run")]
    assert events == [("drizzle", "start"), ("drizzle", "cached"),
                      ("report", "start"), ("report", "done")]


@pytest.mark.parametrize("command", list(COMMAND_STAGES))
def test_plan_is_the_same_loop_looking_only(recorded, command):
    make, calls, events = recorded
    ctx = make(command)
    plan_stages(ctx)
    assert calls == [(n, "plan") for n in ("inputs", *COMMAND_STAGES[command])]
    assert set(ctx.plans) == {"inputs", *COMMAND_STAGES[command]} and events == []


def test_plan_without_outname_stops_at_calibration(recorded):
    make, calls, _events = recorded
    plan_stages(make("run", outname=None))
    assert calls == [("inputs", "plan"), ("calibrate", "plan")]


def _listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def test_calibrate_on_archive_files_stops_before_touching_the_directory(tmp_path):
    for root in ("jd7101a0q", "jd7102a0q"):
        (tmp_path / f"{root}_flc.fits").write_bytes(b"")
    before = _listing(tmp_path)
    result = CliRunner().invoke(app, ["calibrate", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "no *_raw.fits files to calibrate" in result.output
    assert "hstred drizzle OUTNAME" in result.output
    assert _listing(tmp_path) == before  # no hstred_work, no log, no lock


def test_a_run_on_an_empty_directory_leaves_it_empty(tmp_path):
    result = CliRunner().invoke(app, ["run", "X", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "no *_raw.fits" in result.output
    assert _listing(tmp_path) == []
