"""``python -m balsam_futures.launcher LOGFILE [NEWS_FD]``: the launcher an executor starts
itself.

Its database URL and configuration arrive pickled on standard input (length-prefixed; not
on the command line, where a password would show in ``ps``), and standard input then stays
open: when it closes, the executor that started this launcher is gone or shut down, and the
launcher stops; a byte on it says the executor stored tasks.  ``NEWS_FD``, inherited, is
where the launcher says it committed starts or outcomes (see child.py).

The workers are started first, before this process imports the store (pilot.py, and with
it SQLAlchemy): their interpreters boot while it loads, not after.
"""

import pickle
import struct
import sys

from .logfile import open_log
from .workers.pool import early_head_pool

_stdin = sys.stdin.buffer
(_size,) = struct.unpack("!Q", _stdin.read(8))
_db_url, _cfg = pickle.loads(_stdin.read(_size))
open_log(sys.argv[1])
_pool = early_head_pool(_cfg, _db_url)

from .pilot import run_launcher  # noqa: E402  (after the workers started: see above)

run_launcher(_db_url, _cfg, control_fd=_stdin.fileno(), log_file=sys.argv[1],
             executor_fd=int(sys.argv[2]) if len(sys.argv) > 2 else None, pool=_pool)
