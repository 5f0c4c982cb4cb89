"""Memory traffic and collective bytes of a compiled step, read from its optimized HLO text.

XLA's cost analysis counts a while loop's body once: for a step that scans its layers, its
"bytes accessed" miss most of the traffic. This walks the optimized module instead, with each
while loop's trip count (the constant its condition compares the counter against):

  - HBM traffic: every instruction outside fused computations reads its operands and writes
    its result, the accounting XLA's cost analysis uses for fusions, except that dynamic
    slices read their slice and dynamic updates write theirs in place. Tuples, parameters,
    constants, bitcasts and tuple indexing move nothing.
  - collective bytes: what each collective moves through a device's links, wherever it sits
    (TPU wraps collectives in async fusions): an all-gather, all-to-all or collective-permute
    its result, a reduce-scatter its operand, an all-reduce twice its operand (a reduce-scatter
    and an all-gather).

Both are per device (the module is SPMD-partitioned). `traffic` gives them once per loop body,
as XLA's analysis does, and with every iteration, so a caller can scale XLA's own figure by the
ratio rather than trust this simpler accounting in absolute terms.
"""
import dataclasses
import math
import re

_HEADER = re.compile(r"^(?:ENTRY )?%(?P<name>[\w.\-]+) \(")
_INSTR = re.compile(r"^\s*(?:ROOT )?%(?P<name>[\w.\-]+) = ")
_ARRAY = re.compile(r"\b(pred|bf16|f8\w*|[fsuc]\d+)\[([\d,]*)\]")
_OPERAND = re.compile(r"%([\w.\-]+)")
_CALLEE = re.compile(r"\b(calls|body|condition)=%([\w.\-]+)")
_BRANCHES = re.compile(r"\b(?:branch_computations|called_computations)=\{([^}]*)\}")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
_SCALAR_INT = re.compile(r"^[su]\d+\[\]")
_COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_MOVES_NOTHING = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
                  "partition-id", "replica-id", "opt-barrier", "while", "call", "conditional"}
_BYTES = {"pred": 1, "bf16": 2}


