"""``python -m parsenet.apps.study``: see :func:`parsenet.apps.study.main`."""

import sys

from parsenet.apps.study import main

sys.exit(main())
