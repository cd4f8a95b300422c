import sys

from agent.miniwob.cli import main

sys.exit(main())
