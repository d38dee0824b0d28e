"""Execute a notebook headless in a real Jupyter kernel and print what its cells return.

    python notebooks/run.py notebooks/quickstart.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def text_of(output: dict) -> str:
    if output["output_type"] == "stream":
        return output["text"]
    if output["output_type"] == "error":
        return f"{output['ename']}: {output['evalue']}\n"
    data = output.get("data", {})
    return data.get("text/plain", "") + "\n" if "text/plain" in data else ""


def main(path: str) -> int:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(Path(path).parent)}}).execute()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        print(f"--- [{i}] {cell.source.splitlines()[0] if cell.source else ''}")
        for output in cell.get("outputs", []):
            sys.stdout.write(text_of(output))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
