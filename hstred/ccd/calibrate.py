"""Per-exposure CCD calibration of ACS/WFC raw files (what calacs's ACSCCD + ACS2D do).

The pipeline is two readable lists of steps:

* :data:`CCD_STEPS` (:func:`ccd_stage`) works on the raw frame: DQ initialisation,
  bias image, conversion to electrons, bias level and stripes, DARKTIME, full-well
  saturation, the error array, sink pixels, and the overscan trim;
* :data:`TWO_D_STEPS` (:func:`two_d_stage`) works on trimmed electron images: dark,
  post-flash, flat field, photometry keywords and statistics.

Pixel-based CTE correction, when wanted, runs between them on each amplifier
quadrant (:func:`apply_cte`). Each step returns new :class:`ChipData` records and
an outcome; :func:`_record_outcome` is the one place that writes a switch keyword
(COMPLETE / SKIPPED) and HISTORY lines into the primary header.

Header keywords written
-----------------------
Primary: calibration switches (EXPSCORR = COMPLETE once ACS2D has run), ATODGNA-D,
READNSEA-D, CCDBIASA-D (from CCDTAB), BIASLEVA-D (the levels BLEVCORR removed, e-),
DARKTIME (with the CCDTAB overhead), PCTECORR and, after CTE correction,
CTEMODEL, CTEDATE, CTE_NIT, CTEEXPR, CTETRAPD, CTEFWELL, CTEWFPOW, ARCTICV and,
for the default CTE setting, its measured accuracy (CTEACRMS, CTEACFLX, CTEACCEN);
FILENAME, NEXTEND, HSTREDV; HISTORY lines per step.
SCI: BUNIT, LTV1/LTV2 = 0, CRPIX shifted by the trim, SIZAXIS1/2, MEANBLEV,
MEANDARK, MEANFLSH (flashed data), PHOTMODE, PHOTFLAM, PHOTZPT, PHOTPLAM, PHOTBW,
NGOODPIX, GOODMIN/MAX/MEAN, SNRMIN/MAX/MEAN, EXPNAME.
ERR: BUNIT, NGOODPIX, GOODMIN/MAX/MEAN of the errors. DQ: BUNIT = 'UNITLESS'.
ERR and DQ also receive the SCI WCS keywords they lack.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from hstred._version import __version__
from hstred.acs import CHIP_NX, CHIP_NY, RAW_NX, RAW_NY, SM4_MJD, Quadrant, quadrants
from hstred.ccd import steps
from hstred.ccd.chipdata import UNITS_DN, UNITS_ELECTRONS, ChipData
from hstred.ccd.reffiles import (
    AMP_LETTERS,
    CCDParameters,
    OverscanParameters,
    read_bad_pixel_rows,
    read_ccd_parameters,
    read_overscan_parameters,
    read_photometry,
    read_reference_image,
)
from hstred.errors import InputError, ReferenceFileError, StageError
from hstred.fileio import atomic_path

__all__ = [
    "CCD_STEPS",
    "TWO_D_STEPS",
    "CTEFunction",
    "CTE_CARDS",
    "ExposureInfo",
    "apply_cte",
    "calibrate_exposure",
    "calibrated_name",
    "ccd_stage",
    "record_cte_correction",
    "two_d_stage",
    "write_calibrated",
]

log = logging.getLogger(__name__)

#: ``cte(quad_sci_e, quad, expstart_mjd, read_noise_e) -> corrected quad_sci_e`` on one
#: amplifier quadrant of a trimmed, bias-free electron image, in detector orientation;
#: ``read_noise_e`` is the quadrant's amplifier read noise (READNSEx).
CTEFunction = Callable[[np.ndarray, Quadrant, float, float], np.ndarray]

COMPLETE, SKIPPED, OMIT, PERFORM = "COMPLETE", "SKIPPED", "OMIT", "PERFORM"


# ---------------------------------------------------------------------------- exposure info


@dataclass(frozen=True)
class ExposureInfo:
    """Primary-header values that steer calibration (hstcal ``getacskeys.c``)."""

    rootname: str
    detector: str
    ccdamp: str
    ccdgain: float
    ccdofst: tuple[int, int, int, int]
    binaxis: tuple[int, int]
    expstart_mjd: float
    exptime_s: float
    darktime_s: float | None
    flashdur_s: float
    flashsta: str
    jwrotype: str
    filter1: str
    filter2: str
    targname: str
    obstype: str
    lrfwave: float
    subarray: bool

    @classmethod
    def from_header(cls, header: fits.Header, path: Path) -> ExposureInfo:
        missing = [k for k in ("ROOTNAME", "DETECTOR", "EXPSTART", "EXPTIME", "CCDAMP")
                   if k not in header]
        if missing:
            raise InputError(f"{path} lacks primary keywords {', '.join(missing)}; "
                             "use an ACS raw file")
        return cls(
            rootname=str(header["ROOTNAME"]).strip().lower(),
            detector=str(header["DETECTOR"]).strip().upper(),
            ccdamp=str(header["CCDAMP"]).strip().upper(),
            ccdgain=float(header.get("CCDGAIN", 1.0)),
            ccdofst=tuple(int(header.get(f"CCDOFST{a}", 3)) for a in AMP_LETTERS),
            binaxis=(int(header.get("BINAXIS1", 1)), int(header.get("BINAXIS2", 1))),
            expstart_mjd=float(header["EXPSTART"]),
            exptime_s=float(header["EXPTIME"]),
            darktime_s=float(header["DARKTIME"]) if "DARKTIME" in header else None,
            flashdur_s=float(header.get("FLASHDUR", 0.0)),
            flashsta=str(header.get("FLASHSTA", "")).strip().upper(),
            jwrotype=str(header.get("JWROTYPE", "")).strip().upper(),
            filter1=str(header.get("FILTER1", "")),
            filter2=str(header.get("FILTER2", "")),
            targname=str(header.get("TARGNAME", "")).strip().upper(),
            obstype=str(header.get("OBSTYPE", "")),
            lrfwave=float(header.get("LRFWAVE", -1.0)),
            subarray=bool(header.get("SUBARRAY", False)),
        )

    @property
    def post_flashed(self) -> bool:
        """calacs counts an exposure as post-flashed when FLASHDUR > 0 and FLASHSTA is
        SUCCESSFUL (hstcal ``computeDarktime``)."""
        return self.flashdur_s > 0 and self.flashsta == "SUCCESSFUL"


# ---------------------------------------------------------------------------- step machinery


@dataclass(frozen=True)
class _Outcome:
    """Result of one step: its switch status (None = no switch) and HISTORY lines."""

    status: str | None = None
    history: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Context:
    info: ExposureInfo
    references: Mapping[str, Path | None]
    ccdpars: Mapping[int, CCDParameters] = field(default_factory=dict)
    oscnpars: Mapping[int, OverscanParameters] = field(default_factory=dict)
    raw_path: Path | None = None

    def reference(self, keyword: str) -> Path | None:
        value = self.references.get(keyword)
        return None if value is None else Path(value)


StepFunction = Callable[[list[ChipData], _Context], tuple[list[ChipData], _Outcome]]


@dataclass(frozen=True)
class Step:
    """One calibration step: its switch keyword (None when it always runs)."""

    name: str
    switch: str | None
    run: StepFunction


def _switch(primary: fits.Header, keyword: str) -> str:
    return str(primary.get(keyword, OMIT)).strip().upper()


def _record_outcome(primary: fits.Header, step: Step, outcome: _Outcome) -> None:
    """The one place where switches and HISTORY lines are written."""
    if step.switch is not None and outcome.status is not None:
        primary[step.switch] = outcome.status
    for line in outcome.history:
        primary.add_history(line)


def _run_steps(pending: list[ChipData], primary: fits.Header, ctx: _Context,
               step_list: Sequence[Step]) -> list[ChipData]:
    """Run ``step_list`` in order. Consumes ``pending`` (emptied), so that each step's
    input arrays are freed as soon as the step has returned new ones."""
    chips = list(pending)
    pending.clear()
    for step in step_list:
        if step.switch is not None and _switch(primary, step.switch) != PERFORM:
            log.debug("%s: %s is %s, step skipped", ctx.info.rootname, step.switch,
                      _switch(primary, step.switch))
            continue
        t0 = time.perf_counter()
        chips, outcome = step.run(chips, ctx)
        seconds = time.perf_counter() - t0
        _record_outcome(primary, step, outcome)
        log.info("%s: %s %s (%.2f s)", ctx.info.rootname, step.name, outcome.status or "done",
                 seconds, extra={"step_name": step.name, "step_seconds": seconds})
    return [c.replace(primary=primary) for c in chips]


def _sdqflags(chip: ChipData) -> int:
    return int(chip.header.get("SDQFLAGS", 0xFFFF)) & 0xFFFF


def _layout(chip: ChipData, ccd: CCDParameters) -> steps.SerialLayout:
    """Amplifier boundary in this array: AMPX (trimmed frame) + LTV1, capped at the width."""
    offset = max(int(chip.header.get("LTV1", 0)), 0)
    boundary = ccd.ampx + offset if ccd.ampx else 0
    nx = chip.shape[1]
    if boundary >= nx - offset or boundary > nx:
        boundary = nx
    return steps.SerialLayout(boundary_col=boundary)


def _amps(chip: ChipData) -> tuple[str, str]:
    left, right = (q.amp for q in quadrants(chip.chip))
    return left, right


# ---------------------------------------------------------------------------- ACSCCD steps


def _dqicorr(chips, ctx):
    path = ctx.reference("BPIXTAB")
    out = []
    for chip in chips:
        ccd = ctx.ccdpars[chip.chip]
        dq = steps.flag_atod_saturation(chip.sci, chip.dq, atodsat_dn=ccd.atodsat_dn)
        if path is not None:
            rows = read_bad_pixel_rows(path, ccdamp=ctx.info.ccdamp, chip=chip.chip,
                                       ccdgain=ctx.info.ccdgain)
            if not rows:
                log.warning("%s: no BPIXTAB row applies to chip %d", ctx.info.rootname, chip.chip)
            dq = steps.flag_bad_pixels(dq, rows, ltv=(chip.header.get("LTV1", 0),
                                                      chip.header.get("LTV2", 0)))
        out.append(chip.replace(dq=dq))
    if path is None:
        return out, _Outcome(SKIPPED, ("DQICORR: BPIXTAB is N/A; only A-to-D saturation",))
    return out, _Outcome(COMPLETE, (f"DQICORR complete: BPIXTAB={path.name}",))


def _biascorr(chips, ctx):
    path = ctx.reference("BIASFILE")
    if path is None:
        return chips, _Outcome(SKIPPED, ("BIASCORR skipped: BIASFILE is N/A",))
    out = []
    for chip in chips:
        ref = read_reference_image(path, chip.chip, what="BIASFILE")
        ltv = (chip.header.get("LTV1", 0.0), chip.header.get("LTV2", 0.0))
        try:
            cut = [steps.cut_reference(a, ref_ltv=ref.ltv, target_shape=chip.shape,
                                       target_ltv=ltv) for a in (ref.sci, ref.err, ref.dq)]
        except ValueError as err:
            raise ReferenceFileError(f"BIASFILE {path}: {err}; use a full-frame bias") from err
        sci, err_, dq = steps.subtract_bias_image(chip.sci, chip.err, chip.dq, *cut)
        out.append(chip.replace(sci=sci, err=err_, dq=dq))
    return out, _Outcome(COMPLETE, (f"BIASCORR complete: BIASFILE={path.name}",))


def _to_electrons(chips, ctx):
    out = []
    for chip in chips:
        ccd = ctx.ccdpars[chip.chip]
        left, right = _amps(chip)
        sci, err = steps.convert_to_electrons(
            chip.sci, chip.err, gain_left_e_per_dn=ccd.gain_e_per_dn[left],
            gain_right_e_per_dn=ccd.gain_e_per_dn[right], layout=_layout(chip, ccd))
        header = chip.header.copy()
        header["BUNIT"] = UNITS_ELECTRONS
        err_header = chip.err_header.copy()
        err_header["BUNIT"] = UNITS_ELECTRONS
        out.append(chip.replace(sci=sci, err=err, units=UNITS_ELECTRONS, header=header,
                                err_header=err_header))
    return out, _Outcome(history=("Converted to electrons with ATODGN per amplifier",))


def _chip_by_number(chips: Sequence[ChipData], number: int) -> ChipData:
    for chip in chips:
        if chip.chip == number:
            return chip
    raise InputError(f"the raw file has no imset with CCDCHIP={number}; use a full-frame "
                     "ACS/WFC raw file")


def _blevcorr(chips, ctx):
    if ctx.info.expstart_mjd >= SM4_MJD:
        return _blevcorr_post_sm4(chips, ctx)
    return _blevcorr_pre_sm4(chips, ctx)


def _blevcorr_post_sm4(chips, ctx):
    history = []
    shift_levels: dict[str, float] = {}
    amps: dict[str, np.ndarray] = {}
    for number in (1, 2):
        amps.update(steps.split_amplifiers(_chip_by_number(chips, number).sci, number))
    sci_by_chip = {c.chip: c.sci for c in chips}
    if ctx.info.jwrotype == "DS_INT" and ctx.info.ccdgain == 2:
        amps, shift_levels = steps.correct_bias_shift(amps)
        history.append("BLEVCORR: bias-shift correction (DS_INT, gain 2)")
        history += [f"BLEVCORR: fat-zero level amp {a}: {v:.3f} e-"
                    for a, v in sorted(shift_levels.items())]
        for number in (1, 2):
            left, right = (q.amp for q in quadrants(number))
            merged = steps.merge_amplifiers({left: amps[left], right: amps[right]}, number)
            sci_by_chip[number] = steps.correct_cross_talk(merged)
        history.append("BLEVCORR: amplifier cross-talk correction applied")
        amps = {}
        for number in (1, 2):
            amps.update(steps.split_amplifiers(sci_by_chip[number], number))
    corrected, result = steps.subtract_bias_level_post_sm4(amps)
    _write_bias_levels(chips[0].primary, {a: result.levels_e[a] + shift_levels.get(a, 0.0)
                                          for a in result.levels_e})
    out = []
    for chip in chips:
        left, right = _amps(chip)
        sci = steps.merge_amplifiers({left: corrected[left], right: corrected[right]}, chip.chip)
        meanblev = result.meanblev(left + right)
        out.append(chip.replace(sci=sci).with_keywords(
            MEANBLEV=(meanblev, "mean of bias levels subtracted in electrons")))
    history.append("BLEVCORR complete: post-SM4 prescan bias level")
    history += [f"BLEVCORR: bias level amp {a}: {v:.3f} e-"
                for a, v in sorted(result.levels_e.items())]
    history.append(f"DESTRIPE: number of rows fixed per amp: {result.rows_fixed}")
    history.append(f"DESTRIPE: number of rows skipped per amp: {result.rows_skipped}")
    return out, _Outcome(COMPLETE, tuple(history))


def _write_bias_levels(primary: fits.Header, levels_e: Mapping[str, float]) -> None:
    # As calacs: BIASLEV[A-D] hold the whole level BLEVCORR removed from each amplifier
    # (bias-shift fat zero plus prescan level), in electrons, since the data were
    # converted to electrons before BLEVCORR (hstcal blev_funcs_postsm4.c, doblev.c).
    for amp in AMP_LETTERS:
        if amp in levels_e:
            primary[f"BIASLEV{amp}"] = (float(levels_e[amp]),
                                        f"mean of bias levels subtracted, amp {amp} (e-)")


def _default_bias_e(ctx: _Context, chip: ChipData) -> float:
    # calacs's fallback level: CCDBIAS x ATODGN of the first amplifier named in CCDAMP,
    # shifted to C for WFC2 (hstcal doBlev/selectBias).
    index = AMP_LETTERS.index(ctx.info.ccdamp[0])
    if len(ctx.info.ccdamp) > 1 and chip.chip == 2:
        index += 2
    amp = AMP_LETTERS[index]
    ccd = ctx.ccdpars[chip.chip]
    return ccd.bias_dn[amp] * ccd.gain_e_per_dn[amp]


def _blevcorr_pre_sm4(chips, ctx):
    out, history, levels = [], [], {}
    for chip in chips:
        ccd = ctx.ccdpars[chip.chip]
        left, right = _amps(chip)
        sci, result = steps.subtract_bias_level_pre_sm4(
            chip.sci, chip.dq, overscan=ctx.oscnpars[chip.chip], ampx=ccd.ampx,
            readnoise_e=(ccd.readnoise_e[left], ccd.readnoise_e[right]),
            default_bias_e=_default_bias_e(ctx, chip), sdqflags=_sdqflags(chip))
        out.append(chip.replace(sci=sci).with_keywords(
            MEANBLEV=(result.meanblev, "mean of bias levels subtracted in electrons")))
        levels.update(zip((left, right), result.levels_e, strict=True))
        history += [f"BLEVCORR: bias level amp {a}: {v:.3f} e-"
                    for a, v in zip((left, right), result.levels_e, strict=True)]
        if result.drift_corrected:
            history.append(f"BLEVCORR: chip {chip.chip} drift from virtual overscan")
    _write_bias_levels(chips[0].primary, levels)
    return out, _Outcome(COMPLETE, ("BLEVCORR complete: pre-SM4 overscan fit", *history))


def _darktime(chips, ctx):
    primary = chips[0].primary
    history = []
    darktime_s = ctx.info.darktime_s
    if darktime_s is None:
        # Raw files as first archived before 2007 may lack DARKTIME. calacs then reads 0
        # and scales the dark by nothing; before it read the keyword it scaled the dark by
        # EXPTIME + FLASHDUR (hstcal acs2d/dodark.c), which is what is done here.
        darktime_s = ctx.info.exptime_s + ctx.info.flashdur_s
        log.warning("%s: no DARKTIME in the primary header; EXPTIME + FLASHDUR = %g s used",
                    ctx.info.rootname, darktime_s)
        history.append(f"DARKTIME missing: EXPTIME + FLASHDUR = {darktime_s:g} s used")
    ccd = ctx.ccdpars[chips[0].chip]
    darktime = steps.compute_darktime(
        darktime_s, expstart_mjd=ctx.info.expstart_mjd, flashed=ctx.info.post_flashed,
        overhead_flashed_s=ccd.overhead_flashed_s, overhead_unflashed_s=ccd.overhead_unflashed_s)
    primary["DARKTIME"] = (darktime, "dark time (s) incl. CCDTAB overhead")
    history.append(f"DARKTIME {darktime_s:g} -> {darktime:g} s")
    return chips, _Outcome(history=tuple(history))


def _full_well_saturation(chips, ctx):
    primary = chips[0].primary
    path = ctx.reference("SATUFILE")
    done = (_switch(primary, "BIASCORR") == COMPLETE
            and _switch(primary, "BLEVCORR") == COMPLETE)
    # Raw files as first archived before 2007 have no SATUFILE keyword: calacs then took
    # the full-well level from CCDTAB's SATURATE column, one value per chip.
    from_ccdtab = path is None and "SATUFILE" not in primary
    if not done or (path is None and not from_ccdtab):
        return chips, _Outcome(history=("No full-well saturation flags (needs SATUFILE,",
                                        "BIASCORR and BLEVCORR)"))
    out = []
    for chip in chips:
        if from_ccdtab:
            level = np.float32(ctx.ccdpars[chip.chip].saturate_e)
            saturation = np.broadcast_to(level, chip.shape)
        else:
            ref = read_reference_image(path, chip.chip, what="SATUFILE")
            if ref.sci.shape != chip.shape:
                raise ReferenceFileError(f"SATUFILE {path} chip {chip.chip} is {ref.sci.shape}, "
                                         f"the raw chip {chip.shape}; use a raw-sized SATUFILE")
            saturation = ref.sci
        ltv1 = abs(int(chip.header.get("LTV1", 0)))
        ltv2 = abs(int(chip.header.get("LTV2", 0)))
        osc = ctx.oscnpars[chip.chip]
        ny = chip.shape[0] - osc.trimy[0] - osc.trimy[1]
        nx = chip.shape[1] - osc.trimx[0] - osc.trimx[1]
        region = (slice(ltv2, ltv2 + ny), slice(ltv1, ltv1 + nx))
        dq = steps.flag_full_well_saturation(chip.sci, chip.dq, saturation, region=region)
        out.append(chip.replace(dq=dq))
    if from_ccdtab:
        levels = ", ".join(f"chip {c}: {p.saturate_e:g} e-" for c, p in ctx.ccdpars.items())
        log.warning("%s: no SATUFILE keyword; full well from CCDTAB SATURATE (%s)",
                    ctx.info.rootname, levels)
        return out, _Outcome(history=("Full-well saturation (DQ 256): no SATUFILE keyword;",
                                      f"CCDTAB SATURATE used ({levels})"))
    return out, _Outcome(history=(f"Full-well saturation (DQ 256): SATUFILE={path.name}",))


def _noise(chips, ctx):
    out = []
    for chip in chips:
        ccd = ctx.ccdpars[chip.chip]
        left, right = _amps(chip)
        err = steps.compute_ccd_error(
            chip.sci, chip.err, readnoise_left_e=ccd.readnoise_e[left],
            readnoise_right_e=ccd.readnoise_e[right], layout=_layout(chip, ccd),
            bias_exposure=ctx.info.targname.startswith("BIAS"))
        out.append(chip.replace(err=err))
    return out, _Outcome(history=("ERR initialised: sqrt(max(SCI,0) + READNSE^2 + ERR^2)",))


def _sinkcorr(chips, ctx):
    path = ctx.reference("SNKCFILE")
    if path is None:
        return chips, _Outcome(SKIPPED, ("SINKCORR skipped: SNKCFILE is N/A",))
    out = []
    for chip in chips:
        ref = read_reference_image(path, chip.chip, what="SNKCFILE")
        ltv = (chip.header.get("LTV1", 0.0), chip.header.get("LTV2", 0.0))
        try:
            sink = steps.cut_reference(ref.sci, ref_ltv=ref.ltv, target_shape=chip.shape,
                                       target_ltv=ltv)
        except ValueError as err:
            raise ReferenceFileError(f"SNKCFILE {path}: {err}; use a raw-sized sink map") from err
        # Walk columns away from the amplifiers: WFC1 (A, B) reads out at the top rows.
        readout_at_top = quadrants(chip.chip)[0].flip_y
        dq = steps.flag_sink_pixels(chip.sci, chip.dq, sink, readout_at_top=readout_at_top)
        out.append(chip.replace(dq=dq))
    return out, _Outcome(COMPLETE, (f"SINKCORR complete: SNKCFILE={path.name}",))


_CRPIX_KEY = re.compile(r"^CRPIX([12])([A-Z]?)$")


def _shift_pixel_frame(header: fits.Header, dx: int, dy: int, shape: tuple[int, int]) -> None:
    """Move LTV and every CRPIX (primary and alternate WCSs) by a trim of dx, dy pixels."""
    for key in list(header.keys()):
        m = _CRPIX_KEY.match(key)
        if m:
            header[key] = float(header[key]) - (dx if m.group(1) == "1" else dy)
    for key, shift in (("LTV1", dx), ("LTV2", dy)):
        if key in header:
            header[key] = float(header[key]) - shift
    if "SIZAXIS1" in header or "SIZAXIS2" in header:
        header["SIZAXIS1"] = shape[1]
        header["SIZAXIS2"] = shape[0]


def _trim(chips, ctx):
    out = []
    for chip in chips:
        osc = ctx.oscnpars[chip.chip]
        arrays = [steps.trim_overscan(a, trimx=osc.trimx, trimy=osc.trimy)
                  for a in (chip.sci, chip.err, chip.dq)]
        if arrays[0].shape != (CHIP_NY, CHIP_NX):
            raise ReferenceFileError(f"OSCNTAB trims chip {chip.chip} to {arrays[0].shape}, not "
                                     f"{(CHIP_NY, CHIP_NX)}; use the full-frame OSCNTAB")
        headers = []
        for header in (chip.header, chip.err_header, chip.dq_header):
            header = header.copy()
            _shift_pixel_frame(header, osc.trimx[0], osc.trimy[0], arrays[0].shape)
            headers.append(header)
        headers[0]["SIZAXIS1"] = CHIP_NX
        headers[0]["SIZAXIS2"] = CHIP_NY
        out.append(chip.replace(sci=arrays[0], err=arrays[1], dq=arrays[2], header=headers[0],
                                err_header=headers[1], dq_header=headers[2]))
    return out, _Outcome(history=tuple(
        f"Overscan trimmed, chip {c}: TRIMX {o.trimx[0]},{o.trimx[1]} TRIMY {o.trimy[0]},"
        f"{o.trimy[1]}" for c, o in ctx.oscnpars.items()))


#: ACSCCD, in calacs's order (hstcal ``doccd.c``).
CCD_STEPS: tuple[Step, ...] = (
    Step("data quality initialisation", "DQICORR", _dqicorr),
    Step("bias image subtraction", "BIASCORR", _biascorr),
    Step("conversion to electrons", None, _to_electrons),
    Step("bias level subtraction", "BLEVCORR", _blevcorr),
    Step("dark time", None, _darktime),
    Step("full-well saturation", None, _full_well_saturation),
    Step("error array", None, _noise),
    Step("sink pixels", "SINKCORR", _sinkcorr),
    Step("overscan trim", None, _trim),
)


# ---------------------------------------------------------------------------- ACS2D steps


def _reference_for(chip: ChipData, path: Path, what: str) -> tuple[np.ndarray, ...]:
    ref = read_reference_image(path, chip.chip, what=what)
    ltv = (chip.header.get("LTV1", 0.0), chip.header.get("LTV2", 0.0))
    try:
        return tuple(steps.cut_reference(a, ref_ltv=ref.ltv, target_shape=chip.shape,
                                         target_ltv=ltv) for a in (ref.sci, ref.err, ref.dq))
    except ValueError as err:
        raise ReferenceFileError(f"{what} {path}: {err}; use a full-frame ACS/WFC "
                                 "reference") from err


def _cte_corrected(primary: fits.Header) -> bool:
    return _switch(primary, "PCTECORR") == COMPLETE


def _darkcorr(chips, ctx):
    primary = chips[0].primary
    keyword = "DRKCFILE" if _cte_corrected(primary) else "DARKFILE"
    path = ctx.reference(keyword)
    history = []
    if path is None and keyword == "DRKCFILE" and ctx.reference("DARKFILE") is not None:
        keyword, path = "DARKFILE", ctx.reference("DARKFILE")
        history.append("DARKCORR: DRKCFILE is N/A; DARKFILE used on CTE-corrected data")
    if path is None:
        return chips, _Outcome(SKIPPED, (f"DARKCORR skipped: {keyword} is N/A",))
    darktime = float(primary["DARKTIME"])
    out = []
    for chip in chips:
        sci, err, dq, meandark = steps.subtract_dark(
            chip.sci, chip.err, chip.dq, *_reference_for(chip, path, keyword),
            darktime_s=darktime, sdqflags=_sdqflags(chip))
        out.append(chip.replace(sci=sci, err=err, dq=dq).with_keywords(
            MEANDARK=(meandark, "mean of dark values subtracted")))
    history.append(f"DARKCORR complete: {keyword}={path.name}")
    history.append(f"DARKCORR: dark scaled by DARKTIME {darktime:g} s")
    return out, _Outcome(COMPLETE, tuple(history))


def _flshcorr(chips, ctx):
    info = ctx.info
    if info.flashdur_s <= 0:
        return chips, _Outcome(SKIPPED, ("Post-flash exposure was 0 seconds.",
                                         "FLSHCORR not performed."))
    history = []
    if info.flashsta == "ABORTED":
        history.append("Post-flash STATUS was ABORTED. Post-flash may be compromised.")
    keyword = "FLSHFILE"
    if _cte_corrected(chips[0].primary) and ctx.reference("FLSHCFILE") is not None:
        keyword = "FLSHCFILE"
    path = ctx.reference(keyword)
    if path is None:
        return chips, _Outcome(SKIPPED, (*history, "FLSHCORR skipped: FLSHFILE is N/A"))
    out = []
    for chip in chips:
        sci, err, dq, meanflash = steps.subtract_flash(
            chip.sci, chip.err, chip.dq, *_reference_for(chip, path, keyword),
            flashdur_s=info.flashdur_s, sdqflags=_sdqflags(chip))
        out.append(chip.replace(sci=sci, err=err, dq=dq).with_keywords(
            MEANFLSH=(meanflash, "mean of post-flash values subtracted")))
    history.append(f"FLSHCORR complete: {keyword}={path.name}")
    history.append(f"FLSHCORR: post-flash scaled by FLASHDUR {info.flashdur_s:g} s")
    return out, _Outcome(COMPLETE, tuple(history))


def _flatcorr(chips, ctx):
    flats = [(k, ctx.reference(k)) for k in ("PFLTFILE", "DFLTFILE", "LFLTFILE")]
    flats = [(k, p) for k, p in flats if p is not None]
    if not flats:
        return chips, _Outcome(SKIPPED, ("FLATCORR skipped: PFLTFILE, DFLTFILE, LFLTFILE N/A",))
    out = []
    for chip in chips:
        sci, err, dq = chip.sci, chip.err, chip.dq
        for keyword, path in flats:
            sci, err, dq = steps.divide_flat(sci, err, dq, *_reference_for(chip, path, keyword))
        out.append(chip.replace(sci=sci, err=err, dq=dq))
    names = ", ".join(f"{k}={p.name}" for k, p in flats)
    return out, _Outcome(COMPLETE, (f"FLATCORR complete: {names}",))


def _photmode(ctx: _Context) -> str:
    info = ctx.info
    return steps.build_photmode(detector=info.detector, filter1=info.filter1,
                                filter2=info.filter2, expstart_mjd=info.expstart_mjd,
                                obstype=info.obstype, lrfwave=info.lrfwave)


def _photcorr(chips, ctx):
    photmode = _photmode(ctx)
    path = ctx.reference("IMPHTTAB")
    if path is None:
        return chips, _Outcome(SKIPPED, ("PHOTCORR skipped: IMPHTTAB is N/A",))
    values = read_photometry(path, photmode)
    cards = {"PHOTFLAM": (values.photflam, "inverse sensitivity"),
                 "PHOTZPT": (values.photzpt, "zero point"),
                 "PHOTPLAM": (values.photplam, "pivot wavelength"),
                 "PHOTBW": (values.photbw, "RMS bandwidth")}
    out = [chip.with_keywords(**cards) for chip in chips]
    if values.extrapolated:
        return out, _Outcome(SKIPPED, ("PHOTCORR skipped: EXPSTART outside the MJD range",
                                       f"of IMPHTTAB={path.name}"))
    return out, _Outcome(COMPLETE, (f"PHOTCORR complete: IMPHTTAB={path.name}",
                                    f"PHOTMODE {photmode}"))


def _photmode_keyword(chips, ctx):
    # calacs writes PHOTMODE whatever PHOTCORR says.
    photmode = _photmode(ctx)
    return [c.with_keywords(PHOTMODE=(photmode, "list of components")) for c in chips], _Outcome()


def _statistics(chips, ctx):
    out = []
    for chip in chips:
        stats = steps.compute_statistics(chip.sci, chip.err, chip.dq, sdqflags=_sdqflags(chip))
        header = chip.header.copy()
        err_header = chip.err_header.copy()
        header["NGOODPIX"] = (stats.ngoodpix, "number of good pixels")
        err_header["NGOODPIX"] = (stats.ngoodpix, "number of good pixels")
        if stats.ngoodpix:
            header["GOODMIN"] = (stats.goodmin, "minimum good data value")
            header["GOODMAX"] = (stats.goodmax, "maximum good data value")
            header["GOODMEAN"] = (stats.goodmean, "average of good data values")
            header["SNRMIN"] = (stats.snrmin, "minimum S/N of good data values")
            header["SNRMAX"] = (stats.snrmax, "maximum S/N of good data values")
            header["SNRMEAN"] = (stats.snrmean, "mean S/N of good data values")
            err_header["GOODMIN"] = (stats.errmin, "minimum sigma for good data")
            err_header["GOODMAX"] = (stats.errmax, "maximum sigma for good data")
            err_header["GOODMEAN"] = (stats.errmean, "average of sigma for good data")
        out.append(chip.replace(header=header, err_header=err_header))
    return out, _Outcome()


def _expscorr(chips, ctx):
    # EXPSCORR asks for each exposure to be calibrated on its own (an FLT per exposure,
    # besides any cosmic-ray combined product); calacs marks it done when ACS2D has run.
    return chips, _Outcome(COMPLETE, ("EXPSCORR complete: individual exposure calibrated",))


#: ACS2D, in calacs's order (hstcal ``do2d.c``).
TWO_D_STEPS: tuple[Step, ...] = (
    Step("dark subtraction", "DARKCORR", _darkcorr),
    Step("post-flash subtraction", "FLSHCORR", _flshcorr),
    Step("flat field", "FLATCORR", _flatcorr),
    Step("photometry mode", None, _photmode_keyword),
    Step("photometry keywords", "PHOTCORR", _photcorr),
    Step("statistics", None, _statistics),
    Step("individual exposure", "EXPSCORR", _expscorr),
)


# ---------------------------------------------------------------------------- I/O and stages


def _check_references(references: Mapping[str, Path | None], required: Sequence[str]) -> None:
    for keyword in required:
        if references.get(keyword) is None:
            raise ReferenceFileError(f"{keyword} is required for ACS/WFC calibration but is "
                                     "N/A; resolve the reference files first")
    for keyword, path in references.items():
        if path is not None and not Path(path).is_file():
            raise ReferenceFileError(f"{keyword} {path} does not exist; resolve the reference "
                                     "files again")


def _read_raw(raw_path: Path) -> tuple[fits.Header, list[ChipData]]:
    raw_path = Path(raw_path)
    if not raw_path.is_file():
        raise InputError(f"raw file {raw_path} does not exist; check the path")
    try:
        hdul = fits.open(raw_path, mode="readonly", memmap=False)
    except OSError as err:
        raise InputError(f"{raw_path} is not a readable FITS file ({err}); download it "
                         "again") from err
    with hdul:
        primary = hdul[0].header.copy()
        chips = []
        for hdu in hdul[1:]:
            if hdu.name != "SCI":
                continue
            extver = hdu.header.get("EXTVER", 1)
            if hdu.data is None:
                raise InputError(f"{raw_path} SCI,{extver} is empty; use a complete raw file")
            sci = np.asarray(hdu.data, dtype=np.float32).copy()
            headers, arrays = {}, {}
            for name, dtype in (("ERR", np.float32), ("DQ", np.int16)):
                try:
                    ext = hdul[name, extver]
                except KeyError:
                    headers[name] = fits.Header([("EXTNAME", name), ("EXTVER", extver)])
                    arrays[name] = np.zeros(sci.shape, dtype)
                    continue
                headers[name] = ext.header.copy()
                if ext.data is None:
                    arrays[name] = np.full(sci.shape, ext.header.get("PIXVALUE", 0), dtype)
                else:
                    arrays[name] = np.asarray(ext.data, dtype=dtype).copy()
            chips.append(ChipData(sci=sci, err=arrays["ERR"], dq=arrays["DQ"], units=UNITS_DN,
                                  header=hdu.header.copy(), primary=primary,
                                  err_header=headers["ERR"], dq_header=headers["DQ"]))
    return primary, chips


def _validate_raw(raw_path: Path, primary: fits.Header, info: ExposureInfo,
                  chips: Sequence[ChipData]) -> None:
    if str(primary.get("INSTRUME", "ACS")).strip().upper() != "ACS" or info.detector != "WFC":
        raise InputError(f"{raw_path} is {primary.get('INSTRUME')}/{info.detector}; only "
                         "ACS/WFC is supported")
    if info.subarray:
        raise InputError(f"{raw_path} is a subarray exposure; only full-frame ACS/WFC is "
                         "supported")
    if info.ccdamp != "ABCD":
        raise InputError(f"{raw_path} was read out with CCDAMP={info.ccdamp}; only four-amplifier "
                         "(ABCD) full frames are supported")
    if sorted(c.chip for c in chips) != [1, 2]:
        raise InputError(f"{raw_path} must hold imsets for CCDCHIP 1 and 2, found "
                         f"{[c.chip for c in chips]}")
    for chip in chips:
        if chip.shape != (RAW_NY, RAW_NX):
            raise InputError(f"{raw_path} chip {chip.chip} is {chip.shape}, not the full-frame "
                             f"{(RAW_NY, RAW_NX)}")
    if _switch(primary, "BLEVCORR") != PERFORM:
        raise InputError(f"{raw_path} has BLEVCORR={_switch(primary, 'BLEVCORR')}; the overscan "
                         "must be removed before trimming: set BLEVCORR=PERFORM")


def _write_ccd_keywords(primary: fits.Header, ccdpars: Mapping[int, CCDParameters]) -> None:
    # Each amplifier's values come from the CCDTAB row of the chip it reads.
    for number, ccd in ccdpars.items():
        for amp in (q.amp for q in quadrants(number)):
            primary[f"ATODGN{amp}"] = (ccd.gain_e_per_dn[amp], f"gain of amp {amp} (e-/DN)")
            primary[f"READNSE{amp}"] = (ccd.readnoise_e[amp], f"read noise of amp {amp} (e-)")
            primary[f"CCDBIAS{amp}"] = (ccd.bias_dn[amp], f"default bias of amp {amp} (DN)")


def ccd_stage(raw_path: Path, references: Mapping[str, Path | None]) -> list[ChipData]:
    """Steps 1-10 (calacs ACSCCD) on a raw full-frame ACS/WFC exposure.

    Returns one :class:`ChipData` per imset, in file order (chip 2 then chip 1):
    trimmed 2048 x 4096 float32 electron images with ERR and DQ; ``primary`` holds
    the updated primary header. The raw file is only read.
    """
    raw_path = Path(raw_path)
    references = dict(references)
    _check_references(references, ("CCDTAB", "OSCNTAB"))
    primary, chips = _read_raw(raw_path)
    info = ExposureInfo.from_header(primary, raw_path)
    _validate_raw(raw_path, primary, info, chips)
    ccdpars = {c.chip: read_ccd_parameters(
        references["CCDTAB"], ccdamp=info.ccdamp, chip=c.chip, ccdgain=info.ccdgain,
        ccdofst=info.ccdofst, binaxis=info.binaxis, raw_nx=c.shape[1]) for c in chips}
    oscnpars = {c.chip: read_overscan_parameters(
        references["OSCNTAB"], ccdamp=info.ccdamp, chip=c.chip, nx=c.shape[1], ny=c.shape[0],
        binning=info.binaxis) for c in chips}
    _write_ccd_keywords(primary, ccdpars)
    chips = [c.replace(primary=primary) for c in chips]
    ctx = _Context(info=info, references=references, ccdpars=ccdpars, oscnpars=oscnpars,
                   raw_path=raw_path)
    return _run_steps(chips, primary, ctx, CCD_STEPS)


def _format_value(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value)
    return str(value)


#: The CTE correction's primary-header cards: (keyword, ``cte_info`` key, comment). The
#: run record copies these keywords (and PCTECORR) per exposure (:mod:`hstred.record`).
CTE_CARDS = (
    ("CTEMODEL", "model", "pixel CTE model"),
    ("CTEDATE", "mjd", "MJD at which the CTE model was evaluated"),
    ("CTE_NIT", "n_iterations", "CTE correction iterations"),
    ("CTEEXPR", "express", "arCTIc express parameter"),
    ("CTETRAPD", "total_trap_density", "total trap density (traps per pixel)"),
    ("CTEFWELL", "full_well_depth", "CTE model full-well depth (e-)"),
    ("CTEWFPOW", "well_fill_power", "CTE model well-fill power"),
    ("ARCTICV", "arcticpy_version", "arcticpy version"),
    ("CTEACRMS", "accuracy_rms_read_noise", "pixel RMS diff from exact model < (read noise)"),
    ("CTEACFLX", "accuracy_flux_fraction", "star flux diff from exact model < (fraction)"),
    ("CTEACCEN", "accuracy_centroid_px", "star centroid diff from exact model < (px)"),
    ("CTERNOIS", "read_noise", "read noise: separate (held out) or amplify"),
    ("CTERNBLK", "noise_block_px", "read-noise sep.: sky block (px)"),
    ("CTERNLOC", "noise_local_px", "read-noise sep.: structure box (px)"),
    ("CTERNSTF", "noise_structure_factor", "read-noise sep.: structure factor"),
    ("CTERNCLP", "noise_clip", "read-noise sep.: clip (read noises)"),
)


def record_cte_correction(chips: Sequence[ChipData],
                          cte_info: Mapping[str, object] | None = None) -> list[ChipData]:
    """Mark chips as pixel-CTE corrected: PCTECORR = COMPLETE plus the model keywords.

    ``cte_info`` keys (all optional) become the :data:`CTE_CARDS`: ``model`` (or
    ``name``) -> CTEMODEL, ``mjd`` -> CTEDATE, ``n_iterations`` -> CTE_NIT, ``express``
    -> CTEEXPR, ``total_trap_density`` (or the sum of ``trap_densities``) -> CTETRAPD,
    ``full_well_depth`` -> CTEFWELL, ``well_fill_power`` -> CTEWFPOW,
    ``arcticpy_version`` -> ARCTICV; the setting's accuracy, as bounds on its measured
    differences from the exact model's correction: ``accuracy_rms_read_noise``
    -> CTEACRMS (pixel RMS, read noises), ``accuracy_flux_fraction`` -> CTEACFLX (star
    flux, fraction), ``accuracy_centroid_px`` -> CTEACCEN (star centroid, pixels); the
    read noise's handling (``read_noise`` -> CTERNOIS) and the separation's parameters
    (``noise_block_px``, ``noise_local_px``, ``noise_structure_factor``, ``noise_clip`` ->
    CTERNBLK, CTERNLOC, CTERNSTF, CTERNCLP; :mod:`hstred.cte.noise`). Every item is also
    written as a HISTORY line.
    """
    primary = chips[0].primary.copy()
    info = dict(cte_info or {})
    values = dict(info)
    values.setdefault("model", info.get("name"))
    if "trap_densities" in info:
        values.setdefault("total_trap_density", sum(info["trap_densities"]))
    for key, name, comment in CTE_CARDS:
        value = values.get(name)
        if value is None:
            continue
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        primary[key] = (value if isinstance(value, (int, float, str, bool)) else str(value),
                        comment)
    step = Step("pixel CTE correction", "PCTECORR", lambda c, x: (c, _Outcome()))
    history = ["PCTECORR complete: parallel pixel-CTE correction per amplifier quadrant"]
    history += [f"PCTECORR {k} = {_format_value(v)}" for k, v in info.items()]
    _record_outcome(primary, step, _Outcome(COMPLETE, tuple(history)))
    return [c.replace(primary=primary) for c in chips]


def apply_cte(chips: Sequence[ChipData], cte: CTEFunction, *,
              cte_info: Mapping[str, object] | None = None) -> list[ChipData]:
    """Run ``cte`` on every amplifier quadrant of trimmed electron chips (serially).

    ``cte(quad_sci, quad, expstart_mjd, read_noise_e)`` gets a float64 copy of the quadrant
    in detector orientation and its amplifier's read noise, and returns the corrected
    quadrant. The chips are then recorded with :func:`record_cte_correction`.
    """
    expstart = float(chips[0].primary["EXPSTART"])
    out = []
    for chip in chips:
        if chip.shape != (CHIP_NY, CHIP_NX) or chip.units != UNITS_ELECTRONS:
            raise StageError("pixel CTE correction needs trimmed electron images; run "
                             "ccd_stage first")
        sci = chip.sci.copy()
        for quad in quadrants(chip.chip):
            keyword = f"READNSE{quad.amp}"
            if keyword not in chip.primary:
                raise StageError(f"pixel CTE correction needs {keyword} (the read noise) in "
                                 "the primary header; run ccd_stage first")
            corrected = np.asarray(cte(chip.sci[quad.flt].astype(np.float64), quad, expstart,
                                       float(chip.primary[keyword])))
            if corrected.shape != sci[quad.flt].shape:
                raise StageError(f"CTE function returned {corrected.shape} for quadrant "
                                 f"{quad.amp}, expected {sci[quad.flt].shape}")
            sci[quad.flt] = corrected
        out.append(chip.replace(sci=sci))
    return record_cte_correction(out, cte_info)


def two_d_stage(chips: Sequence[ChipData], references: Mapping[str, Path | None],
                header: fits.Header | None = None) -> list[ChipData]:
    """Steps 11-15 (calacs ACS2D) on trimmed electron chips from :func:`ccd_stage`.

    ``header`` is the exposure's primary header (default: ``chips[0].primary``).
    When PCTECORR is COMPLETE in it, the CTE-corrected dark (DRKCFILE) is used.
    """
    return _run_two_d(list(chips), references, header)


def _run_two_d(chips: list[ChipData], references: Mapping[str, Path | None],
               header: fits.Header | None) -> list[ChipData]:
    """:func:`two_d_stage` that consumes (empties) ``chips`` to free memory early."""
    primary = (header if header is not None else chips[0].primary).copy()
    if any(c.shape != (CHIP_NY, CHIP_NX) or c.units != UNITS_ELECTRONS for c in chips):
        raise StageError("two_d_stage needs trimmed electron images; run ccd_stage first")
    references = dict(references)
    _check_references(references, ())
    if _switch(primary, "PCTECORR") != COMPLETE:
        step = Step("pixel CTE correction", "PCTECORR", lambda c, x: (c, _Outcome()))
        status = OMIT if _switch(primary, "PCTECORR") == OMIT else SKIPPED
        _record_outcome(primary, step, _Outcome(status, ("PCTECORR: no pixel CTE correction",)))
    info = ExposureInfo.from_header(primary, Path(str(primary.get("FILENAME", "input"))))
    ctx = _Context(info=info, references=references)
    work = [c.replace(primary=primary) for c in chips]
    chips.clear()
    return _run_steps(work, primary, ctx, TWO_D_STEPS)


def calibrated_name(primary: fits.Header) -> str:
    """``<rootname>_flc.fits`` when pixel CTE was corrected, else ``<rootname>_flt.fits``."""
    suffix = "flc" if _switch(primary, "PCTECORR") == COMPLETE else "flt"
    return f"{str(primary['ROOTNAME']).strip().lower()}_{suffix}.fits"


_WCS_KEY = re.compile(r"^(CTYPE|CRPIX|CRVAL|CUNIT|CDELT|CD\d_\d|PC\d_\d|WCSNAME|WCSAXES|LTV|LTM|"
                      r"A_|B_|AP_|BP_|ORIENTAT|RA_APER|DEC_APER|PA_APER|VAFACTOR)")
_EXTENSION_ONLY = ("NPIX1", "NPIX2", "PIXVALUE")


def _extension_header(base: fits.Header, sci: fits.Header, name: str, extver: int,
                      chip: int) -> fits.Header:
    header = base.copy()
    for key in _EXTENSION_ONLY:
        header.remove(key, ignore_missing=True, remove_all=True)
    header["EXTNAME"] = name
    header["EXTVER"] = extver
    header["CCDCHIP"] = chip
    for card in sci.cards:
        if _WCS_KEY.match(card.keyword) and card.keyword not in header:
            header[card.keyword] = (card.value, card.comment)
    return header


def write_calibrated(chips: Sequence[ChipData], out_path: Path, *,
                     header: fits.Header | None = None) -> Path:
    """Write calibrated chips as an FLT/FLC file and return its path.

    ``out_path`` may be a directory (existing, or any path not ending in ``.fits``; the
    file is then named by :func:`calibrated_name`) or a ``.fits`` file name. Layout:
    primary, then SCI (float32, e-), ERR (float32, e-) and DQ (int16) per imset in
    EXTVER order. The file is written to a temporary name in
    the same directory and renamed, so readers never see a partial file.
    """
    primary = (header if header is not None else chips[0].primary).copy()
    out_path = Path(out_path)
    if out_path.is_dir() or out_path.suffix.lower() != ".fits":
        out_path = out_path / calibrated_name(primary)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(chips, key=lambda c: c.extver)
    primary["NEXTEND"] = 3 * len(ordered)
    primary["FILENAME"] = out_path.name
    primary["HSTREDV"] = (__version__, "hstred version")
    hdus = [fits.PrimaryHDU(header=primary)]
    for chip in ordered:
        sci_header = chip.header.copy()
        sci_header["EXTNAME"] = "SCI"
        sci_header["BUNIT"] = chip.units
        if "EXPNAME" not in sci_header:
            sci_header["EXPNAME"] = (str(primary.get("ROOTNAME", "")).strip().lower(),
                                     "exposure identifier")
        err_header = _extension_header(chip.err_header, sci_header, "ERR", chip.extver, chip.chip)
        err_header["BUNIT"] = chip.units
        dq_header = _extension_header(chip.dq_header, sci_header, "DQ", chip.extver, chip.chip)
        dq_header["BUNIT"] = "UNITLESS"
        for h in (sci_header, err_header, dq_header):
            # Raw integer scaling must not be applied to the float/int16 output arrays.
            for key in ("BSCALE", "BZERO"):
                h.remove(key, ignore_missing=True)
        hdus.append(fits.ImageHDU(chip.sci.astype(np.float32, copy=False), header=sci_header))
        hdus.append(fits.ImageHDU(chip.err.astype(np.float32, copy=False), header=err_header))
        hdus.append(fits.ImageHDU(chip.dq.astype(np.int16, copy=False), header=dq_header))
    with atomic_path(out_path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True, output_verify="silentfix")
    return out_path


def calibrate_exposure(raw_path: Path, references: Mapping[str, Path | None], out_path: Path,
                       *, cte: CTEFunction | None = None,
                       cte_info: Mapping[str, object] | None = None) -> Path:
    """Calibrate one raw ACS/WFC exposure to an ``_flt`` (or, with ``cte``, ``_flc``) file.

    Parameters
    ----------
    raw_path
        The ``*_raw.fits`` file (only read).
    references
        Header keyword (BIASFILE, DARKFILE, CCDTAB, ...) -> resolved local path, or
        None for 'N/A'.
    out_path
        Output file, or a directory to write ``<rootname>_flt.fits`` / ``_flc.fits`` in.
    cte
        Optional per-quadrant pixel-CTE correction, e.g.
        :func:`hstred.cte.model.remove_cte_from_quadrant` (or a ``functools.partial`` of
        it with another setting); applied after the overscan trim and before DARKCORR.
    cte_info
        Provenance of ``cte`` for the header (see :func:`record_cte_correction`).
    """
    chips = ccd_stage(raw_path, references)
    if cte is not None:
        chips = apply_cte(chips, cte, cte_info=cte_info)
    return write_calibrated(_run_two_d(chips, references, None), out_path)
