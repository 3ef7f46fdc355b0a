"""``python -m efficientdet`` (and ``torchrun -m efficientdet train …``) = the ``efficientdet`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
