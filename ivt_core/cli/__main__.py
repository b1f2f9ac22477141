import sys

from ivt_core.cli.main import main

sys.exit(main())
