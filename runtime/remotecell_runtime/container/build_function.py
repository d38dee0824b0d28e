"""A ``run_function`` step's function, run once in a build sandbox of its image: ``python -m
remotecell_runtime.container.build_function PATH`` (the pickled function, by value).

It runs as a container's code does (the image's venv, ``REMOTECELL_IS_REMOTE=1`` so
``Image.imports()`` raises what it swallows on a client) but over the image's root
filesystem being built, which keeps what it writes; its output is the build's log.
This process, not the daemon, unpickles the function.
"""

from __future__ import annotations

import pickle
import sys


def main(path: str) -> None:
    with open(path, "rb") as f:
        fn = pickle.loads(f.read())
    print(f"running {getattr(fn, '__qualname__', fn)!s}()", flush=True)
    fn()


if __name__ == "__main__":
    main(sys.argv[1])
