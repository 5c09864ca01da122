"""``python -m slicewise``: the command line, also as torchrun's module (``torchrun ... -m slicewise predict``)."""

import sys

from slicewise.cli import main

if __name__ == "__main__":
    sys.exit(main())
