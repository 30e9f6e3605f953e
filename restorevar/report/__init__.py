"""The study's report: tables shaped like the paper's and seaborn figures, as Markdown and self-contained HTML."""
from restorevar.report.build import build_report

__all__ = ["build_report"]
