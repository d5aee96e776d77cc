"""Where a compiled TPU step's time goes: libtpu's per-fusion cost estimates, by source line.

libtpu writes into each scheduled instruction of the compiled HLO its cost model's
``estimated_cycles``, and into its metadata a stack frame (file, function, line of the
Python that made it). ``breakdown`` sums the cycles of every instruction, counting those
in a loop body (a ``lax.scan``) once per iteration, and groups them by the innermost
vsegjax frame: "which line of ours costs what" by the compiler's own model, which is
what ``cost_analysis()``'s totals cannot say. The cycles are the compiler's estimate of
time, not bytes; a line with a large share and few FLOPs is one the TPU runs badly (a
convolution with one output channel on the 128-wide matrix unit, a layout copy).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from typing import Any

_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{$")
# The op is the first word followed by "(%" or "()": a shape's "T(8,128)" is not.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?\b([a-z][\w\-]*)\((?:%|\))")
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_FRAME = re.compile(r"stack_frame_id=(\d+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


@dataclasses.dataclass(frozen=True)
class Cost:
    """Estimated cycles of one source location (or kind of instruction) in a step."""

    where: str      # "methods/grfp/stgru_equations.py:70 _gate_r", or "(copy)" etc.
    cycles: int
    share: float    # of the step's total


def _tables(text: str) -> tuple[dict[int, int], dict[int, str]]:
    """(frame -> parent frame, frame -> "file:line function") from the module's header."""
    sections: dict[str, list[str]] = collections.defaultdict(list)
    name = None
    for line in text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            name = line
        elif not line.strip() or line.startswith(("HloModule", "%", "ENTRY")):
            name = None if not line.strip() else name
            if line.startswith(("%", "ENTRY")):
                break
        elif name:
            sections[name].append(line)

    def numbered(rows):
        out = {}
        for row in rows:
            key, _, rest = row.partition(" ")
            out[int(key)] = rest
        return out

    files = {k: v.strip('"') for k, v in numbered(sections["FileNames"]).items()}
    functions = {k: v.strip('"') for k, v in numbered(sections["FunctionNames"]).items()}
    locations = {}
    for k, v in numbered(sections["FileLocations"]).items():
        fields = dict(re.findall(r"(\w+)=(\d+)", v))
        path = files.get(int(fields.get("file_name_id", 0)), "?")
        for root in ("/vsegjax/", "site-packages/"):  # vsegjax's own, or a library's
            path = path.split(root, 1)[1] if root in path else path
        locations[k] = (path, functions.get(int(fields.get("function_name_id", 0)), "?"),
                        int(fields.get("line", 0)), "/vsegjax/" in files.get(
                            int(fields.get("file_name_id", 0)), ""))
    parents, labels = {}, {}
    for k, v in numbered(sections["StackFrames"]).items():
        fields = dict(re.findall(r"(\w+)=(\d+)", v))
        parents[k] = int(fields.get("parent_frame_id", 0))
        labels[k] = locations.get(int(fields.get("file_location_id", 0)), ("?", "?", 0, False))
    return parents, labels


def _where(frame: int, parents: dict[int, int], labels: dict[int, tuple], ops: str) -> str:
    """The innermost vsegjax frame outside the generic ops (warp, conv), and the one that
    called it, so that each of, say, the STGRU's convolutions gets its own row; a
    gradient rule's ops have only the rule's frames and are named by them."""
    seen = set()
    chain = []
    while frame and frame not in seen:
        seen.add(frame)
        chain.append(labels.get(frame, ("?", "?", 0, False)))
        frame = parents.get(frame, 0)
    ours = [c for c in chain if c[3]]
    if not ours:  # made by a library's own code (flax's BatchNorm, optax): name its line
        return f"{chain[0][0]}:{chain[0][2]} {chain[0][1]}" if chain else f"({ops})"
    outside = [c for i, c in enumerate(ours) if not c[0].startswith(("ops/", "core/"))
               and (i == 0 or ours[i - 1][:2] != c[:2])]  # a function once, innermost line
    if not outside:
        return f"{ours[0][0]}:{ours[0][2]} {ours[0][1]}"
    text = f"{outside[0][0]}:{outside[0][2]} {outside[0][1]}"
    if len(outside) > 1:
        text += f" < {outside[1][1]}:{outside[1][2]}"
    return text


