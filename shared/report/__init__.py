"""``cotd report``: the paper's analyses (tables, paired tests, plots, recommendations, HTML)."""

from shared.report.build import ReportInputError, build_report, load_results, report_from_dir

__all__ = ["ReportInputError", "build_report", "load_results", "report_from_dir"]
