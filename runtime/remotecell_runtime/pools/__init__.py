"""One autoscaling pool of containers per function definition, and the dispatch of its inputs.

``Pool`` (``pool.py``) is the one object the daemon, the job store and the scheduler
hold; its parts live beside it, one concern each: the input queue (``queue.py``),
batch assembly for ``@rc.batched`` (``batches.py``), leases (``leases.py``) and
scaling (``scaling.py``), each over ``PoolState`` (``state.py``, what they share; the
pool is one), never the pool.  ``inputs.py`` has what flows through a pool, ``host.py``
what a pool needs of the daemon (``PoolHost``).
"""

from .host import PoolHost
from .inputs import FunctionDef, Input, Peer, Result, ResultMessage, cancelled_result, error_result, failed_result
from .pool import Pool
from .queue import CANCEL_GRACE_S

__all__ = ["CANCEL_GRACE_S", "FunctionDef", "Input", "Peer", "Pool", "PoolHost", "Result", "ResultMessage",
           "cancelled_result", "error_result", "failed_result"]
