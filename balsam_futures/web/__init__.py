"""The read-only campaign page: a Starlette app over one store (``balsam-futures web``).

    browser ──GET /?token=T──> page (static HTML + uPlot) ──polls /api/summary, /api/task/ID──>
    app.py (token check, routes) ──> data.py (bounded store reads) ──> the store

Starlette and uvicorn come with the ``web`` extra and are imported only by ``app.py``, so
``data.py`` (also used by ``show --follow``) works without them.
"""
