#!/usr/bin/env bash
# Create the anchor virtualenvs the benchmark harness runs ipyparallel, Ray and Dask in.
#   bash benchmarks/setup_envs.sh            # all anchors (ipp, ray, dask)
#   bash benchmarks/setup_envs.sh ray        # just one
# Venvs go to $REMOTECELL_BENCH_VENVS (default ~/.cache/remotecell-bench/<system>), with the exact
# versions pinned in benchmarks/requirements/<system>.txt. Needs python3.11 and PyPI; Ray is ~1 GB
# and takes minutes. Re-running is cheap (pip skips what is installed).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="${REMOTECELL_BENCH_VENVS:-$HOME/.cache/remotecell-bench}"
py="${PYTHON:-python3.11}"
systems=("$@")
[ ${#systems[@]} -gt 0 ] || systems=(ipp ray dask)
mkdir -p "$root"
for s in "${systems[@]}"; do
  req="$here/requirements/$s.txt"
  [ -f "$req" ] || { echo "no $req (known: $(ls "$here/requirements" | sed 's/\.txt//' | tr '\n' ' '))" >&2; exit 2; }
  [ -x "$root/$s/bin/python" ] || "$py" -m venv "$root/$s"
  "$root/$s/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
  echo "$s: $("$root/$s/bin/python" -c 'import sys; print(sys.version.split()[0])') ready in $root/$s"
done
