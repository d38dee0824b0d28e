"""Notebook views of remotecell objects (ipywidgets when installed, else updating plain text).

Imported by the IPython extension and by reprs that only notebooks call; never by the runtime.
"""
