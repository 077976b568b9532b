import sys

from deepsynth.cli import main

sys.exit(main())
