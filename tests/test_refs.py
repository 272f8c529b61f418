"""Reference resolution: search order, offline errors, the CRDS fetch path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from hstred.errors import InputError, ReferenceFileError
from hstred.refs import needed_references, resolve_references
from hstred.refs import resolve as resolve_mod
from hstred.refs.resolve import resolve_distortion_references

REFS = {
    "BPIXTAB": "aaaaaaaaj_bpx.fits",
    "CCDTAB": "bbbbbbbbj_ccd.fits",
    "OSCNTAB": "ccccccccj_osc.fits",
    "BIASFILE": "ddddddddj_bia.fits",
    "SATUFILE": "eeeeeeeej_sat.fits",
    "DARKFILE": "ffffffffj_drk.fits",
    "DRKCFILE": "ggggggggj_dkc.fits",
    "PFLTFILE": "hhhhhhhhj_pfl.fits",
    "IMPHTTAB": "iiiiiiiij_imp.fits",
    "IDCTAB": "jjjjjjjjj_idc.fits",
    "NPOLFILE": "kkkkkkkkj_npl.fits",
    "D2IMFILE": "llllllllj_d2i.fits",
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # A port on loopback nobody listens on: the CRDS client fails at once.
    monkeypatch.setenv("CRDS_SERVER_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("CRDS_PATH", raising=False)
    monkeypatch.delenv("jref", raising=False)
    monkeypatch.delenv("CRDS_CONTEXT", raising=False)


def _write_raw(path: Path, **overrides) -> Path:
    hdr = fits.Header()
    for switch in ("DQICORR", "BIASCORR", "BLEVCORR", "DARKCORR", "FLATCORR", "PHOTCORR"):
        hdr[switch] = "PERFORM"
    for switch in ("FLSHCORR", "SINKCORR"):
        hdr[switch] = "OMIT"
    for key, name in REFS.items():
        hdr[key] = f"jref${name}"
    hdr["DFLTFILE"] = "N/A"
    hdr["LFLTFILE"] = "N/A"
    hdr["FLSHFILE"] = "N/A"
    for key, value in overrides.items():
        if value is None:
            del hdr[key]
        else:
            hdr[key] = value
    fits.PrimaryHDU(header=hdr).writeto(path)
    return path


def _populate(directory: Path, names) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        fits.PrimaryHDU().writeto(directory / name)


def test_needed_references_reads_jref_names_and_switches(tmp_path):
    hdr = fits.getheader(_write_raw(tmp_path / "j1_raw.fits", DARKCORR="OMIT"))
    names = needed_references(hdr)
    assert names["BIASFILE"] == "ddddddddj_bia.fits"
    assert names["DARKFILE"] is None  # DARKCORR is OMIT
    assert names["DRKCFILE"] is None
    assert names["DFLTFILE"] is None  # N/A
    assert names["FLSHFILE"] is None  # FLSHCORR is OMIT


def test_missing_required_keyword_is_an_input_error(tmp_path):
    raw = _write_raw(tmp_path / "j1_raw.fits", BIASFILE=None)
    with pytest.raises(InputError, match="BIASFILE"):
        resolve_references([raw], tmp_path)


def test_default_cache_under_data_dir(tmp_path):
    raw = _write_raw(tmp_path / "j1_raw.fits")
    cache = tmp_path / "crds" / "references" / "hst" / "acs"
    _populate(cache, REFS.values())
    (refset,) = resolve_references([raw], tmp_path)
    assert refset.paths["BIASFILE"] == cache / "ddddddddj_bia.fits"
    assert refset.paths["LFLTFILE"] is None


def test_search_order_jref_then_crds_path_then_data_dir(tmp_path, monkeypatch):
    raw = _write_raw(tmp_path / "j1_raw.fits")
    local = tmp_path / "crds" / "references" / "hst" / "acs"
    crds_root = tmp_path / "cache"
    jref = tmp_path / "jref"
    _populate(local, REFS.values())
    _populate(crds_root / "references" / "hst" / "acs", ["ddddddddj_bia.fits"])
    _populate(jref, ["ffffffffj_drk.fits"])
    monkeypatch.setenv("CRDS_PATH", str(crds_root))
    monkeypatch.setenv("jref", str(jref))
    (refset,) = resolve_references([raw], tmp_path)
    assert refset.paths["DARKFILE"] == jref / "ffffffffj_drk.fits"
    assert refset.paths["BIASFILE"] == crds_root / "references/hst/acs/ddddddddj_bia.fits"
    assert refset.paths["CCDTAB"] == local / "bbbbbbbbj_ccd.fits"


def test_offline_error_lists_every_missing_file_and_the_fetch_command(tmp_path):
    raws = [_write_raw(tmp_path / "j1_raw.fits"),
            _write_raw(tmp_path / "j2_raw.fits", DARKFILE="jref$zzzzzzzzj_drk.fits")]
    cache = tmp_path / "crds" / "references" / "hst" / "acs"
    _populate(cache, [n for k, n in REFS.items() if k not in ("BIASFILE", "PFLTFILE")])
    with pytest.raises(ReferenceFileError) as info:
        resolve_references(raws, tmp_path)
    message = str(info.value)
    for name in ("ddddddddj_bia.fits", "hhhhhhhhj_pfl.fits", "zzzzzzzzj_drk.fits"):
        assert name in message
    assert "ffffffffj_drk.fits" not in message
    assert "crds sync --files" in message
    assert "\n" not in message


def test_online_path_fetches_through_crds(tmp_path, monkeypatch):
    raw = _write_raw(tmp_path / "j1_raw.fits")
    cache = tmp_path / "crds" / "references" / "hst" / "acs"
    _populate(cache, [n for k, n in REFS.items() if k != "BIASFILE"])
    calls = {}

    from crds.client import api

    def fake_dump(context, baserefs=None, raise_exceptions=True, **_):
        calls["context"], calls["names"] = context, baserefs
        _populate(cache, baserefs)

    monkeypatch.setenv("CRDS_CONTEXT", "hst_1234.pmap")
    monkeypatch.setattr(resolve_mod, "_crds_server_reachable", lambda cache: True)
    monkeypatch.setattr(api, "dump_references", fake_dump)
    (refset,) = resolve_references([raw], tmp_path)
    assert calls == {"context": "hst_1234.pmap", "names": ["ddddddddj_bia.fits"]}
    assert refset.paths["BIASFILE"] == cache / "ddddddddj_bia.fits"


def test_unreachable_server_is_detected(tmp_path):
    assert resolve_mod._crds_server_reachable(tmp_path) is False


def test_unreadable_raw_is_named(tmp_path):
    bad = tmp_path / "j1_raw.fits"
    bad.write_bytes(b"not a fits file")
    with pytest.raises(InputError, match="j1_raw.fits"):
        resolve_references([bad], tmp_path)


def test_distortion_references_are_needed_by_every_raw(tmp_path):
    hdr = fits.getheader(_write_raw(tmp_path / "j1_raw.fits"))
    names = needed_references(hdr)
    assert (names["IDCTAB"], names["NPOLFILE"], names["D2IMFILE"]) == (
        REFS["IDCTAB"], REFS["NPOLFILE"], REFS["D2IMFILE"])
    raw = _write_raw(tmp_path / "j2_raw.fits", NPOLFILE=None)
    with pytest.raises(InputError, match="NPOLFILE"):
        resolve_references([raw], tmp_path)


def test_missing_distortion_files_are_named_offline(tmp_path):
    cache = tmp_path / "crds" / "references" / "hst" / "acs"
    _populate(cache, [n for k, n in REFS.items() if k not in ("IDCTAB", "D2IMFILE")])
    raw = _write_raw(tmp_path / "j1_raw.fits")
    with pytest.raises(ReferenceFileError) as err:
        resolve_references([raw], tmp_path)
    message = str(err.value)
    assert REFS["IDCTAB"] in message and REFS["D2IMFILE"] in message
    assert REFS["NPOLFILE"] not in message.split("searched")[0]


def _write_flt(path: Path, **primary) -> Path:
    hdr = fits.Header()
    for key, value in primary.items():
        hdr[key] = value
    fits.HDUList([fits.PrimaryHDU(header=hdr)]).writeto(path)
    return path


def test_distortion_references_of_calibrated_files(tmp_path):
    cache = tmp_path / "crds" / "references" / "hst" / "acs"
    _populate(cache, [REFS["IDCTAB"], REFS["NPOLFILE"]])
    flt = _write_flt(tmp_path / "j1_flt.fits", IDCTAB=f"jref${REFS['IDCTAB']}",
                     NPOLFILE=f"jref${REFS['NPOLFILE']}", D2IMFILE="N/A")
    (refs,) = resolve_distortion_references([flt], tmp_path)
    assert refs.paths == {"IDCTAB": cache / REFS["IDCTAB"], "NPOLFILE": cache / REFS["NPOLFILE"],
                          "D2IMFILE": None}
    bare = _write_flt(tmp_path / "j2_flt.fits", IDCTAB="N/A")
    with pytest.raises(ReferenceFileError, match="j2_flt.fits.*IDCTAB.*crds bestrefs"):
        resolve_distortion_references([bare], tmp_path)


def test_missing_imphttab_names_the_keyword_and_bestrefs(tmp_path):
    # Raw files as first archived before 2007 have no IMPHTTAB (photometry then came
    # from synphot tables); the error names the keyword and how to fill it in.
    raw = _write_raw(tmp_path / "j1_raw.fits", IMPHTTAB=None)
    with pytest.raises(InputError) as info:
        resolve_references([raw], tmp_path)
    message = str(info.value)
    assert "IMPHTTAB" in message and "PHOTCORR" in message
    assert "crds bestrefs --update-bestrefs --files" in message
    assert str(raw) in message
    # With PHOTCORR off the keyword is not needed.
    raw2 = _write_raw(tmp_path / "j2_raw.fits", IMPHTTAB=None, PHOTCORR="OMIT")
    assert needed_references(fits.getheader(raw2))["IMPHTTAB"] is None


def test_missing_satufile_is_optional(tmp_path):
    raw = _write_raw(tmp_path / "j1_raw.fits", SATUFILE=None)
    names = needed_references(fits.getheader(raw))
    assert names["SATUFILE"] is None
    assert names["BIASFILE"] == "ddddddddj_bia.fits"


def test_truncated_reference_is_named_with_the_fetch_command(tmp_path):
    raw = _write_raw(tmp_path / "j1_raw.fits")
    cache = tmp_path / "crds" / "references" / "hst" / "acs"
    _populate(cache, REFS.values())
    bias = cache / REFS["BIASFILE"]
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((64, 64), np.float32))]).writeto(
        bias, overwrite=True)
    bias.write_bytes(bias.read_bytes()[:2880 * 2 + 4000])  # the image cut short
    with pytest.raises(ReferenceFileError,
                       match=r"ddddddddj_bia.fits: damaged reference file, truncated.*"
                             r"crds sync --files ddddddddj_bia.fits"):
        resolve_references([raw], tmp_path)


def test_no_fetch_says_so_instead_of_blaming_the_server(tmp_path):
    raw = _write_raw(tmp_path / "j1_raw.fits")
    cache = tmp_path / "crds" / "references" / "hst" / "acs"
    _populate(cache, [n for k, n in REFS.items() if k != "BIASFILE"])
    with pytest.raises(ReferenceFileError, match=r"not fetched: --no-fetch") as info:
        resolve_references([raw], tmp_path, fetch=False)
    assert "reachable" not in str(info.value)
