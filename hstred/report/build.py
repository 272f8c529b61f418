"""Assemble ``DIR/OUTNAME_report.html`` from the run record and the products only."""

from __future__ import annotations

import html
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits

from hstred.drizzle.tileset import image_section
from hstred.naming import report_files_dir, report_path
from hstred.report import figures

__all__ = ["write_report"]

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


def _downsampled(paths: list[Path]) -> dict[Path, np.ndarray]:
    """Preview-sized block means of product images (FITS or tiled), two at a time.

    The products are read a few rows at a time through astropy's sections of files opened
    without memory maps (plain reads; :func:`~hstred.drizzle.tileset.image_section`): a
    memory map would leave every page read mapped into this process (a 3 x 3 mosaic's
    report: 5.6 GB resident, 0.55 GB without). numpy's copies and sums release the GIL,
    so two threads keep two cores busy.
    """
    def load(path: Path) -> np.ndarray:
        with image_section(path) as section:
            return figures.downsample(section)

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


def _satellites_section(data_dir: Path, searches: list[dict], files: Path, link: str,
                        mode: str) -> str:
    """Satellite trails: each one found (end points, width, significance) and a preview of
    every exposure crossed, with the trails drawn over it."""
    if mode == "off":
        return ("<h2>Satellite trails</h2><p>Not searched (--satellites off): trails, if "
                "any, are in the products.</p>")
    rows, figs = [], []
    for search in searches:
        for t in search["trails"]:
            rows.append({"rootname": search["rootname"], **t,
                         "ends": f"({t['x0']:.0f}, {t['y0']:.0f}) - ({t['x1']:.0f}, "
                                 f"{t['y1']:.0f})",
                         "snr": "saturated" if t["snr"] is None else f"{t['snr']:.0f}"})
        path = search.get("path")
        if not search["trails"] or not path:
            continue
        source = data_dir / path
        if not source.is_file():
            continue
        with fits.open(source) as hdul:
            chips = {int(h.header.get("EXTVER", 1)): np.asarray(h.data, dtype=np.float32)
                     for h in hdul if h.name == "SCI" and h.data is not None}
        name = f"trails_{search['rootname']}.png"
        figures.plot_trails(chips, search["trails"], files / name,
                            title=f"{search['rootname']}: {len(search['trails'])} trail(s), "
                                  f"{100 * search['masked_fraction']:.2f}% of pixels masked")
        figs.append(f"<figure><img src='{link}/{name}'></figure>")
    crossed = len({r["rootname"] for r in rows})
    text = (f"<p>{len(rows)} trail(s) in {crossed} of {len(searches)} exposures, masked "
            "(DQ 16384) before drizzling. End points are pixels of the exposure's SCI "
            "extension (EXTVER).</p>")
    table = _table(rows, [("rootname", "exposure", ""), ("extver", "EXTVER", "d"),
                          ("ends", "end points [px]", ""), ("fwhm_px", "FWHM [px]", ".1f"),
                          ("peak_e", "peak [e-]", ".0f"), ("snr", "S/N", ""),
                          ("persistence", "persistence", ".2f"),
                          ("masked_pixels", "masked px", "d")]) if rows else ""
    return "<h2>Satellite trails</h2>" + text + table + (
        "<div class='grid'>" + "".join(figs) + "</div>" if figs else "")


def _noise_section(products: list[dict], files: Path, link: str) -> str:
    """Blank-sky noise of each product against its RMS image (``_drz_rms.fits``)."""
    if not any(p.get("rms") for p in products):
        return "<h2>Noise</h2><p>No RMS images were made (--no-rms).</p>"
    rows = []
    for p in products:
        noise = p.get("noise") or {}
        measured = noise.get("blank_sky") or {}
        factors = noise.get("correlation") or {}
        for n in sorted(measured, key=int):
            rows.append({"filter": p["filter"], "n": int(n), "ratio": measured[n],
                         "factor": 1.0 if int(n) == 1 else factors.get(n)})
    if not rows:
        return ("<h2>Noise</h2><p>No blank-sky measurement: too little blank sky in the "
                "window checked.</p>")
    figures.plot_noise_check(products, files / "noise.png")
    r = {p["filter"]: (p.get("noise") or {}).get("casertano_r") for p in products}
    return ("<h2>Noise</h2><p>Each product's <code>_drz_rms.fits</code> is the noise of each "
            "science pixel (the calibrated exposures' variance drizzled with the science's "
            "weights squared). The noise of the mean of n x n pixels is sqrt(mean RMS^2)/n "
            "times the factor RMSCORn in its header (drizzling correlates neighbouring "
            "pixels; Casertano's large-area R: "
            + ", ".join(f"{html.escape(f)} {v:.3f}" for f, v in r.items() if v is not None)
            + "). Below, the noise measured in the blank sky of a 2048 x 2048 window over "
            "that prediction: 1 when the RMS image describes the noise.</p>"
            f"<img src='{link}/noise.png'>"
            + _table(rows, [("filter", "filter", ""), ("n", "block side", "d"),
                            ("factor", "RMSCORn", ".3f"),
                            ("ratio", "measured / predicted", ".3f")]))