def _array_bytes(type_text: str) -> int:
    """Bytes of every array in an HLO type (an array or a tuple of them), layouts ignored."""
    total = 0
    for dtype, dims in _ARRAY.findall(type_text):
        width = _BYTES.get(dtype) or max(1, int(re.sub(r"\D", "", dtype) or 8) // 8)
        total += width * math.prod(int(d) for d in dims.split(",") if d)
    return total


def _split_type(rest: str):
    """(type text, the rest) of what follows `%name = ` in an instruction line."""
    if not rest.startswith("("):
        head, _, tail = rest.partition(" ")
        return head, tail
    depth = 0
    for i, ch in enumerate(rest):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return rest[:i + 1], rest[i + 1:].lstrip()
    return rest, ""


def _balanced(text: str, start: int) -> str:
    depth = 0
    for i in range(start, len(text)):
        depth += text[i] == "("
        depth -= text[i] == ")"
        if depth == 0:
            return text[start + 1:i]
    return text[start + 1:]


@dataclasses.dataclass
class _Instr:
    name: str
    type_text: str
    opcode: str
    operands: list
    args: str  # the text between the opcode's parentheses
    line: str


def parse(text: str) -> tuple[dict, str]:
    """({computation name: [_Instr]}, the entry computation's name)."""
    computations, entry, current = {}, "", None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header and line.rstrip().endswith("{"):
            current = computations.setdefault(header["name"], [])
            if line.startswith("ENTRY"):
                entry = header["name"]
            continue
        found = _INSTR.match(line) if current is not None else None
        if not found:
            continue
        type_text, rest = _split_type(line[found.end():])
        paren = rest.find("(")
        opcode = rest[:paren] if paren >= 0 else rest
        args = _balanced(rest, paren) if paren >= 0 else ""
        current.append(_Instr(found["name"], type_text, opcode, _OPERAND.findall(args), args,
                              line))
    return computations, entry


def _trip_count(instr, computations) -> int:
    """A while loop's iterations: XLA's annotation, or the constant its condition compares."""
    known = _TRIP.search(instr.line)
    if known:
        return int(known.group(1))
    condition = dict(_CALLEE.findall(instr.line)).get("condition")
    values = [int(i.args) for i in computations.get(condition, [])
              if i.opcode == "constant" and _SCALAR_INT.match(i.type_text) and i.args.isdigit()]
    return values[0] if len(values) == 1 and values[0] > 0 else 1


def _collective_bytes(instr, shapes) -> int:
    kind = instr.opcode.removesuffix("-start")
    if kind not in _COLLECTIVES:
        return 0
    if kind in ("reduce-scatter", "all-reduce"):
        moved = sum(_array_bytes(shapes.get(o, "")) for o in instr.operands)
        return moved * (2 if kind == "all-reduce" else 1)
    return _array_bytes(instr.type_text)


def _hbm_bytes(instr, shapes, computations) -> int:
    """Bytes one unfused instruction reads and writes.

    A dynamic slice reads only its slice, and a dynamic update writes its update in place: a
    scan's stacked weights and saved activations would otherwise count whole every iteration.
    Inside a fusion the same holds for each fused parameter that only such ops touch.
    """
    operand = [_array_bytes(shapes.get(o, "")) for o in instr.operands]
    if instr.opcode == "dynamic-slice":
        return 2 * _array_bytes(instr.type_text)
    if instr.opcode == "dynamic-update-slice":
        return 2 * operand[1]
    if instr.opcode != "fusion":
        return _array_bytes(instr.type_text) + sum(operand)
    body = computations.get(dict(_CALLEE.findall(instr.line)).get("calls"), [])
    inner = {i.name: i for i in body}
    params = {int(i.args): i.name for i in body if i.opcode == "parameter" and i.args.isdigit()}
    users = {}
    for i in body:
        for position, o in enumerate(i.operands):
            users.setdefault(o, []).append((i, position))
    roots = [i for i in body if i.line.lstrip().startswith("ROOT")] or body[-1:]
    root = roots[-1] if roots else None
    if root is None:
        outputs = []
    elif root.opcode == "tuple":
        outputs = [inner[o] for o in root.operands if o in inner]
    else:
        outputs = [root]
    written = 0
    for out in outputs:
        if out.opcode == "dynamic-update-slice" and len(out.operands) > 1:
            written += _array_bytes(inner[out.operands[1]].type_text) \
                if out.operands[1] in inner else 0
        else:
            written += _array_bytes(out.type_text)
    if not outputs:
        written = _array_bytes(instr.type_text)
    read = 0
    for index, size in enumerate(operand):
        uses = users.get(params.get(index), [])
        if uses and all(u.opcode == "dynamic-slice" and pos == 0 for u, pos in uses):
            read += sum(_array_bytes(u.type_text) for u, _ in uses)
        elif uses and all(u.opcode == "dynamic-update-slice" and pos == 0 for u, pos in uses):
            continue  # the buffer updated in place
        else:
            read += size
    return written + read


@dataclasses.dataclass
class Traffic:
    """Per-device bytes of one step: HBM traffic and collective results, once and in full."""

    hbm_once: float = 0.0
    hbm: float = 0.0
    collective_once: float = 0.0
    collective: float = 0.0


def traffic(text: str) -> Traffic:
    computations, entry = parse(text)
    memo = {}

    def cost(name, fused, once):
        key = (name, fused, once)
        if key in memo:
            return memo[key]
        memo[key] = (0.0, 0.0)  # a cycle (none in valid HLO) counts nothing
        shapes = {i.name: i.type_text for i in computations.get(name, [])}
        hbm = coll = 0.0
        for instr in computations.get(name, []):
            coll += _collective_bytes(instr, shapes)
            if not fused and instr.opcode not in _MOVES_NOTHING:
                hbm += _hbm_bytes(instr, shapes, computations)
            callees = dict(_CALLEE.findall(instr.line))
            for group in _BRANCHES.findall(instr.line):
                for i, callee in enumerate(_OPERAND.findall(group)):
                    callees[f"branch{i}"] = callee
            if instr.opcode == "while":
                times = 1 if once else _trip_count(instr, computations)
                h, c = cost(callees.get("body"), False, once)
                hbm, coll = hbm + times * h, coll + times * c
                continue
            if instr.opcode == "conditional":
                branches = [cost(c, False, once) for k, c in callees.items()
                            if k.startswith("branch")]
                if branches:
                    h, c = max(branches)
                    hbm, coll = hbm + h, coll + c
                continue
            for role, callee in callees.items():
                inner_fused = fused or instr.opcode == "fusion"
                h, c = cost(callee, inner_fused, once)
                hbm, coll = hbm + h, coll + c
        memo[key] = (hbm, coll)
        return memo[key]

    hbm_once, coll_once = cost(entry, False, True)
    hbm, coll = cost(entry, False, False)
    return Traffic(hbm_once, hbm, coll_once, coll)
