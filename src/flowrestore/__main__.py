"""`python -m flowrestore`: the same command line as `flowrestore`."""

import sys

from .cli import main

sys.exit(main())
