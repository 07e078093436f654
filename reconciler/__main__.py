"""python -m reconciler: the same as the reconcile command."""

import sys

from .cli.main import main

sys.exit(main())
