"""Where code runs, asked from inside it: ``rc.is_local()``, ``rc.current_input_id()``,
``rc.current_function_call_id()`` (Modal's names, same meaning).

In a container the runtime sets ``IN_CONTAINER_ENV`` before user code loads, and the
input a thread or task serves is the container's ``CURRENT`` context variable; the
container's module is imported only there, so the client never loads it.
"""

from __future__ import annotations

import os

from remotecell_runtime.protocol.image_spec import IN_CONTAINER_ENV


def is_local() -> bool:
    """False inside a function's container, True everywhere else (a script, a notebook, ``f.local()``).

    >>> @app.function()
    ... def where(): return rc.is_local()
    >>> where.remote(), where.local(), rc.is_local()
    (False, True, True)
    """
    return os.environ.get(IN_CONTAINER_ENV) != "1"


def current_input_id() -> str | None:
    """The id of the input this thread or task serves in a container; None outside an input (or locally).

    Inputs of one ``.map`` each have their own; a batch (``@rc.batched``) reports its first input's.
    """
    if is_local():
        return None
    from remotecell_runtime.container.inputs import CURRENT

    return CURRENT.get()


def current_function_call_id() -> str | None:
    """The id of the call this input belongs to; None outside an input (or locally).

    A spawned call's id (``fc-…``, what ``FunctionCall.from_id`` takes), the group's for an
    input of ``spawn_map`` (``fg-…``); a ``.remote`` or ``.map`` input is its own call here, so
    its input id.
    """
    input_id = current_input_id()
    if input_id is None:
        return None
    return input_id.partition(".")[0] if input_id.startswith("fg-") else input_id