def breakdown(text: str, top: int = 12) -> tuple[int, list[Cost], list[Cost]]:
    """(total estimated cycles, the ``top`` source locations by cycles, the ``top``
    single instructions by cycles, each named with its result's shape) of compiled HLO."""
    parents, labels = _tables(text)
    computations, entry = _computations(text)
    bodies = {name: comp.lines for name, comp in computations.items()}
    totals: collections.Counter = collections.Counter()
    single: collections.Counter = collections.Counter()

    def trip_count(condition: str) -> int:
        # A scan's loop: ``i < n`` against a constant, i counting from 0.
        constants = [int(c) for line in bodies.get(condition, [])
                     for c in re.findall(r"s32\[\][^ ]* constant\((\d+)\)", line)]
        return max(constants) if constants else 1

    def visit(name: str, times: int, depth: int = 0) -> None:
        if depth > 20:
            return
        for line in bodies.get(name, []):
            found = _INSTRUCTION.match(line)
            if not found:
                continue
            op = found.group(2)
            if op == "while":
                body = re.search(r"body=%?([\w.\-]+)", line).group(1)
                cond = re.search(r"condition=%?([\w.\-]+)", line).group(1)
                visit(body, times * trip_count(cond), depth + 1)
                continue
            if op in ("call", "conditional"):
                for callee in re.findall(r"(?:to_apply|branch_computations|true_computation|"
                                         r"false_computation)=\{?%?([\w.\-]+)", line):
                    visit(callee, times, depth + 1)
                continue
            cycles = _CYCLES.search(line)
            if not cycles:
                continue
            frame = _FRAME.search(line)
            op_name = _OP_NAME.search(line)
            kind = op if op != "fusion" else "fusion"
            if op_name and not frame:
                kind = op_name.group(1).rsplit("/", 1)[-1]
            where = (_where(int(frame.group(1)), parents, labels, kind) if frame
                     else f"({kind})")
            totals[where] += int(cycles.group(1)) * times
            shape = re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = (\S+)", line).group(1)
            single[where + ": " + shape.split("{")[0]] += int(cycles.group(1)) * times

    if entry is not None:
        visit(entry, 1)
    total = sum(totals.values())
    return total, *([Cost(where, cycles, cycles / total if total else 0.0)
                      for where, cycles in counter.most_common(top)]
                     for counter in (totals, single))


# ------------------------------------------------------------------ loops counted once
#
# libtpu's ``cost_analysis()`` counts a loop's body once, whatever its trip count (a
# ``lax.scan`` of 4 matmuls reports the FLOPs of 1). ``loop_extra`` estimates what the
# other iterations add: the FLOPs of the convolutions and dot products in each loop body
# (from their shapes) and the bytes its instructions read and write (their logical
# shapes, without the TPU's tile padding), times (trip count - 1).

_ITEM_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s8": 1, "u8": 1,
               "pred": 1, "s64": 8, "u64": 8, "f64": 8, "s16": 2, "u16": 2}
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_FREE = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "while",
         "call", "conditional", "copy-done", "copy-start", "after-all"}


def _array_bytes(shape: str) -> int:
    total = 0
    for dtype, dims in _ARRAY.findall(shape.split("{")[0] if "(" not in shape else shape):
        if dtype in _ITEM_BYTES:
            total += _ITEM_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


def _dims(shape: str) -> list[int]:
    found = _ARRAY.search(shape)
    return [int(d) for d in found.group(2).split(",") if d] if found else []


@dataclasses.dataclass
class _Computation:
    lines: list[str]
    shapes: dict[str, str]


