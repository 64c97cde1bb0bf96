"""The processor SDK under this package's name: ``from offload.sdk import Processor`` is
``from offload_sdk import Processor`` (see ``offload_sdk``: a plain function becomes a
processor executable)."""

from offload_sdk import *  # noqa: F401,F403
from offload_sdk import __all__  # noqa: F401
