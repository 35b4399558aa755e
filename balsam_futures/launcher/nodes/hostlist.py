"""Expand Slurm-style hostlists (``nid[001-004,010],login1``) into host names.

Our own small expander: python-hostlist is GPL (see ARCHITECTURE.md, "Chosen dependencies").
Flux writes its node lists in the same syntax (RFC 29), so ``flux.py`` uses this too.

The rules follow ``scontrol show hostnames`` (Slurm ``src/common/hostlist.c``):

- hosts are separated by commas outside brackets; inside brackets a comma separates ranges;
- a range ``lo-hi`` keeps the width of ``lo``, so ``[08-10]`` gives ``08 09 10`` and
  ``[1-10]`` gives ``1 ... 10``;
- several bracket groups in one name expand as a cartesian product with the first group
  varying slowest (``rack[1-2]-node[01-02]`` gives ``rack1-node01 rack1-node02 rack2-node01
  rack2-node02``), which is how hostlist.c expands the suffix after each bracket;
- duplicates are kept and nothing is sorted: the order is the order written.
"""

from __future__ import annotations

import itertools

# A typo such as ``nid[0-9999999]`` would otherwise build millions of strings before anything
# noticed.  Larger than any machine's node count (Frontier has under 10k nodes); raise it if a
# real allocation is ever refused.
MAX_HOSTS = 1 << 20


def expand_hostlist(hostlist: str) -> list[str]:
    """Return the host names of ``hostlist`` in order, as ``scontrol show hostnames`` does.

    Raises ``ValueError`` naming the offending part for unbalanced brackets, empty names or
    ranges, non-numeric ranges and descending ranges.
    """
    if not isinstance(hostlist, str):
        raise TypeError(f"hostlist must be a str, not {type(hostlist).__name__}")
    text = hostlist.strip()
    if not text:
        raise ValueError("hostlist is empty")
    hosts: list[str] = []
    for pattern in _split_top_level(text):
        hosts.extend(_expand_pattern(pattern))
        if len(hosts) > MAX_HOSTS:
            raise ValueError(f"hostlist {hostlist!r} expands to more than {MAX_HOSTS} hosts")
    return hosts


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets, checking that brackets balance and do not nest."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "[":
            if depth:
                raise ValueError(f"nested '[' at position {i} in hostlist {text!r}")
            depth = 1
        elif ch == "]":
            if not depth:
                raise ValueError(f"unbalanced ']' at position {i} in hostlist {text!r}")
            depth = 0
        elif ch == "," and not depth:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unbalanced '[' (never closed) in hostlist {text!r}")
    parts.append(text[start:])
    for part in parts:
        if not part.strip():
            raise ValueError(f"empty host name in hostlist {text!r}")
        if any(ch.isspace() for ch in part):
            raise ValueError(f"white space inside host name {part!r} in hostlist {text!r}")
    return parts


def _expand_pattern(pattern: str) -> list[str]:
    """``rack[1-2]-node[01-02]`` -> the cartesian product, first group slowest."""
    pieces: list[list[str]] = []  # literal text and bracket groups, alternating
    pos = 0
    while True:
        open_at = pattern.find("[", pos)
        if open_at < 0:
            pieces.append([pattern[pos:]])
            break
        close_at = pattern.index("]", open_at)  # balanced: checked by _split_top_level
        pieces.append([pattern[pos:open_at]])
        pieces.append(_expand_group(pattern[open_at + 1:close_at], pattern))
        pos = close_at + 1
    total = 1
    for choices in pieces:
        total *= len(choices)
    if total > MAX_HOSTS:
        raise ValueError(f"host pattern {pattern!r} expands to more than {MAX_HOSTS} hosts")
    return ["".join(combo) for combo in itertools.product(*pieces)]


def _expand_group(group: str, pattern: str) -> list[str]:
    """``001-004,010`` -> ``['001', '002', '003', '004', '010']``, keeping ``lo``'s width."""
    if not group:
        raise ValueError(f"empty brackets in host name {pattern!r}")
    out: list[str] = []
    for item in group.split(","):
        lo, sep, hi = item.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"bad range {item!r} in host name {pattern!r}: "
                             "expected N or LO-HI with decimal digits")
        if not sep:
            out.append(lo)
            continue
        first, last = int(lo), int(hi)
        if last < first:
            raise ValueError(f"descending range {item!r} in host name {pattern!r}")
        if last - first >= MAX_HOSTS:
            raise ValueError(f"range {item!r} in host name {pattern!r} is larger than "
                             f"{MAX_HOSTS} hosts")
        width = len(lo)
        out.extend(str(n).zfill(width) for n in range(first, last + 1))
    return out
