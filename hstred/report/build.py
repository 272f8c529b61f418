"""Assemble ``DIR/OUTNAME_report.html`` from the run record, products and exposures."""

from __future__ import annotations

import html
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time

from hstred.acs import quadrants
from hstred.inputs import filter_name
from hstred.report import figures

__all__ = ["write_report", "exposure_rows", "cte_profile"]

_CR_BIT = 4096


def _sky_and_cr(path: Path, work_copy: Path | None) -> tuple[float, float | None]:
    """Median sky (e-) of an exposure and the fraction of pixels flagged as cosmic rays."""
    skies = []
    cr = None
    with fits.open(path, memmap=True) as hdul:
        for ext in ("SCI",):
            for extver in (1, 2):
                data = hdul[ext, extver].data
                skies.append(float(np.median(data[::8, ::8])))
    if work_copy is not None and work_copy.is_file():
        flagged = total = 0
        with fits.open(work_copy, memmap=True) as hdul:
            for extver in (1, 2):
                dq = hdul["DQ", extver].data
                flagged += int(np.count_nonzero(dq & _CR_BIT))
                total += dq.size
        cr = flagged / total
    return float(np.mean(skies)), cr


def exposure_rows(calibrated: list[Path], drizzle_work: Path | None) -> list[dict]:
    """One row per exposure: date, exposure time, sky, CR fraction, CTE trap density."""
    rows = []
    for path in calibrated:
        path = Path(path)
        header = fits.getheader(path, 0)
        root = str(header.get("ROOTNAME", path.name[:9])).strip().lower()
        copy = None
        if drizzle_work is not None:
            found = sorted(drizzle_work.glob(f"**/{path.name}"))
            copy = found[0] if found else None
        sky, cr = _sky_and_cr(path, copy)
        rows.append({
            "rootname": root,
            "visit": root[:6],
            "filter": filter_name(header.get("FILTER1", ""), header.get("FILTER2", "")),
            "date": Time(float(header["EXPSTART"]), format="mjd").isot[:19],
            "exptime_s": float(header.get("EXPTIME", 0.0)),
            "sky_e": sky,
            "cr_fraction": cr,
            "cte_trap_density": header.get("CTETRAPD"),
            "pctecorr": header.get("PCTECORR", ""),
        })
    return rows


def cte_profile(flc: Path, *, half_width: int = 2, before_px: int = 8, after_px: int = 40):
    """Profile through the brightest clean star of an FLC, corrected and re-trailed.

    The trailed profile is the arCTIc forward model applied to the corrected
    quadrant, i.e. the charge as the detector read it. Returns (offsets,
    before, after, description) or None when no suitable star exists.
    """
    from hstred.cte.model import add_cte_to_quadrant

    header = fits.getheader(flc, 0)
    mjd = float(header["EXPSTART"])
    best = None
    with fits.open(flc) as hdul:
        for extver in (1, 2):
            sci = hdul["SCI", extver].data.astype(np.float64)
            dq = hdul["DQ", extver].data
            chip = int(hdul["SCI", extver].header["CCDCHIP"])
            for quad in quadrants(chip):
                q = sci[quad.flt]
                qdq = dq[quad.flt]
                sky = float(np.median(q[::4, ::4]))
                margin = after_px + 10
                inner = q[margin:-margin, margin:-margin]
                inner_dq = qdq[margin:-margin, margin:-margin]
                candidates = np.where((inner_dq == 0) & (inner < 30000.0), inner, -np.inf)
                iy, ix = np.unravel_index(np.argmax(candidates), candidates.shape)
                peak = candidates[iy, ix]
                if best is None or peak > best[0]:
                    best = (peak, chip, quad, q.copy(), sky, iy + margin, ix + margin)
    if best is None or not np.isfinite(best[0]):
        return None
    _peak, chip, quad, q, sky, y, x = best
    cols = slice(x - half_width, x + half_width + 1)
    # Parallel CTE acts on each column alone (arCTIc empties the traps between columns),
    # so trailing the star's columns gives what trailing the whole quadrant gives there.
    columns = np.ascontiguousarray(q[:, cols])
    trailed = add_cte_to_quadrant(columns, quad, mjd)
    away = -1 if quad.flip_y else 1  # trails point away from the readout row
    offsets = np.arange(-before_px, after_px + 1)
    rows = y + away * offsets
    after = np.array([columns[r].sum() for r in rows]) - sky * (2 * half_width + 1)
    before = np.array([trailed[r].sum() for r in rows]) - sky * (2 * half_width + 1)
    text = (f"{Path(flc).name}, chip {chip}, amplifier {quad.amp}, star at "
            f"(x={x}, y={y}) of the quadrant; {2 * half_width + 1}-column sum")
    return offsets, before, after, text


