"""Build plots/offline.html: the page `dvc plots show/diff` fills (.dvc/config plots.html_template), with
Vega, Vega-Lite and Vega-Embed inlined, so the plots render with no network. DVC's own page loads them from
a CDN.

    npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2     # the versions DVC's page asks for
    python plots/make_offline_template.py vega-5.20.2.tgz vega-lite-5.2.0.tgz vega-embed-6.18.2.tgz
"""
from __future__ import annotations

import hashlib
import re
import sys
import tarfile
from pathlib import Path

OUT = Path(__file__).with_name("offline.html")
BUILDS = {"vega": "package/build/vega.min.js", "vega-lite": "package/build/vega-lite.min.js",
          "vega-embed": "package/build/vega-embed.min.js"}


def main(tarballs: list[str]) -> int:
    parts = []
    for path in tarballs:
        name = re.sub(r"-\d.*$", "", Path(path).name)
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        with tarfile.open(path) as t:
            js = t.extractfile(BUILDS[name]).read().decode()
            licence = t.extractfile("package/LICENSE").read().decode()
        js = re.sub(r"//# sourceMappingURL=\S+\s*$", "", js)
        if "</script" in js or "{plot_divs}" in js:
            raise SystemExit(f"{path}: its script cannot be inlined as it is")
        parts.append(f"<!-- {Path(path).name} (npm, sha256 {digest}), licence:\n{licence.replace('--', '- -')}-->\n"
                     f"<script>{js}</script>")
    page = ("<!DOCTYPE html>\n<html>\n<head>\n{refresh_tag}\n<meta charset=\"utf-8\">\n<title>DVC plots</title>\n"
            + "\n".join(parts)
            + "\n<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n")
    OUT.write_text(page)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
