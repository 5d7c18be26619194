"""``g2lstm-serve``: model folders over HTTP.

- ``app``: the routes (LibreTranslate's API, ours under ``/v1``, the page);
- ``translator``: one model folder behind the hub interface;
- ``batching``: dynamic batching of concurrent requests, off the event loop;
- ``limits`` and ``schemas``: what a request may ask, and how it is read and refused;
- ``cli``: the command; ``static/``: the web page (plain HTML, CSS and JavaScript).

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart).
"""
