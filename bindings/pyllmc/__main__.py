"""`python -m pyllmc ...` is the same as the `pyllmc` command."""

import sys

from .cli import main

sys.exit(main())
