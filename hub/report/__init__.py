"""The competitive-pricing report: clearing prices vs reserve, and a single-buyer counterfactual."""

from hub.report.analysis import NoReportDataError, ReportData, analyse
from hub.report.inputs import (
    ReportAuction,
    ReportBid,
    ReportInput,
    from_simulation,
    load_report_input,
)
from hub.report.writer import ReportResult, build_report, write_report

__all__ = [
    "NoReportDataError",
    "ReportAuction",
    "ReportBid",
    "ReportData",
    "ReportInput",
    "ReportResult",
    "analyse",
    "build_report",
    "from_simulation",
    "load_report_input",
    "write_report",
]
