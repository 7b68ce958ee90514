"""The kernel side: the background loop, the ``Run`` handle, its views, the API and the magic.

Runs inside an IPython kernel (or terminal IPython) and talks to a server only through
the wire protocol, so the same code drives the in-kernel server and a remote one.
"""
