"""``python -m balsam_futures.launcher URL LOGFILE``: the launcher an executor starts itself.

Its configuration arrives pickled on standard input (length-prefixed), and standard input
then stays open: when it closes, the executor that started this launcher is gone or shut
down, and the launcher stops.
"""

import pickle
import struct
import sys

from .pilot import run_launcher

_stdin = sys.stdin.buffer
(_size,) = struct.unpack("!Q", _stdin.read(8))
_cfg = pickle.loads(_stdin.read(_size))
run_launcher(sys.argv[1], _cfg, control_fd=_stdin.fileno(), log_file=sys.argv[2])
