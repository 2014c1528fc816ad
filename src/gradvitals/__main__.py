import sys

from gradvitals.cli import main

sys.exit(main())
