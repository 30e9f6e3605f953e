"""DVC stage `report`: reports/report.md and the self-contained reports/report.html from results/."""
from __future__ import annotations

import sys
import time

from pipelines.params import ROOT, Params
from pipelines.stage_main import stage_main
from restorevar.report import build_report


def main() -> int:
    started = time.perf_counter()

    def work() -> dict:
        p = Params()
        return build_report(ROOT / "results", ROOT / "reports", p.report.title, p.report.grid_images_per_degradation)

    return stage_main("report", work, lambda out: [
        f"report: wrote {out['markdown'].relative_to(ROOT)} and {out['html'].relative_to(ROOT)} in "
        + f"{time.perf_counter() - started:.1f} s"])


if __name__ == "__main__":
    sys.exit(main())