def write_report(data_dir: Path, outname: str, record: dict) -> Path:
    """Write ``DIR/OUTNAME_report.html`` (+ ``OUTNAME_report_files/*.png``) atomically."""
    data_dir = Path(data_dir)
    final_html = report_path(data_dir, outname)
    final_files = report_files_dir(data_dir, outname)
    staging = Path(tempfile.mkdtemp(prefix=f".{outname}-report-", dir=data_dir))
    try:
        files = staging / final_files.name
        files.mkdir()
        sections = []
        drz = record["drizzle"]
        scale = float(record["config"]["drizzle"]["pixel_scale_arcsec"])
        previews = []
        # product paths are relative to the data directory (absolute when outside it)
        small = _downsampled([data_dir / p[k] for p in drz["products"] for k in ("sci", "wht")])
        for product in drz["products"]:
            filt = product["filter"]
            figures.plot_image(small[data_dir / product["sci"]], files / f"{filt}_sci.png",
                               title=f"{outname} {filt} science", label="electrons / s")
            figures.plot_image(small[data_dir / product["wht"]], files / f"{filt}_wht.png",
                               title=f"{outname} {filt} weight", label="weight",
                               stretch="linear")
            previews.append(
                f"<h3>{html.escape(filt)}</h3><p>{len(product['exposures'])} exposures, "
                f"{product['exptime_s']:.0f} s; {html.escape(Path(product['sci']).name)}</p>"
                f"<div class='grid'><figure><img src='{final_files.name}/{filt}_sci.png'></figure>"
                f"<figure><img src='{final_files.name}/{filt}_wht.png'></figure></div>")
        sections.append("<h2>Products</h2>" + "".join(previews))
        sections.append(_noise_section(drz["products"], files, final_files.name))

        solutions = drz.get("solutions", [])
        if solutions:
            figures.plot_alignment(solutions, files / "alignment.png", pixel_scale_arcsec=scale)
            # The reference group defines the frame: it has no matches of its own.
            rows = [{**s, "n_matches": None} if s["status"] == "REFERENCE" else s
                    for s in solutions]
            vectors = []
            for s in solutions:
                if not s.get("residuals", {}).get("dx_mas"):
                    continue
                name = f"residuals_{s['visit']}_{s['filter']}.png"
                figures.plot_catalog_residuals(
                    s["residuals"], files / name,
                    title=f"visit {s['visit']} {s['filter']} against the reference "
                          f"{drz.get('reference', '')} (corrected - reference source)")
                vectors.append(f"<figure><img src='{final_files.name}/{name}'></figure>")
            sections.append(
                "<h2>Alignment</h2>"
                f"<p>Reference: {html.escape(str(drz.get('reference', '')))}. Dropped: "
                f"{html.escape(', '.join(drz.get('dropped', [])) or 'none')}.</p>"
                f"<img src='{final_files.name}/alignment.png'>" + _table(rows, [
                    ("visit", "visit", ""), ("filter", "filter", ""), ("status", "status", ""),
                    ("shift_x_arcsec", "shift E [\"]", ".4f"),
                    ("shift_y_arcsec", "shift N [\"]", ".4f"),
                    ("rotation_deg", "rotation [deg]", ".5f"), ("scale", "scale", ".6f"),
                    ("n_matches", "matches", "d"), ("rms_arcsec", "RMS [\"]", ".4f")])
                + ("<p>Residuals of each aligned visit's matched sources across the field."
                   "</p>" + "".join(vectors) if vectors else ""))

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

        mode = (record.get("config", {}).get("drizzle") or {}).get("satellites")
        if mode:
            sections.append(_satellites_section(data_dir, drz.get("satellites") or [], files,
                                                final_files.name, mode))

        profile = record.get("cte_profile")
        if profile:
            figures.plot_cte_profile(np.asarray(profile["offsets"]),
                                     np.asarray(profile["trailed"]),
                                     np.asarray(profile["corrected"]),
                                     files / "cte_profile.png",
                                     title="CTE trail through a bright star")
            sections.append(f"<h2>CTE correction</h2><p>{html.escape(profile['description'])}. "
                            "The trailed curve is not the raw exposure: it is the arCTIc "
                            "model's readout applied to the corrected image, i.e. the trail "
                            "the correction removed.</p>"
                            f"<img src='{final_files.name}/cte_profile.png'>")

        rows = record.get("exposures", [])
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
                f"<p>{len(rows)} exposures; {html.escape(record.get('execution', ''))}; "
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
