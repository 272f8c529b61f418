"""Find the reference files a raw ACS/WFC exposure names.

Headers name references as ``jref$<name>``. A name is looked for, in order, in

1. the directory in the ``jref`` environment variable (calacs's convention),
2. ``$CRDS_PATH/references/hst/acs/`` (a CRDS cache),
3. ``DATA_DIR/crds/references/hst/acs/`` (the default cache, where the simulator writes).

Names still missing are fetched into the CRDS cache through the ``crds`` library
when a CRDS server answers; otherwise :class:`~hstred.errors.ReferenceFileError`
lists every missing file and the command that fetches them, before any work starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits

from hstred.distortion import DISTORTION_KEYWORDS
from hstred.errors import InputError, ReferenceFileError

__all__ = [
    "REFERENCE_KEYWORDS",
    "DEFAULT_CRDS_SERVER_URL",
    "ReferenceSet",
    "needed_references",
    "reference_file_name",
    "search_paths",
    "resolve_references",
    "resolve_distortion_references",
    "fetch_with_crds",
]

DEFAULT_CRDS_SERVER_URL = "https://hst-crds.stsci.edu"
_CACHE_SUBDIR = Path("references", "hst", "acs")

#: Reference keyword -> calibration switches that need it (any of them set to PERFORM).
#: An empty tuple means the file is always needed.
REFERENCE_KEYWORDS: Mapping[str, tuple[str, ...]] = {
    "CCDTAB": (),
    "OSCNTAB": (),
    "BPIXTAB": ("DQICORR",),
    "BIASFILE": ("BIASCORR",),
    "SATUFILE": ("BIASCORR",),
    "SNKCFILE": ("SINKCORR",),
    "DARKFILE": ("DARKCORR",),
    "DRKCFILE": ("DARKCORR",),
    "FLSHFILE": ("FLSHCORR",),
    "PFLTFILE": ("FLATCORR",),
    "DFLTFILE": ("FLATCORR",),
    "LFLTFILE": ("FLATCORR",),
    "IMPHTTAB": ("PHOTCORR",),
    # The camera's distortion (applied with stwcs before any drizzle): always needed.
    "IDCTAB": (),
    "NPOLFILE": (),
    "D2IMFILE": (),
}

#: Keywords a header may omit (the step then runs without that file). Raw files as
#: first archived before 2007 have no SATUFILE: full-well saturation then comes from
#: CCDTAB's SATURATE level, as calacs did before SATUFILE existed.
_OPTIONAL = frozenset({"DFLTFILE", "LFLTFILE", "FLSHFILE", "SNKCFILE", "DRKCFILE", "SATUFILE"})

#: How to write the current best reference names into a raw file's header.
BESTREFS_COMMAND = "crds bestrefs --update-bestrefs --files"

_NOT_APPLICABLE = {"", "N/A", "NONE", "NA", "NOT APPLICABLE"}


def reference_file_name(value: object) -> str | None:
    """``'jref$abc_bia.fits'`` -> ``'abc_bia.fits'``; N/A-like values -> None."""
    text = str(value).strip()
    if text.upper() in _NOT_APPLICABLE:
        return None
    if "$" in text:
        text = text.split("$", 1)[1]
    return Path(text).name


def needed_references(header: fits.Header) -> dict[str, str | None]:
    """Reference keyword -> file name (None for N/A or when its steps are off).

    Only keywords whose calibration switches are set to PERFORM are returned with
    a name. A keyword whose switch is PERFORM but which the header lacks (older raw
    files may lack IMPHTTAB, for instance) raises :class:`InputError` naming the
    keyword and the ``crds bestrefs`` command that fills it in, unless the step can
    run without it (DFLTFILE, LFLTFILE, FLSHFILE, SNKCFILE, DRKCFILE, SATUFILE).
    """
    names: dict[str, str | None] = {}
    for key, switches in REFERENCE_KEYWORDS.items():
        performed = not switches or any(
            str(header.get(sw, "OMIT")).strip().upper() == "PERFORM" for sw in switches
        )
        if not performed:
            names[key] = None
            continue
        if key not in header:
            if key not in _OPTIONAL:
                steps = "/".join(switches) or ("the distortion correction"
                                               if key in DISTORTION_KEYWORDS
                                               else "CCD calibration")
                raise InputError(
                    f"header has no {key} keyword, needed by {steps}; fill in the reference "
                    f"keywords with: {BESTREFS_COMMAND} <raw file> (CRDS), or set {key}")
            names[key] = None
            continue
        names[key] = reference_file_name(header[key])
    return names


def search_paths(data_dir: Path) -> list[Path]:
    """Directories searched for reference files, in priority order."""
    paths: list[Path] = []
    jref = os.environ.get("jref")
    if jref:
        paths.append(Path(jref))
    crds_path = os.environ.get("CRDS_PATH")
    if crds_path:
        paths.append(Path(crds_path) / _CACHE_SUBDIR)
    paths.append(Path(data_dir) / "crds" / _CACHE_SUBDIR)
    return paths


def _crds_cache(data_dir: Path) -> Path:
    """The CRDS cache root that fetched files go into."""
    crds_path = os.environ.get("CRDS_PATH")
    return Path(crds_path) if crds_path else Path(data_dir) / "crds"


@dataclass(frozen=True)
class ReferenceSet:
    """Resolved references of one exposure: keyword -> local path (None for N/A)."""

    exposure: Path
    paths: Mapping[str, Path | None] = field(default_factory=dict)

    def names(self) -> dict[str, str | None]:
        return {k: (p.name if p is not None else None) for k, p in self.paths.items()}


def _locate(name: str, paths: Iterable[Path]) -> Path | None:
    for directory in paths:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


class _LogOnly(logging.Filter):
    """CRDS's own console lines go to hstred's log file only: the terminal gets
    hstred's one-line error when CRDS fails."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.console = False
        return True


