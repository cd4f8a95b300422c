import sys

from agent.desktops.miniwob.cli import main

sys.exit(main())
