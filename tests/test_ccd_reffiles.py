"""Reference-file readers: row selection, chip matching and IMPHTTAB interpolation."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from hstred.ccd import reffiles
from hstred.errors import ReferenceFileError


def _write_table(path, columns, *, extname=None, primary=None):
    table = fits.BinTableHDU(Table(columns), name=extname)
    fits.HDUList([fits.PrimaryHDU(header=primary), table]).writeto(path)
    return path


def _ccdtab_row(chip, gain, atod, offset=3):
    row = {"CCDAMP": "ABCD", "CCDCHIP": chip, "CCDGAIN": gain, "BINAXIS1": 1, "BINAXIS2": 1}
    for a, g in zip("ABCD", atod, strict=True):
        row[f"CCDOFST{a}"] = offset
        row[f"CCDBIAS{a}"] = 2000.0 + ord(a)
        row[f"ATODGN{a}"] = g
        row[f"READNSE{a}"] = 4.0 + 0.1 * "ABCD".index(a)
    row.update(AMPX=2048, AMPY=0, ATODSAT=65534, SATURATE=80000.0, OVRHFLS=22.0,
               OVRHUFLS=11.0)
    return row


@pytest.fixture
def ccdtab(tmp_path):
    rows = [_ccdtab_row(1, 1.0, (1.0, 1.0, 1.0, 1.0)),
            _ccdtab_row(1, 2.0, (2.0, 2.1, 2.2, 2.3)),
            _ccdtab_row(2, 2.0, (2.0, 2.1, 2.2, 2.3)),
            _ccdtab_row(-999, 2.0, (9.0, 9.0, 9.0, 9.0), offset=4)]
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    columns["CCDGAIN"] = np.array(columns["CCDGAIN"], dtype=np.float32)
    return _write_table(tmp_path / "ccd.fits", columns)


def test_ccd_parameters_select_row_by_gain_chip_and_offsets(ccdtab):
    digest = hashlib.sha256(ccdtab.read_bytes()).hexdigest()
    p = reffiles.read_ccd_parameters(ccdtab, ccdamp="ABCD", chip=1, ccdgain=2.0,
                                     ccdofst=(3, 3, 3, 3))
    assert p.gain_e_per_dn == {"A": 2.0, "B": 2.1, "C": 2.2, "D": 2.3}
    assert p.readnoise_e["B"] == pytest.approx(4.1)
    assert p.bias_dn["A"] == 2065.0
    assert (p.ampx, p.ampy, p.atodsat_dn) == (2048, 0, 65534)
    assert (p.overhead_flashed_s, p.overhead_unflashed_s) == (22.0, 11.0)
    # -999 in CCDCHIP is a wildcard; CCDOFST selects that row.
    w = reffiles.read_ccd_parameters(ccdtab, ccdamp="ABCD", chip=2, ccdgain=2.0,
                                     ccdofst=(4, 4, 4, 4))
    assert w.gain_e_per_dn["C"] == 9.0
    assert hashlib.sha256(ccdtab.read_bytes()).hexdigest() == digest


def test_ccd_parameters_zero_unused_amplifiers(tmp_path):
    row = _ccdtab_row(1, 2.0, (2.0, 2.1, 2.2, 2.3)) | {"CCDAMP": "AD"}
    path = _write_table(tmp_path / "ccd_ad.fits", {k: [v] for k, v in row.items()})
    p = reffiles.read_ccd_parameters(path, ccdamp="AD", chip=1, ccdgain=2.0,
                                     ccdofst=(3, 3, 3, 3))
    assert p.gain_e_per_dn == {"A": 2.0, "B": 0.0, "C": 0.0, "D": 2.3}
    assert p.readnoise_e["B"] == 0.0 and p.bias_dn["C"] == 0.0


def test_ccd_parameters_without_match_raise(ccdtab):
    with pytest.raises(ReferenceFileError, match="no row"):
        reffiles.read_ccd_parameters(ccdtab, ccdamp="ABCD", chip=1, ccdgain=0.5,
                                     ccdofst=(3, 3, 3, 3))


def test_missing_reference_file_raises(tmp_path):
    with pytest.raises(ReferenceFileError, match="does not exist"):
        reffiles.read_ccd_parameters(tmp_path / "nope.fits", ccdamp="ABCD", chip=1, ccdgain=2,
                                     ccdofst=(3, 3, 3, 3))


def test_overscan_parameters_convert_to_zero_indexed(tmp_path):
    cols = {"CCDAMP": ["ABCD", "ABCD"], "CCDCHIP": [1, 2], "BINX": [1, 1], "BINY": [1, 1],
            "NX": [4144, 4144], "NY": [2068, 2068], "TRIMX1": [24, 24], "TRIMX2": [24, 24],
            "TRIMY1": [20, 0], "TRIMY2": [0, 20], "VX1": [25, 25], "VX2": [4120, 4120],
            "VY1": [2, 2050], "VY2": [19, 2067], "BIASSECTA1": [1, 1], "BIASSECTA2": [24, 24],
            "BIASSECTB1": [4121, 4121], "BIASSECTB2": [4144, 4144]}
    path = _write_table(tmp_path / "osc.fits", cols)
    o = reffiles.read_overscan_parameters(path, ccdamp="ABCD", chip=2, nx=4144, ny=2068)
    assert o.trimx == (24, 24) and o.trimy == (0, 20)
    assert o.vy == (2049, 2066) and o.biassecta == (0, 23) and o.biassectb == (4120, 4143)
    with pytest.raises(ReferenceFileError):
        reffiles.read_overscan_parameters(path, ccdamp="ABCD", chip=2, nx=2072, ny=2068)


def test_bad_pixel_rows_filter_by_chip_gain_and_amp(tmp_path):
    cols = {"PIX1": [1, 2, 3, 4], "PIX2": [1, 1, 1, 1], "LENGTH": [1, 1, 1, 1],
            "AXIS": [1, 2, 1, 1], "VALUE": np.array([4, 16, 32, 64], np.int16),
            "CCDCHIP": [1, 2, -999, 1], "CCDGAIN": np.array([2.0, 2.0, -999.0, 1.0], np.float32),
            "CCDAMP": ["ABCD", "ABCD", "N/A", "ABCD"]}
    path = _write_table(tmp_path / "bpx.fits", cols)
    rows = reffiles.read_bad_pixel_rows(path, ccdamp="ABCD", chip=1, ccdgain=2.0)
    assert [r.value for r in rows] == [4, 32]
    # Without the optional CCDAMP/CCDGAIN columns every chip-matching row applies.
    del cols["CCDAMP"], cols["CCDGAIN"]
    path2 = _write_table(tmp_path / "bpx2.fits", cols)
    rows2 = reffiles.read_bad_pixel_rows(path2, ccdamp="ABCD", chip=1, ccdgain=2.0)
    assert [r.value for r in rows2] == [4, 32, 64]


def test_bad_pixel_rows_reject_invalid_axis(tmp_path):
    cols = {"PIX1": [1], "PIX2": [1], "LENGTH": [1], "AXIS": [3], "VALUE": [4], "CCDCHIP": [1]}
    path = _write_table(tmp_path / "bpx.fits", cols)
    with pytest.raises(ReferenceFileError, match="AXIS"):
        reffiles.read_bad_pixel_rows(path, ccdamp="ABCD", chip=1, ccdgain=2.0)


def test_reference_image_matched_by_ccdchip_not_position(tmp_path):
    hdus = [fits.PrimaryHDU(header=fits.Header([("NEXTEND", 6)]))]
    for extver, chip in ((1, 1), (2, 2)):  # deliberately chip 1 first
        sci = np.full((3, 4), 10.0 * chip, np.float32)
        hdus.append(fits.ImageHDU(sci, header=fits.Header([("CCDCHIP", chip)]), name="SCI",
                                  ver=extver))
        hdus.append(fits.ImageHDU(header=fits.Header([("PIXVALUE", 0.5)]), name="ERR",
                                  ver=extver))
        hdus.append(fits.ImageHDU(np.full((3, 4), chip, np.int16), name="DQ", ver=extver))
    path = tmp_path / "dark.fits"
    fits.HDUList(hdus).writeto(path)
    ref = reffiles.read_reference_image(path, 2, what="DARKFILE")
    assert ref.sci[0, 0] == 20.0
    np.testing.assert_array_equal(ref.err, 0.5)  # empty ERR filled from PIXVALUE
    assert ref.dq.dtype == np.int16 and ref.dq[0, 0] == 2
    with pytest.raises(ReferenceFileError, match="CCDCHIP=3"):
        reffiles.read_reference_image(path, 3, what="DARKFILE")


@pytest.fixture
def imphttab(tmp_path):
    primary = fits.Header([("NEXTEND", 3), ("PHOTZPT", -21.1), ("PARNUM", 1)])
    hdus = [fits.PrimaryHDU(header=primary)]
    for name, base in (("PHOTFLAM", 1e-19), ("PHOTPLAM", 5900.0), ("PHOTBW", 670.0)):
        table = Table({
            "OBSMODE": ["acs,wfc1,f606w,mjd#", "acs,wfc1,f814w"],
            "DATACOL": [f"{name}1", name],
            name: [0.0, base * 2],
            f"{name}1": [np.array([base, base * 1.1, base * 1.3, 0.0]), np.zeros(4)],
            "PAR1NAMES": ["MJD#", ""],
            "PAR1VALUES": [np.array([52000.0, 54000.0, 58000.0, 0.0]), np.zeros(4)],
            "NELEM1": [3, 0],
        })
        hdus.append(fits.BinTableHDU(table, name=name))
    path = tmp_path / "imp.fits"
    fits.HDUList(hdus).writeto(path)
    return path


def test_photometry_interpolates_in_mjd(imphttab):
    v = reffiles.read_photometry(imphttab, "ACS WFC1 F606W MJD#56000.0000")
    # halfway between 54000 (1.1e-19) and 58000 (1.3e-19)
    assert v.photflam == pytest.approx(1.2e-19)
    assert v.photplam == pytest.approx(5900.0 * 1.2)
    assert v.photzpt == -21.1
    assert not v.extrapolated
    fixed = reffiles.read_photometry(imphttab, "ACS WFC1 F814W")
    assert fixed.photflam == pytest.approx(2e-19)


def test_photometry_outside_mjd_range_is_flagged_unless_extrap(imphttab):
    v = reffiles.read_photometry(imphttab, "ACS WFC1 F606W MJD#60000.0")
    assert v.extrapolated and v.photflam == -9999.0
    with fits.open(imphttab, mode="update") as hdul:
        hdul[0].header["EXTRAP"] = True
    v = reffiles.read_photometry(imphttab, "ACS WFC1 F606W MJD#60000.0")
    assert v.photflam == pytest.approx(1.4e-19)  # straight line through the last two points


def test_photometry_unknown_obsmode_raises(imphttab):
    with pytest.raises(ReferenceFileError, match="no PHOTFLAM row"):
        reffiles.read_photometry(imphttab, "ACS WFC1 F555W MJD#56000.0")


def test_photmode_to_obsmode():
    assert reffiles.photmode_to_obsmode("ACS WFC1 F606W MJD#56000.5000") == (
        "acs,wfc1,f606w,mjd#", {"mjd#": 56000.5})


def test_bad_pixel_rows_archive_layout(tmp_path):
    # Archive BPIXTAB: extension 'BPX', int16 columns, integer CCDGAIN, one-letter
    # CCDAMP rows (single-amplifier readouts) and CCDCHIP -999 for every chip.
    def i16(values):
        return np.array(values, np.int16)

    cols = [fits.Column("PIX1", "I", array=i16([1, 2, 3, 4, 5])),
            fits.Column("PIX2", "I", array=i16([1, 1, 1, 1, 1])),
            fits.Column("LENGTH", "I", array=i16([1, 1, 1, 1, 1])),
            fits.Column("AXIS", "I", array=i16([1, 1, 1, 2, 1])),
            fits.Column("VALUE", "I", array=i16([4, 8, 16, 32, 64])),
            fits.Column("CCDCHIP", "I", array=i16([-999, 1, 1, 2, 1])),
            fits.Column("CCDAMP", "4A", array=["ABCD", "A", "ABCD", "ABCD", "ANY"]),
            fits.Column("CCDGAIN", "I", array=i16([-999, -999, 2, 1, 1]))]
    path = tmp_path / "bpx.fits"
    fits.HDUList([fits.PrimaryHDU(),
                  fits.BinTableHDU.from_columns(cols, name="BPX")]).writeto(path)
    rows = reffiles.read_bad_pixel_rows(path, ccdamp="ABCD", chip=1, ccdgain=2.0)
    assert [r.value for r in rows] == [4, 16]
    assert all(isinstance(r.pix1, int) and isinstance(r.value, int) for r in rows)
    # An amplifier-A readout (CCDAMP 'A') takes the one-letter row, and gain 1 the
    # integer-gain rows of gain 1, but not the full-frame rows; 'ANY' matches every amp.
    rows_a = reffiles.read_bad_pixel_rows(path, ccdamp="A", chip=1, ccdgain=1.0)
    assert [r.value for r in rows_a] == [8, 64]
    rows_chip2 = reffiles.read_bad_pixel_rows(path, ccdamp="ABCD", chip=2, ccdgain=1.0)
    assert [r.value for r in rows_chip2] == [4, 32]


def _archive_imphttab(path, *, grid, flam):
    """IMPHTTAB as the archive serves it: lower-case columns, 'PD()' arrays."""
    hdus = [fits.PrimaryHDU(header=fits.Header([("NEXTEND", 3), ("PHOTZPT", -21.1),
                                                 ("PARNUM", 1)]))]
    for name, scale in (("PHOTFLAM", 1.0), ("PHOTPLAM", 1e23), ("PHOTBW", 1e22)):
        lower = name.lower()
        cols = [
            fits.Column("obsmode", "40A", array=["acs,wfc1,f606w", "acs,wfc1,f606w,mjd#"]),
            fits.Column("datacol", "12A", array=[name, f"{name}1"]),
            fits.Column(lower, "D", array=[7e-20 * scale, 0.0]),
            fits.Column(f"{lower}1", "PD()",
                        array=np.array([np.zeros(0), np.array(flam) * scale], dtype=object)),
            fits.Column("nelem1", "J", array=[0, len(grid)]),
            fits.Column("par1names", "12A", array=["", "MJD#"]),
            fits.Column("par1values", "PD()",
                        array=np.array([np.zeros(0), np.array(grid)], dtype=object)),
            fits.Column("pedigree", "20A", array=["INFLIGHT", "INFLIGHT"]),
            fits.Column("descrip", "60A", array=["", ""]),
        ]
        hdus.append(fits.BinTableHDU.from_columns(cols, name=name))
    fits.HDUList(hdus).writeto(path)
    return path


def test_photometry_archive_layout(tmp_path):
    path = _archive_imphttab(tmp_path / "imp.fits", grid=[52334.0, 54000.0, 58000.0],
                             flam=[1.0e-19, 1.1e-19, 1.3e-19])
    v = reffiles.read_photometry(path, "ACS WFC1 F606W MJD#56000.0000")
    assert v.photflam == pytest.approx(1.2e-19)
    assert v.photplam == pytest.approx(1.2e4) and v.photbw == pytest.approx(1.2e3)
    early = reffiles.read_photometry(path, "ACS WFC1 F606W MJD#53167.0")
    assert early.photflam == pytest.approx(1.05e-19)
    fixed = reffiles.read_photometry(path, "ACS WFC1 F606W")
    assert fixed.photflam == pytest.approx(7e-20)
    outside = reffiles.read_photometry(path, "ACS WFC1 F606W MJD#52000.0")
    assert outside.extrapolated and outside.photflam == -9999.0
