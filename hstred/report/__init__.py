"""The QA report: ``DIR/OUTNAME_report.html`` with PNG figures."""

from hstred.report.build import write_report

__all__ = ["write_report"]
