"""``python -m parsenet.study``: see :func:`parsenet.study.main`."""

from parsenet.study import main

main()
