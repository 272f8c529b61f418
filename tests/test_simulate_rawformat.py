"""Format checks of simulated raw and reference files against the ACS/WFC notes (1, 8, 9)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from hstred.acs import CHIP_NX, CHIP_NY, RAW_NX, RAW_NY, chip_layout
from hstred.simulate.references import CRDS_SUBDIR

pytestmark = pytest.mark.slow

REQUIRED_PRIMARY = {
    "NEXTEND": 6, "TELESCOP": "HST", "INSTRUME": "ACS", "DETECTOR": "WFC", "CCDAMP": "ABCD",
    "CCDGAIN": 2.0, "APERTURE": "WFC", "OBSTYPE": "IMAGING", "SUBARRAY": False, "BINAXIS1": 1,
    "BINAXIS2": 1, "FLASHDUR": 0.0, "FLASHSTA": "NOT PERFORMED", "ATODCORR": "OMIT",
    "FLSHCORR": "OMIT", "SHADCORR": "OMIT", "DQICORR": "PERFORM", "BLEVCORR": "PERFORM",
    "BIASCORR": "PERFORM", "DARKCORR": "PERFORM", "FLATCORR": "PERFORM",
    "PHOTCORR": "PERFORM", "EXPSCORR": "PERFORM", "DRIZCORR": "PERFORM", "CRCORR": "OMIT",
    "RPTCORR": "OMIT", "PCTECORR": "OMIT", "SINKCORR": "OMIT", "DFLTFILE": "N/A",
    "LFLTFILE": "N/A", "FLSHFILE": "N/A", "PCTETAB": "N/A", "SNKCFILE": "N/A",
    "STATFLAG": False,
}
IMAGE_REFS = ("BIASFILE", "SATUFILE", "DARKFILE", "DRKCFILE", "PFLTFILE")
TABLE_REFS = ("BPIXTAB", "CCDTAB", "OSCNTAB", "IMPHTTAB")
DISTORTION_REFS = ("IDCTAB", "NPOLFILE", "D2IMFILE")
#: Keywords a real archive raw carries (notes section 9), beyond the calacs set above.
ARCHIVE_PRIMARY = ("ATODGNA", "ATODGNB", "ATODGNC", "ATODGND", "READNSEA", "READNSEB",
                   "READNSEC", "READNSED", "BIASLEVA", "BIASLEVB", "BIASLEVC", "BIASLEVD",
                   "CAL_VER", "OPUS_VER", "DATE", "GRAPHTAB", "COMPTAB", "MDRIZSKY",
                   "QUALCOM1", "QUALCOM2", "QUALCOM3", "MDRIZTAB", "CRREJTAB",
                   *DISTORTION_REFS)
ARCHIVE_SCI = ("WCSAXES", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CTYPE1", "CTYPE2", "CD1_1",
               "CD1_2", "CD2_1", "CD2_2", "LTV1", "LTV2", "LTM1_1", "LTM2_2", "ORIENTAT",
               "RA_APER", "DEC_APER", "PA_APER", "VAFACTOR", "CENTERA1", "CENTERA2",
               "SIZAXIS1", "SIZAXIS2", "BINAXIS1", "BINAXIS2", "PHOTMODE", "SDQFLAGS",
               "NGOODPIX", "GOODMIN", "GOODMAX", "GOODMEAN", "SNRMIN", "SNRMAX", "SNRMEAN",
               "MEANDARK", "MEANBLEV", "MEANFLSH", "INHERIT")
#: What the archive's raw SCI headers do not carry: the distortion is in references.
NOT_IN_RAW_SCI = ("A_ORDER", "B_ORDER", "AP_ORDER", "IDCSCALE", "WCSNAME", "CPDIS1",
                  "D2IMDIS1", "OCX10")


def _ref_path(out: Path, header, key: str) -> Path:
    value = header[key]
    assert value.startswith("jref$"), f"{key}={value}"
    return out / CRDS_SUBDIR / value[len("jref$"):]


def test_raw_file_layout(sim_program_small):
    out, _, result = sim_program_small
    assert len(result.raw_files) == 1
    path = result.raw_files[0]
    assert path.name.endswith("_raw.fits") and path.parent == out
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "ERR", "DQ", "SCI", "ERR", "DQ"]
        assert [h.header.get("EXTVER") for h in hdul[1:]] == [1, 1, 1, 2, 2, 2]
        assert [h.header["CCDCHIP"] for h in hdul[1:]] == [2, 2, 2, 1, 1, 1]
        for ext in (1, 4):
            h = hdul[ext].header
            lay = chip_layout(h["CCDCHIP"])
            assert (h["BITPIX"], h["BZERO"], h["BSCALE"]) == (16, 32768, 1)
            assert (h["NAXIS1"], h["NAXIS2"]) == (RAW_NX, RAW_NY)
            assert hdul[ext].data.dtype == np.uint16
            assert (h["LTV1"], h["LTV2"]) == (lay.ltv1, lay.ltv2)
            assert h["BUNIT"] == "COUNTS"
            for sub in (ext + 1, ext + 2):
                e = hdul[sub].header
                assert e["NAXIS"] == 0 and hdul[sub].data is None
                assert e["BITPIX"] == 16
                assert (e["NPIX1"], e["NPIX2"], e["PIXVALUE"]) == (RAW_NX, RAW_NY, 0)
                assert isinstance(e["PIXVALUE"], int)


def test_raw_primary_keywords(sim_program_small):
    out, config, result = sim_program_small
    truth = json.loads(result.truth_json.read_text())
    exp = truth["visits"][0]["exposures"][0]
    h = fits.getheader(result.raw_files[0], 0)
    for key, value in REQUIRED_PRIMARY.items():
        assert h[key] == value, key
    root = result.raw_files[0].name[:9]
    assert h["ROOTNAME"] == root and h["FILENAME"] == f"{root}_raw.fits"
    assert root.startswith(f"j{config.program}01") and root.endswith("q")
    assert (h["FILTER1"], h["FILTER2"]) == ("F606W", "CLEAR2L")
    assert h["EXPTIME"] == config.exptime_s
    assert h["EXPSTART"] == pytest.approx(exp["expstart_mjd"])
    assert h["EXPEND"] - h["EXPSTART"] == pytest.approx(config.exptime_s / 86400, abs=1e-7)
    assert h["DARKTIME"] > h["EXPTIME"]
    assert h["DATE-OBS"] == config.date
    assert h["JWROTYPE"].upper() == "DS_INT"
    for key in ARCHIVE_PRIMARY:
        assert key in h, key
    assert isinstance(h["CCDGAIN"], int) and isinstance(h["STATFLAG"], bool)
    for key in DISTORTION_REFS:
        assert _ref_path(out, h, key).is_file(), key
    assert h["TARGNAME"] == config.target
    for key in ("CCDOFSTA", "CCDOFSTB", "CCDOFSTC", "CCDOFSTD", "PA_V3", "RA_TARG", "DEC_TARG",
                "PROPOSID", "TIME-OBS"):
        assert key in h
    for key in IMAGE_REFS + TABLE_REFS:
        assert _ref_path(out, h, key).is_file(), key


def test_raw_wcs_is_linear_as_the_archive_writes_it(sim_program_small):
    _, _, result = sim_program_small
    with fits.open(result.raw_files[0]) as hdul:
        wcs = {}
        for ext in (1, 4):
            h = hdul[ext].header
            for key in ARCHIVE_SCI:
                assert key in h, key
            for key in NOT_IN_RAW_SCI:
                assert key not in h, key
            assert (h["CTYPE1"], h["CTYPE2"]) == ("RA---TAN", "DEC--TAN")
            assert (h["CRPIX1"], h["CRPIX2"]) == (2072.0, 1024.0 + h["LTV2"])
            assert 0.9998 < h["VAFACTOR"] < 1.0002 and h["VAFACTOR"] != 1.0
            w = WCS(h)
            scale = np.sqrt(abs(np.linalg.det(w.wcs.cd))) * 3600
            assert 0.048 < scale < 0.051
            wcs[h["CCDCHIP"]] = (w, h["LTV1"], h["LTV2"])
    # Chip placement: WFC2's top edge is ~2.5" from WFC1's bottom edge (FLT coordinates),
    # within the few pixels a linear WCS allows.
    w2, ltv1, ltv2_2 = wcs[2]
    w1, _, ltv2_1 = wcs[1]
    top2 = w2.all_pix2world([[2048 + ltv1, 2048 + ltv2_2]], 1)[0]
    bottom1 = w1.all_pix2world([[2048 + ltv1, 1 + ltv2_1]], 1)[0]
    sep = np.hypot((top2[0] - bottom1[0]) * np.cos(np.radians(top2[1])),
                   top2[1] - bottom1[1]) * 3600
    assert 1.5 < sep < 4.0


def test_image_reference_files_have_calacs_shapes(sim_program_small):
    out, _, result = sim_program_small
    h = fits.getheader(result.raw_files[0], 0)
    expected = {
        "BIASFILE": ((RAW_NY, RAW_NX), True, "BIAS"),
        "SATUFILE": ((RAW_NY, RAW_NX), True, "FULL-WELL SATURATION LEVEL MAP"),
        "DARKFILE": ((CHIP_NY, CHIP_NX), False, "DARK"),
        "DRKCFILE": ((CHIP_NY, CHIP_NX), False, "CTEDARK"),
        "PFLTFILE": ((CHIP_NY, CHIP_NX), False, "PIXEL-TO-PIXEL FLAT"),
    }
    for key, (shape, raw_sized, filetype) in expected.items():
        with fits.open(_ref_path(out, h, key)) as ref:
            p = ref[0].header
            assert p["NEXTEND"] == 6 and p["FILETYPE"] == filetype
            for kw in ("INSTRUME", "DETECTOR", "USEAFTER", "PEDIGREE", "DESCRIP"):
                assert kw in p, (key, kw)
            scis = [x for x in ref if x.name == "SCI"]
            assert sorted(x.header["CCDCHIP"] for x in scis) == [1, 2]
            for sci in scis:
                assert sci.data.shape == shape
                lay = chip_layout(sci.header["CCDCHIP"])
                ltv = (lay.ltv1, lay.ltv2) if raw_sized else (0.0, 0.0)
                assert (sci.header["LTV1"], sci.header["LTV2"]) == ltv
            assert [x.name for x in ref[1:]] == ["SCI", "ERR", "DQ"] * 2
        if key == "PFLTFILE":
            assert (p["FILTER1"], p["FILTER2"]) == ("F606W", "CLEAR2L")
        if key in ("DARKFILE", "DRKCFILE"):
            with fits.open(_ref_path(out, h, key)) as ref:
                dq = ref["DQ", 1].data
                assert dq.shape == shape and set(np.unique(dq)) == {0, 16}


def test_table_reference_files_match_the_raw_header(sim_program_small):
    out, _, result = sim_program_small
    h = fits.getheader(result.raw_files[0], 0)
    ccd = Table.read(_ref_path(out, h, "CCDTAB"), hdu=1)
    assert len(ccd.colnames) >= 27
    for chip in (1, 2):
        rows = [r for r in ccd if r["CCDAMP"] == h["CCDAMP"] and r["CCDCHIP"] == chip
                and r["CCDGAIN"] == h["CCDGAIN"]
                and all(r[f"CCDOFST{a}"] == h[f"CCDOFST{a}"] for a in "ABCD")]
        assert len(rows) == 1
        assert rows[0]["AMPX"] == 2048 and rows[0]["ATODSAT"] == 65535
    osc = Table.read(_ref_path(out, h, "OSCNTAB"), hdu=1)
    assert len(osc.colnames) == 18
    assert {(r["CCDCHIP"], r["NX"], r["NY"]) for r in osc} == {(1, RAW_NX, RAW_NY),
                                                              (2, RAW_NX, RAW_NY)}
    bpx = fits.open(_ref_path(out, h, "BPIXTAB"))
    assert {"PIX1", "PIX2", "LENGTH", "AXIS", "VALUE", "CCDCHIP"} <= set(bpx[1].columns.names)
    assert len(bpx[1].data) > 0
    imp = fits.open(_ref_path(out, h, "IMPHTTAB"))
    assert [x.name for x in imp[1:]] == ["PHOTFLAM", "PHOTPLAM", "PHOTBW"]
    assert "acs,wfc1,f606w,mjd#" in list(imp["PHOTFLAM"].data["OBSMODE"])


def test_bad_columns_in_bpixtab_are_dead_in_the_data(sim_program_small):
    out, _, result = sim_program_small
    h = fits.getheader(result.raw_files[0], 0)
    bpx = fits.getdata(_ref_path(out, h, "BPIXTAB"), 1)
    dead = [r for r in bpx if r["AXIS"] == 2 and r["LENGTH"] == CHIP_NY]
    assert dead
    truth = json.loads(result.truth_json.read_text())
    dead_truth = [d for d in truth["defects"] if d["axis"] == 2 and d["length"] == CHIP_NY]
    assert {(d["chip"], d["x"] + 1) for d in dead_truth} == {(int(r["CCDCHIP"]), int(r["PIX1"]))
                                                             for r in dead}
    with fits.open(result.raw_files[0]) as hdul:
        for r in dead:
            sci = next(x for x in hdul if x.name == "SCI" and x.header["CCDCHIP"] == r["CCDCHIP"])
            lay = chip_layout(int(r["CCDCHIP"]))
            trimmed = sci.data[lay.science_rows, lay.science_cols].astype(float)
            col = int(r["PIX1"]) - 1
            neighbours = np.median(trimmed[:, [col - 2, col + 2]])
            # The sky (~60 e-, ~30 DN) is almost missing in a dead column.
            assert np.median(trimmed[:, col]) < neighbours - 15


def test_truth_outputs(sim_program_small):
    out, config, result = sim_program_small
    cat = Table.read(result.truth_catalog)
    assert len(cat) == config.sources
    for col in ("id", "ra", "dec", "kind", "flux_F606W", "r_eff_arcsec", "sersic_n", "ellip",
                "pa_deg"):
        assert col in cat.colnames
    truth = json.loads(result.truth_json.read_text())
    assert truth["seed"] == config.seed and truth["config"]["filters"] == ["F606W"]
    visit = truth["visits"][0]
    for key in ("dx_arcsec", "dy_arcsec", "rotation_deg", "center_ra_deg", "center_dec_deg"):
        assert key in visit["wcs_error"]
    exp = visit["exposures"][0]
    assert exp["cte_model"] is None  # this program has no CTE
    chip = exp["chips"]["1"]
    assert chip["true_wcs"]["lookup_tables"] == {"npol": True, "d2im": True}
    assert len(chip["true_wcs"]["sip_a"]) == 5 and chip["header_wcs"]["crpix_flt"] == [
        2048.0, 1024.0]
    assert 0.9998 < exp["vafactor"] < 1.0002
    assert set(truth["detector"]["gain_e_per_dn"]) == set("ABCD")
    assert truth["defects"] and "wcs_error_convention" in truth
    with fits.open(out / "truth" / "detector.fits") as det:
        names = [(x.name, x.header.get("CCDCHIP")) for x in det[1:]]
        assert ("BADPIX", 1) in names and ("HOTPIX", 2) in names and ("PAM", 1) in names
        assert det["BADPIX", 1].data.shape == (CHIP_NY, CHIP_NX)
        pam = det["PAM", 1].data
        assert 0.85 < pam.min() and pam.max() < 1.1  # +-9 % over the field
    assert len(result.truth_images) == 1
    with fits.open(result.truth_images[0]) as t:
        assert [(x.name, x.header["EXTVER"], x.header["CCDCHIP"]) for x in t[1:]] == [
            ("TRUTH", 1, 2), ("TRUTH", 2, 1), ("COSMIC", 1, 2), ("COSMIC", 2, 1)]
        assert t[1].header["BITPIX"] == -32 and t[1].data.shape == (CHIP_NY, CHIP_NX)
