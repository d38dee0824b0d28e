"""remotecell: run Python functions and notebook cells on a GPU box.

>>> import remotecell as rc
>>> app = rc.App("demo")
>>> @app.function(gpu="any")
... def square(x): return x * x
>>> square.remote(3)
9
"""

__version__ = "0.1.0"

from . import exceptions
from .app import App
from .cls import Cls, enter, exit, method
from .functions import Function
from .options import Retries, concurrent

__all__ = ["App", "Cls", "Function", "Retries", "concurrent", "enter", "exit", "exceptions", "method",
           "__version__"]
