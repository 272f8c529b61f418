"""Provenance keywords are added without touching the image or extensions."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from hstred.drizzle.provenance import write_provenance


def test_provenance_rewrites_only_the_primary_header(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.normal(size=(300, 257)).astype(np.float32)
    image[5, 7] = np.nan
    primary = fits.PrimaryHDU(image)
    primary.header["EXPTIME"] = (2000.0, "seconds")
    table = fits.BinTableHDU.from_columns([fits.Column(name="ROOTNAME", format="9A",
                                                       array=np.array(["jd7101a0q"]))],
                                          name="HDRTAB")
    path = tmp_path / "p_drz_sci.fits"
    fits.HDUList([primary, table]).writeto(path)
    with fits.open(path) as hdul:
        old_start = hdul.fileinfo(0)["datLoc"]
    old_bytes = path.read_bytes()
    cards = [(f"HSTX{i:04d}", float(i) / 3, f"card {i}") for i in range(120)]
    cards.append(("ALNREF", "jd7101_F606W", "reference visit group"))
    write_provenance(path, cards, ["first history line", "second history line"])

    with fits.open(path) as hdul:
        hdul.verify("exception")
        assert len(hdul) == 2 and hdul[1].name == "HDRTAB"
        assert list(hdul[1].data["ROOTNAME"]) == ["jd7101a0q"]
        hdr = hdul[0].header
        assert hdr["EXPTIME"] == 2000.0 and hdr["ALNREF"] == "jd7101_F606W"
        assert hdr["HSTX0119"] == 119 / 3 and hdr.comments["HSTX0007"] == "card 7"
        assert list(hdr["HISTORY"])[-2:] == ["first history line", "second history line"]
        np.testing.assert_array_equal(hdul[0].data, image)
        new_start = hdul.fileinfo(0)["datLoc"]
    assert new_start > old_start and new_start % 2880 == 0
    # everything after the primary header is byte for byte what it was
    assert path.read_bytes()[new_start:] == old_bytes[old_start:]
    assert not list(tmp_path.glob(".*tmp"))


def _tie(**changes):
    from hstred.drizzle.result import AbsoluteTie

    values = dict(status="TIED", catalog="/data/gaia.ecsv", source="file",
                  epoch_handling="proper motion and parallax from J2016.0 to each visit's epoch",
                  epochs_jyear={"jd7101_F606W": 2024.4215}, n_catalog=12, n_matches=8,
                  n_pairs=30, rms_arcsec=0.0042, shift_x_arcsec=-0.51234567,
                  shift_y_arcsec=0.2, rotation_deg=-0.0125, scale=1.0000001,
                  wcsname="HSTRED-GAIA", min_matches=5, max_rms_arcsec=0.02,
                  shift_x_error_arcsec=0.00123456, shift_y_error_arcsec=0.0011,
                  rotation_error_deg=0.5 / 3600.0, scale_error=2.5e-6, chi2_dof=1.07)
    values.update(changes)
    return AbsoluteTie(**values)


def test_absolute_tie_keywords_only_when_a_catalog_was_asked_for():
    from hstred.drizzle.config import DrizzleConfig
    from hstred.drizzle.provenance import provenance_cards

    common = dict(config=DrizzleConfig(), product_kind="FILTER", n_images=4,
                  orientation_deg=0.0, solutions=[], reference="jd7101_F606W")
    cards, history = provenance_cards(**common)
    keys = [k for k, _, _ in cards]
    assert not [k for k in keys if k.startswith("ABS")]
    assert dict((k, v) for k, v, _ in cards)["ALNWCSN"] == "HSTRED-ALIGN"

    cards, history = provenance_cards(**common, absolute=_tie())
    values = {k: v for k, v, _ in cards}
    assert values["ALNWCSN"] == "HSTRED-GAIA" and values["ABSSTAT"] == "TIED"
    assert values["ABSCAT"] == "gaia.ecsv" and values["ABSEPOCH"] == "PM+PLX"
    assert values["ABSNM"] == 8 and values["ABSRMS"] == 0.0042
    assert values["ABSDX"] == -0.512346 and values["ABSROT"] == -45.0
    assert values["ABSEDX"] == 0.001235 and values["ABSEROT"] == 0.5
    assert values["ABSESCL"] == 2.5e-6 and values["ABSCHI2"] == 1.07
    assert any("J2024.4215" in h for h in history)
    # Every card fits a FITS header.
    hdr = fits.Header()
    for k, v, c in cards:
        hdr[k] = (v, c)

    cards, history = provenance_cards(**common, absolute=_tie(
        status="RELATIVE", wcsname="HSTRED-ALIGN", message="3 catalog stars matched < 5",
        epoch_handling="none: no proper motions in the catalog, positions used as given"))
    values = {k: v for k, v, _ in cards}
    assert values["ABSSTAT"] == "RELATIVE" and values["ALNWCSN"] == "HSTRED-ALIGN"
    assert values["ABSEPOCH"] == "NONE"
    assert any("not applied: 3 catalog stars" in h for h in history)
