import sys

from ndkd.cli import main

sys.exit(main())
