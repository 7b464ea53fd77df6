"""``python -m skd bench ...`` and the ``skd`` console script."""

import sys

from skd.bench import main

if __name__ == "__main__":
    sys.exit(main())