def _table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _k, title, _f in columns)
    body = []
    for row in rows:
        cells = []
        for key, _title, fmt in columns:
            value = row.get(key)
            cells.append("<td>-</td>" if value is None else
                         f"<td>{html.escape(format(value, fmt) if fmt else str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;
font-size:13px;text-align:right}th{background:#eee}img{max-width:100%;border:1px solid #ccc}
.grid{display:flex;flex-wrap:wrap;gap:1em}.grid figure{flex:1 1 45%;margin:0}"""


def _downsampled(paths: list[str]) -> dict[str, np.ndarray]:
    """Preview-sized block means of product images, two at a time.

    The products are memory-mapped and read a few rows at a time (numpy's copies and
    sums release the GIL, so two threads keep two cores busy).
    """
    def load(path: str) -> np.ndarray:
        with fits.open(path, memmap=True) as hdul:
            return figures.downsample(hdul[0].data)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(paths, pool.map(load, paths), strict=True))


def _absolute_section(tie: dict, files: Path, link: str) -> str:
    """The tie to the reference catalog: what was used, the fit, residuals across the field."""
    figures.plot_catalog_residuals(
        tie.get("residuals", {}), files / "catalog_residuals.png",
        title=f"residuals against {Path(tie['catalog']).name} (corrected - catalog)")
    status = ("tied: the products sit on the catalog's frame" if tie["status"] == "TIED"
              else f"NOT tied ({tie.get('message', '')}): the products keep the relative "
                   "alignment")
    epochs = ", ".join(f"{k} J{v:.3f}" for k, v in tie.get("epochs_jyear", {}).items())
    nan = float("nan")
    facts = [
        ("catalog", f"{tie['catalog']} ({tie['source']}, {tie['n_catalog']} stars)"),
        ("status", f"{status}; WCSNAME {tie['wcsname']}"),
        ("epochs", f"{tie['epoch_handling']}; {epochs}"),
        ("fit", f"{tie['n_matches']} stars ({tie['n_pairs']} pairs), RMS "
                f"{tie['rms_arcsec'] * 1000:.1f} mas (gates: >= {tie['min_matches']} stars, "
                f"<= {tie['max_rms_arcsec'] * 1000:.0f} mas)"),
        ("correction", f"shift E {tie['shift_x_arcsec'] * 1000:+.1f} mas, N "
                       f"{tie['shift_y_arcsec'] * 1000:+.1f} mas, rotation "
                       f"{tie['rotation_deg'] * 3600:+.2f}\", scale {tie['scale']:.7f}"),
        ("formal 1-sigma", f"shift E {tie.get('shift_x_error_arcsec', nan) * 1000:.2f} mas, "
                           f"N {tie.get('shift_y_error_arcsec', nan) * 1000:.2f} mas, rotation "
                           f"{tie.get('rotation_error_deg', nan) * 3600:.2f}\", scale "
                           f"{tie.get('scale_error', nan):.1e}; chi^2/dof "
                           f"{tie.get('chi2_dof', nan):.2f}"),
    ]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                   for k, v in facts)
    return (f"<h2>Absolute astrometry</h2><table>{rows}</table>"
            f"<img src='{link}/catalog_residuals.png'>")


def write_report(data_dir: Path, outname: str, record: dict, *,
                 drizzle_work: Path | None = None) -> Path:
    """Write ``DIR/OUTNAME_report.html`` (+ ``OUTNAME_report_files/*.png``) atomically."""
    data_dir = Path(data_dir)
    final_html = data_dir / f"{outname}_report.html"
    final_files = data_dir / f"{outname}_report_files"
    staging = Path(tempfile.mkdtemp(prefix=f".{outname}-report-", dir=data_dir))
    try:
        files = staging / final_files.name
        files.mkdir()
        sections = []
        drz = record["drizzle"]
        scale = float(record["config"]["drizzle"]["pixel_scale_arcsec"])
        previews = []
        small = _downsampled([p[k] for p in drz["products"] for k in ("sci", "wht")])
        for product in drz["products"]:
            filt = product["filter"]
            figures.plot_image(small[product["sci"]], files / f"{filt}_sci.png",
                               title=f"{outname} {filt} science", label="electrons / s")
            figures.plot_image(small[product["wht"]], files / f"{filt}_wht.png",
                               title=f"{outname} {filt} weight", label="weight",
                               stretch="linear")
            previews.append(
                f"<h3>{html.escape(filt)}</h3><p>{len(product['exposures'])} exposures, "
                f"{product['exptime_s']:.0f} s; {html.escape(Path(product['sci']).name)}</p>"
                f"<div class='grid'><figure><img src='{final_files.name}/{filt}_sci.png'></figure>"
                f"<figure><img src='{final_files.name}/{filt}_wht.png'></figure></div>")
        sections.append("<h2>Products</h2>" + "".join(previews))

        solutions = drz.get("solutions", [])
        if solutions:
            figures.plot_alignment(solutions, files / "alignment.png", pixel_scale_arcsec=scale)
            sections.append(
                "<h2>Alignment</h2>"
                f"<p>Reference: {html.escape(str(drz.get('reference', '')))}. Dropped: "
                f"{html.escape(', '.join(drz.get('dropped', [])) or 'none')}.</p>"
                f"<img src='{final_files.name}/alignment.png'>" + _table(solutions, [
                    ("visit", "visit", ""), ("filter", "filter", ""), ("status", "status", ""),
                    ("shift_x_arcsec", "shift E [\"]", ".4f"),
                    ("shift_y_arcsec", "shift N [\"]", ".4f"),
                    ("rotation_deg", "rotation [deg]", ".5f"), ("scale", "scale", ".6f"),
                    ("n_matches", "matches", "d"), ("rms_arcsec", "RMS [\"]", ".4f")]))

        distortion = drz.get("distortion", [])
        if distortion:
            rows = [{"rootname": d["rootname"], "wcsname": d["wcsname"],
                     "how": "applied with stwcs" if d["applied"] else "from the input file",
                     **{k: d["files"].get(k) or "N/A"
                        for k in ("IDCTAB", "NPOLFILE", "D2IMFILE")}}
                    for d in distortion]
            sections.append(
                "<h2>Distortion</h2><p>The camera's geometric distortion of each exposure "
                "(TAN-SIP polynomials with the lookup tables) before alignment.</p>"
                + _table(rows, [("rootname", "exposure", ""), ("wcsname", "WCSNAME", ""),
                                ("how", "solution", ""), ("IDCTAB", "IDCTAB", ""),
                                ("NPOLFILE", "NPOLFILE", ""), ("D2IMFILE", "D2IMFILE", "")]))

        absolute = drz.get("absolute")
        if absolute:
            sections.append(_absolute_section(absolute, files, final_files.name))

        calibrated = [Path(p) for p in record.get("calibrated", [])]
        corrected = [p for p in calibrated
                     if fits.getval(p, "PCTECORR", 0, default="") == "COMPLETE"]
        if corrected:
            profile = cte_profile(corrected[0])
            if profile is not None:
                offsets, before, after, text = profile
                figures.plot_cte_profile(offsets, before, after, files / "cte_profile.png",
                                         title="CTE trail through a bright star")
                sections.append(f"<h2>CTE correction</h2><p>{html.escape(text)}. The "
                                "trailed curve is not the raw exposure: it is the arCTIc "
                                "model's readout applied to the corrected image, i.e. the "
                                "trail the correction removed.</p>"
                                f"<img src='{final_files.name}/cte_profile.png'>")

        rows = exposure_rows(calibrated, drizzle_work)
        sections.append("<h2>Exposures</h2>" + _table(rows, [
            ("rootname", "exposure", ""), ("visit", "visit", ""), ("filter", "filter", ""),
            ("date", "date (UT)", ""), ("exptime_s", "exptime [s]", ".1f"),
            ("sky_e", "sky [e-]", ".1f"), ("cr_fraction", "CR fraction", ".4f"),
            ("cte_trap_density", "CTE traps/px", ".3f"), ("pctecorr", "PCTECORR", "")]))

        warnings = record.get("warnings") or []
        sections.insert(0, "<h2>Warnings</h2>" + (
            "<ul>" + "".join(f"<li>{html.escape(str(w))}</li>" for w in warnings) + "</ul>"
            if warnings else "<p>none</p>"))

        references = record.get("references") or {}
        digests = record.get("reference_sha256") or {}
        names = sorted({(k, n) for refs in references.values() for k, n in refs.items() if n})
        if names:
            crds = record.get("crds") or {}
            sections.append(
                "<h2>References</h2><p>CRDS context: "
                f"{html.escape(str(crds.get('context') or 'not pinned (CRDS_CONTEXT unset)'))}"
                ".</p>" + _table([{"keyword": k, "file": n, "sha256": digests.get(n, "")}
                                  for k, n in names],
                                 [("keyword", "keyword", ""), ("file", "file", ""),
                                  ("sha256", "SHA-256", "")]))

        versions = ", ".join(f"{k} {v}" for k, v in record.get("software", {}).items())
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in record.get("timings_s", {}).items())
        head = (f"<h1>hstred report: {html.escape(outname)}</h1>"
                f"<p>{len(calibrated)} exposures; {html.escape(record.get('execution', ''))}; "
                f"{html.escape(timings)}.</p><p style='font-size:12px'>{html.escape(versions)}"
                "</p>")
        page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>hstred "
                f"{html.escape(outname)}</title><style>{_STYLE}</style></head><body>"
                f"{head}{''.join(sections)}</body></html>")
        (staging / final_html.name).write_text(page)
        if final_files.exists():
            shutil.rmtree(final_files)
        files.rename(final_files)
        (staging / final_html.name).replace(final_html)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final_html