def _computations(text: str) -> tuple[dict[str, _Computation], str | None]:
    out: dict[str, _Computation] = {}
    entry = current = None
    for line in text.splitlines():
        found = _COMPUTATION.match(line)
        if found and not line.startswith(" "):
            current = found.group(1)
            out[current] = _Computation([], {})
            entry = current if line.startswith("ENTRY") else entry
        elif current is not None and line.startswith(" "):
            head = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (.*?) ([a-z][\w\-]*)\(", line)
            if head:
                out[current].lines.append(line)
                out[current].shapes[head.group(1)] = head.group(2)
    return out, entry


def _flops(line: str, shapes: dict[str, str]) -> float:
    head = re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = (.*?) ([a-z][\w\-]*)\((.*?)\)", line)
    if not head:
        return 0.0
    shape, op, args = head.groups()
    operands = re.findall(r"%([\w.\-]+)", args)
    out = math.prod(_dims(shape)) if _dims(shape) else 0
    if op == "convolution" and len(operands) == 2:
        kernel = _dims(shapes.get(operands[1], ""))
        labels = re.search(r"dim_labels=\w+_(\w+)->", line)
        groups = re.search(r"feature_group_count=(\d+)", line)
        if not kernel or not labels or len(labels.group(1)) != len(kernel):
            return 0.0
        spatial = math.prod(k for k, c in zip(kernel, labels.group(1)) if c not in "io")
        inputs = kernel[labels.group(1).index("i")]
        # The kernel's "i" is the input features per group: 2 x outputs x window x it.
        del groups
        return 2.0 * out * spatial * inputs
    if op == "dot" and operands:
        lhs = _dims(shapes.get(operands[0], ""))
        contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line)
        if not lhs or not contracting:
            return 0.0
        k = math.prod(lhs[int(d)] for d in contracting.group(1).split(",") if d)
        return 2.0 * out * k
    return 0.0


def loop_extra(text: str) -> dict[str, Any]:
    """What ``cost_analysis()`` leaves out of a compiled module's loops: ``flops`` and
    ``bytes`` of the iterations after each loop body's first, and ``loops``: the trip
    count of each loop at the top level (nested loops multiply)."""
    comps, entry = _computations(text)

    def trip_count(condition: str) -> int:
        constants = [int(c) for line in comps.get(condition, _Computation([], {})).lines
                     for c in re.findall(r"s32\[\][^ ]* constant\((\d+)\)", line)]
        return max(constants) if constants else 1

    def cost(name: str, depth: int = 0) -> tuple[float, float, float, float]:
        """(flops, bytes) with every loop iterated, and (flops, bytes) with each body once."""
        comp = comps.get(name)
        if comp is None or depth > 30:
            return 0.0, 0.0, 0.0, 0.0
        full_f = full_b = once_f = once_b = 0.0
        for line in comp.lines:
            head = re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = (.*?) ([a-z][\w\-]*)\((.*?)\)", line)
            shape, op, args = head.groups()
            if op == "while":
                body = re.search(r"body=%?([\w.\-]+)", line).group(1)
                n = trip_count(re.search(r"condition=%?([\w.\-]+)", line).group(1))
                f, b, f1, b1 = cost(body, depth + 1)
                full_f, full_b, once_f, once_b = full_f + n * f, full_b + n * b, \
                    once_f + f1, once_b + b1
                continue
            flops = _flops(line, comp.shapes)
            for callee in re.findall(r"calls=%?([\w.\-]+)", line):  # a fusion's insides
                flops += sum(_flops(inner, comps[callee].shapes)
                             for inner in comps.get(callee, _Computation([], {})).lines)
            moved = 0.0
            if op not in _FREE:
                moved = _array_bytes(shape) + sum(
                    _array_bytes(comp.shapes.get(o, "")) for o in re.findall(r"%([\w.\-]+)", args))
            full_f, full_b, once_f, once_b = full_f + flops, full_b + moved, \
                once_f + flops, once_b + moved
        return full_f, full_b, once_f, once_b

    loops = []
    for line in comps.get(entry, _Computation([], {})).lines if entry else []:
        if re.search(r"\swhile\(", line):
            loops.append(trip_count(re.search(r"condition=%?([\w.\-]+)", line).group(1)))
    full_f, full_b, once_f, once_b = cost(entry) if entry else (0, 0, 0, 0)
    return {"flops": full_f - once_f, "bytes": full_b - once_b, "loops": loops}
