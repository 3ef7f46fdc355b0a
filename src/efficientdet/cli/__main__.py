"""``python -m efficientdet.cli`` (what ``torchrun -m`` needs)."""

import sys

from . import main

sys.exit(main())
