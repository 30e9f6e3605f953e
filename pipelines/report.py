"""DVC stage `report`: reports/report.md and the self-contained reports/report.html from results/."""
from __future__ import annotations

import sys
import time

from pipelines.params import ROOT, Params
from restorevar.errors import UserError
from restorevar.report import build_report


def main() -> int:
    started = time.perf_counter()
    try:
        p = Params()
        out = build_report(ROOT / "results", ROOT / "reports", p.report.title, p.report.grid_images_per_degradation)
    except UserError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    print(f"report: wrote {out['markdown'].relative_to(ROOT)} and {out['html'].relative_to(ROOT)} "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
