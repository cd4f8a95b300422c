"""``python -m agent.cli``: the same as ``dw``."""

import sys

from agent.cli.main import main

sys.exit(main())
