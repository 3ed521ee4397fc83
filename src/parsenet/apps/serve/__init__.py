"""``parsenet serve``: a local web page that segments your own photo with one or two models.

Needs the ``serve`` extra (``pip install 'parsenet[serve]'``: FastAPI, uvicorn,
python-multipart). The page is self-contained: no request leaves the machine.
"""

from parsenet.apps.serve.app import create_app
from parsenet.apps.serve.models import ServedModel, load_served_models, named_checkpoints
from parsenet.apps.serve.segmenter import ServeSettings
from parsenet.apps.serve.server import resolve_checkpoints, serve
from parsenet.apps.serve.uploads import UploadLimits

__all__ = ["ServeSettings", "ServedModel", "UploadLimits", "create_app", "load_served_models",
           "named_checkpoints", "resolve_checkpoints", "serve"]
