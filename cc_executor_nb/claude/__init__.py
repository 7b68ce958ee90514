"""Everything Claude-specific: options and argv, finding the executable, the stream-json
parser, the interpreter that feeds a ``Run``, and the renderers.

Only the renderer imports ipywidgets; the rest is plain Python (a test enforces it).
"""
