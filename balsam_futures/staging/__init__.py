"""Data staging: ``stage_in``/``stage_out`` specs and the transports that move the files.

    specs.py       StageIn, StageOut, parse_*, specs_to_json/specs_from_json, locate
    items.py       TransferItem, stage_in_items, stage_out_items
    transfers.py   Transfers (route, batch, retry), TaskTransferReport
    local.py, http.py, rsync.py, globus.py   one transport each
"""

from ..errors import StagingError
from .items import TransferItem, stage_in_items, stage_out_items
from .specs import (
    StageIn,
    StageOut,
    parse_stage_in,
    parse_stage_out,
    specs_from_json,
    specs_to_json,
)
from .transfers import TaskTransferReport, Transfers

__all__ = [
    "StageIn",
    "StageOut",
    "StagingError",
    "TaskTransferReport",
    "TransferItem",
    "Transfers",
    "parse_stage_in",
    "parse_stage_out",
    "specs_from_json",
    "specs_to_json",
    "stage_in_items",
    "stage_out_items",
]