class _Drop(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _crds_messages_to_log():
    crds_log = logging.getLogger("CRDS")
    only, drop = _LogOnly(), _Drop()
    saved = crds_log.propagate
    handlers = list(crds_log.handlers)
    crds_log.addFilter(only)
    for handler in handlers:
        handler.addFilter(drop)
    crds_log.propagate = True
    try:
        yield
    finally:
        crds_log.propagate = saved
        crds_log.removeFilter(only)
        for handler in handlers:
            handler.removeFilter(drop)


@contextlib.contextmanager
def _crds_environment(cache: Path):
    """CRDS settings for one call: the server (default HST's) and the cache root."""
    saved = {k: os.environ.get(k) for k in ("CRDS_SERVER_URL", "CRDS_PATH")}
    os.environ.setdefault("CRDS_SERVER_URL", DEFAULT_CRDS_SERVER_URL)
    os.environ["CRDS_PATH"] = str(cache)
    try:
        with _crds_messages_to_log():
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _crds_server_reachable(cache: Path) -> bool:
    from crds.client import api

    with _crds_environment(cache):
        try:
            api.get_server_info()
        except Exception:  # any network or protocol failure means "not reachable"
            return False
    return True


def fetch_with_crds(names: Iterable[str], cache: Path) -> None:
    """Download named HST reference files into the CRDS cache ``cache``.

    Honours ``CRDS_SERVER_URL`` (default the HST server) and ``CRDS_CONTEXT``
    (else the server's operational context).
    """
    from crds.client import api

    with _crds_environment(cache):
        context = os.environ.get("CRDS_CONTEXT") or api.get_default_context("hst")
        api.dump_references(context, baserefs=sorted(set(names)), raise_exceptions=True)


def _fetch_command(names: Iterable[str], cache: Path) -> str:
    server = os.environ.get("CRDS_SERVER_URL", DEFAULT_CRDS_SERVER_URL)
    files = " ".join(shlex.quote(n) for n in sorted(set(names)))
    return (f"CRDS_SERVER_URL={server} CRDS_PATH={shlex.quote(str(cache))} "
            f"crds sync --files {files}")


def resolve_references(raw_files: Iterable[Path], data_dir: Path, *,
                       fetch: bool = True) -> list[ReferenceSet]:
    """Resolve every reference each raw file needs, fetching through CRDS if possible.

    Raises :class:`ReferenceFileError` naming every missing file (and the command
    that fetches them) when any cannot be found or fetched.
    """
    return _resolve(raw_files, data_dir, fetch=fetch,
                    names_of=lambda header, _path: needed_references(header))


def _distortion_names(header: fits.Header, path: Path) -> dict[str, str | None]:
    from hstred.distortion import distortion_reference_names

    names = distortion_reference_names(header)
    if names["IDCTAB"] is None:
        raise ReferenceFileError(
            "has neither a distortion solution in its SCI headers nor an IDCTAB; fill the "
            f"reference keywords with 'crds bestrefs --files {path.name} --update-bestrefs'")
    return names


def resolve_distortion_references(files: Iterable[Path], data_dir: Path, *,
                                  fetch: bool = True) -> list[ReferenceSet]:
    """Resolve IDCTAB, NPOLFILE and D2IMFILE of calibrated files that need stwcs.

    Same search order, CRDS fetch and error as :func:`resolve_references`; a file
    naming no IDCTAB raises :class:`ReferenceFileError`.
    """
    return _resolve(files, data_dir, fetch=fetch, names_of=_distortion_names)


def _resolve(files: Iterable[Path], data_dir: Path, *, fetch: bool,
             names_of: Callable[[fits.Header, Path], dict[str, str | None]]
             ) -> list[ReferenceSet]:
    raw_files = [Path(p) for p in files]
    data_dir = Path(data_dir)
    wanted: list[tuple[Path, dict[str, str | None]]] = []
    for raw in raw_files:
        try:
            header = fits.getheader(raw, 0)
        except OSError as err:
            raise InputError(f"{raw}: cannot read the FITS header ({err}); "
                             "replace the file with a complete copy") from err
        try:
            wanted.append((raw, names_of(header, raw)))
        except (InputError, ReferenceFileError) as err:
            raise type(err)(f"{raw}: {err}") from err

    paths = search_paths(data_dir)
    missing = sorted({name for _raw, names in wanted for name in names.values()
                      if name is not None and _locate(name, paths) is None})
    if missing:
        cache = _crds_cache(data_dir)
        if not fetch:
            raise ReferenceFileError(
                f"{len(missing)} reference file(s) missing (not fetched: --no-fetch): "
                f"{', '.join(missing)}; searched {', '.join(str(p) for p in paths)}; "
                f"fetch them with: {_fetch_command(missing, cache)}")
        if _crds_server_reachable(cache):
            try:
                fetch_with_crds(missing, cache)
            except Exception as err:
                raise ReferenceFileError(
                    f"CRDS could not deliver {len(missing)} reference file(s) "
                    f"({', '.join(missing)}): {err}") from err
            paths = search_paths(data_dir) + [cache / _CACHE_SUBDIR]
            missing = [n for n in missing if _locate(n, paths) is None]
        if missing:
            raise ReferenceFileError(
                f"{len(missing)} reference file(s) missing and no CRDS server reachable: "
                f"{', '.join(missing)}; searched {', '.join(str(p) for p in paths)}; "
                f"fetch them with: {_fetch_command(missing, cache)}")

    refsets = [ReferenceSet(exposure=raw,
                            paths={k: (_locate(n, paths) if n is not None else None)
                                   for k, n in names.items()})
               for raw, names in wanted]
    for path in sorted({p for r in refsets for p in r.paths.values() if p is not None}):
        _check_readable(path, _crds_cache(data_dir))
    return refsets


def _check_readable(path: Path, cache: Path) -> None:
    """Raise :class:`ReferenceFileError` unless ``path`` opens as FITS and holds every byte
    its headers announce (a truncated download otherwise fails deep inside a stage)."""
    import warnings

    from astropy.utils.exceptions import AstropyUserWarning

    from hstred.inputs import fits_damage

    try:
        with warnings.catch_warnings(), fits.open(path) as hdul:
            warnings.simplefilter("ignore", AstropyUserWarning)  # damage is reported below
            hdul.verify("silentfix")
            damage = fits_damage(hdul, path)
    except (OSError, ValueError, IndexError, KeyError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise  # permissions and the like: the machine, not the file
        damage = f"unreadable ({err})"
    if damage:
        raise ReferenceFileError(
            f"{path}: damaged reference file, {damage}; delete it and fetch a fresh copy "
            f"with: {_fetch_command([path.name], cache)}")
