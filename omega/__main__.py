import sys

from omega.cli.main import main

sys.exit(main())
