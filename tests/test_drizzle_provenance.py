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
