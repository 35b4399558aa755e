"""The campaign page served from a thread of the test process (a module of its own: a
test cannot import a conftest by name when several directories have one)."""

from __future__ import annotations

import threading


class PageServer:
    """The page's app served by uvicorn on a free port of 127.0.0.1, in a thread."""

    def __init__(self, url: str, site: str | None = None) -> None:
        import uvicorn

        from balsam_futures.backends import open_store
        from balsam_futures.web.app import bind, create_app, new_token

        self.token = new_token()
        self.sock = bind(0)  # listening already: requests queue until uvicorn serves them
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        app = create_app(lambda: open_store(url), self.token, site=site)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()

    def url(self, path: str = "/") -> str:
        return f"{self.base}{path}?token={self.token}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
