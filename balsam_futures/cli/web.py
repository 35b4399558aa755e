"""`balsam-futures web`: the read-only campaign page on 127.0.0.1, behind a token."""

from __future__ import annotations

import click

from ._common import STORE_OPTIONS, with_options
from .main import main


@main.command("web")
@with_options(STORE_OPTIONS)
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8765, show_default=True,
              help="Port on 127.0.0.1 (0: any free one).")
def web_cmd(site, db_url, port) -> None:
    """Serve a live page of the campaign (counts, utilization, failures, launchers, tasks)
    on 127.0.0.1; open the URL it prints (through an SSH tunnel from elsewhere)."""
    try:
        from ..web.app import bind, create_app, new_token, serve
    except ImportError as exc:
        raise ImportError(f"the web page needs the web extra: pip install "
                          f"'balsam_futures[web]' ({exc})") from None
    from ..backends import open_store
    from ..sitedir import resolve_store_url

    url, _site = resolve_store_url(db_url, site, create=False)
    token = new_token()
    app = create_app(lambda: open_store(url), token, site=site)
    sock = bind(port)
    click.echo(f"campaign page: http://127.0.0.1:{sock.getsockname()[1]}/?token={token}")
    click.echo("(Ctrl-C stops it)")
    serve(app, sock)
