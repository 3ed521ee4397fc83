"""User-facing applications built on the library (``parsenet serve``: :mod:`.serve`)."""
