import sys

from metagrad.cli import main

sys.exit(main())
