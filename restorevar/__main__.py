import sys

from restorevar.cli import main

sys.exit(main())
