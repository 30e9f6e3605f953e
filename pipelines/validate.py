"""Stage 0: validate params.yaml completely, so a typo fails in seconds, naming the key."""
from __future__ import annotations

import sys

from pipelines.params import Params
from restorevar.errors import UserError


def main() -> int:
    try:
        p = Params()
    except UserError as e:
        print(f"params.yaml: error: {e}", file=sys.stderr)
        return 2
    print(f"params.yaml ok: profile {p.profile}, model {p.model.preset}, "
          f"stages {', '.join(f'{k}({len(v.variants)} trial(s))' for k, v in p.stages.items())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
