"""``python -m parsenet.study``: see :func:`parsenet.study.main`."""

import sys

from parsenet.study import main

sys.exit(main())
