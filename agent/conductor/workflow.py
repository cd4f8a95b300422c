"""Workflow files: ordered natural-language steps with checks, timeouts, retries and ``{variables}``.

A workflow is YAML (see ``docs/workflows.md``)::

    name: new-contact
    desktop: {scene: form, title: New Contact, fields: [Name, City, Email, Company], button: Submit}
    defaults: {timeout: 15, retries: 2}
    steps:
      - name: name
        do: Type "{name}" into the "Name" field and press Enter.
        check: {field: Name, equals: "{name}"}
      - name: submit
        do: Click the "Submit" button.
        check: {text: "Saved {name}"}

A step with ``keep: true`` (or ``defaults: {keep: true}``) must still pass its check after every
later step: a later step that breaks it (a value typed into the wrong field, say) sends the run
back to do it again, within its retries.

``{column}`` anywhere in a step (its instruction or its check) is filled from one row of a CSV
(``--rows``): one run per row. ``{{`` and ``}}`` are literal braces. A step without a check is
confirmed by the fast policy's ``done``. Timeouts are seconds on the desktop's clock (virtual
seconds on the virtual desktop) per attempt; ``retries`` further attempts follow a failed one.

Every user mistake (a missing file, an unknown key, a variable no row column fills) is a
:class:`WorkflowError` naming the file and the step.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.errors import UserError

CHECK_KINDS = ("text", "window", "field")
STEP_KEYS = {"name", "do", "check", "timeout", "retries", "keep"}
TOP_KEYS = {"name", "description", "desktop", "defaults", "steps", "goal"}
DEFAULT_TIMEOUT = 20.0
DEFAULT_RETRIES = 2
MAX_STEPS = 200
MAX_ROWS = 100_000
_VAR = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|\{|\}")


class WorkflowError(UserError):
    """A workflow file or rows file a user can fix; the message names the file (and step)."""


@dataclass(frozen=True)
class Check:
    """One condition on the desktop: ``text`` visible on screen, a ``window`` title, or a ``field``
    (an app-state probe: the named text field's content ``equals`` / ``contains`` a value)."""

    kind: str
    value: str  # the text, the window title, or the field's name
    equals: str | None = None
    contains: str | None = None

    def describe(self) -> str:
        if self.kind == "field":
            want = f" == {self.equals!r}" if self.equals is not None else (
                f" contains {self.contains!r}" if self.contains is not None else " present")
            return f"field {self.value!r}{want}"
        return f"{self.kind} {self.value!r}"

    def to_json(self) -> dict:
        out: dict[str, Any] = {self.kind: self.value}
        if self.equals is not None:
            out["equals"] = self.equals
        if self.contains is not None:
            out["contains"] = self.contains
        return out


@dataclass(frozen=True)
class Step:
    index: int  # 1-based, as people count steps
    name: str
    instruction: str
    checks: tuple[Check, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    keep: bool = False  # the check must still hold after every later step, or the step runs again

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def to_json(self) -> dict:
        return {"step": self.index, "name": self.name, "instruction": self.instruction,
                "checks": [c.to_json() for c in self.checks], "timeout": self.timeout, "retries": self.retries} | ({"keep": True} if self.keep else {})


@dataclass(frozen=True)
class Workflow:
    name: str
    steps: tuple[Step, ...]
    path: str = ""
    goal: str = ""
    description: str = ""
    desktop: dict = field(default_factory=dict)  # the virtual scene `dw eval --workflow` opens
    row: dict = field(default_factory=dict)  # the row this copy was filled from ({} = unfilled)

    def variables(self) -> list[str]:
        """The ``{names}`` the steps use, in order of first use."""
        seen: list[str] = []
        for s in self.steps:
            for text in _texts(s):
                for m in _VAR.finditer(text):
                    if m.group(1) and m.group(1) not in seen:
                        seen.append(m.group(1))
        return seen

    def fill(self, row: dict[str, str]) -> Workflow:
        """This workflow with every ``{variable}`` replaced from ``row`` (a missing one is an error)."""
        missing = [v for v in self.variables() if v not in row]
        if missing:
            have = ", ".join(sorted(row)) or "none"
            raise WorkflowError(f"{self.path or self.name}: the steps use {{{missing[0]}}}, which the row does not "
                                f"fill (its columns: {have})")
        sub = lambda text: _substitute(text, row)  # noqa: E731
        steps = tuple(replace(s, name=sub(s.name), instruction=sub(s.instruction),
                              checks=tuple(replace(c, value=sub(c.value),
                                                   equals=None if c.equals is None else sub(c.equals),
                                                   contains=None if c.contains is None else sub(c.contains))
                                           for c in s.checks))
                      for s in self.steps)
        return replace(self, steps=steps, goal=sub(self.goal), row=dict(row))

    def goal_text(self) -> str:
        """What a model conductor is told the work is: the goal, or the steps in order."""
        if self.goal:
            return self.goal
        return f"{self.name}: " + " Then ".join(s.instruction for s in self.steps)

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "steps": [s.to_json() for s in self.steps], "row": self.row}


def _texts(s: Step) -> list[str]:
    out = [s.name, s.instruction]
    for c in s.checks:
        out += [c.value] + [v for v in (c.equals, c.contains) if v is not None]
    return out


def _substitute(text: str, row: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        if m.group(1):
            return str(row[m.group(1)])
        return tok
    return _VAR.sub(one, text)


def _check_braces(text: str, where: str) -> None:
    for m in _VAR.finditer(text):
        if m.group(0) in ("{", "}"):
            raise WorkflowError(f"{where}: a lone {m.group(0)!r} in {text!r}; write {{name}} for a variable, "
                                "{{ or }} for a literal brace")


def _number(value: Any, what: str, where: str, lo: float, integer: bool = False) -> Any:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value == value and value >= lo
    if integer:
        ok = ok and float(value).is_integer()
    if not ok or (not integer and value > 86_400) or (integer and value > 100):
        kind = "an integer" if integer else "a number of seconds"
        raise WorkflowError(f"{where}: {what} must be {kind} >= {lo:g}, got {value!r}"[:300])
    return int(value) if integer else float(value)


def _flag(value: Any, what: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise WorkflowError(f"{where}: {what} must be true or false, got {value!r}"[:300])
    return value


def _parse_check(obj: Any, where: str) -> tuple[Check, ...]:
    if obj is None:
        return ()
    if isinstance(obj, list):
        return tuple(c for item in obj for c in _parse_check(item, where))
    if isinstance(obj, str):  # shorthand: visible text
        obj = {"text": obj}
    if not isinstance(obj, dict):
        raise WorkflowError(f"{where}: check must be a mapping such as {{text: Saved}}, or a list of them")
    kinds = [k for k in CHECK_KINDS if k in obj]
    unknown = sorted(set(obj) - set(CHECK_KINDS) - {"equals", "contains"})
    if unknown:
        raise WorkflowError(f"{where}: unknown check key {unknown[0]!r}; a check has one of "
                            f"{', '.join(CHECK_KINDS)} (a field also equals or contains)")
    if len(kinds) != 1:
        raise WorkflowError(f"{where}: a check names exactly one of {', '.join(CHECK_KINDS)}; use a list for several")
    kind = kinds[0]
    value = obj[kind]
    if not isinstance(value, str | int | float) or isinstance(value, bool) or str(value) == "":
        raise WorkflowError(f"{where}: check {kind!r} needs a non-empty text, got {value!r}"[:300])
    eq, co = obj.get("equals"), obj.get("contains")
    if kind != "field" and (eq is not None or co is not None):
        raise WorkflowError(f"{where}: 'equals' and 'contains' apply to a field check")
    for name, v in (("equals", eq), ("contains", co)):
        if v is not None and not isinstance(v, str | int | float):
            raise WorkflowError(f"{where}: check {name!r} must be a text, got {type(v).__name__}")
    c = Check(kind, str(value), None if eq is None else str(eq), None if co is None else str(co))
    for text in (c.value, c.equals, c.contains):
        if text is not None:
            _check_braces(text, where)
    return (c,)


def parse_workflow(data: Any, path: str = "<workflow>") -> Workflow:
    """A workflow from its parsed YAML (a mapping); errors name ``path`` and the step."""
    if not isinstance(data, dict):
        raise WorkflowError(f"{path}: a workflow is a mapping with 'steps' (a list)")
    unknown = sorted(set(map(str, data)) - TOP_KEYS)
    if unknown:
        raise WorkflowError(f"{path}: unknown key {unknown[0]!r}; expected {', '.join(sorted(TOP_KEYS))}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - {"timeout", "retries", "keep"}:
        raise WorkflowError(f"{path}: 'defaults' may set timeout, retries and keep only")
    d_keep = _flag(defaults.get("keep", False), "keep", f"{path}: defaults")
    d_timeout = _number(defaults.get("timeout", DEFAULT_TIMEOUT), "timeout", f"{path}: defaults", 0.1)
    d_retries = _number(defaults.get("retries", DEFAULT_RETRIES), "retries", f"{path}: defaults", 0, integer=True)
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise WorkflowError(f"{path}: 'steps' must be a non-empty list")
    if len(raw_steps) > MAX_STEPS:
        raise WorkflowError(f"{path}: {len(raw_steps)} steps; at most {MAX_STEPS}")
    steps = []
    for i, raw in enumerate(raw_steps, 1):
        where = f"{path}: step {i}"
        if isinstance(raw, str):
            raw = {"do": raw}
        if not isinstance(raw, dict):
            raise WorkflowError(f"{where}: a step is a mapping with 'do' (or just the instruction text)")
        bad = sorted(set(map(str, raw)) - STEP_KEYS)
        if bad:
            raise WorkflowError(f"{where}: unknown key {bad[0]!r}; a step has {', '.join(sorted(STEP_KEYS))}")
        do = raw.get("do")
        if not isinstance(do, str) or not do.strip():
            raise WorkflowError(f"{where}: 'do' (the instruction for the fast policy) must be a non-empty text")
        _check_braces(do, where)
        name = str(raw.get("name") or f"step {i}")
        checks = _parse_check(raw.get("check"), where)
        keep = _flag(raw.get("keep", d_keep), "keep", where)
        if raw.get("keep") and not checks:
            raise WorkflowError(f"{where}: 'keep' needs a check: it is the check that must still hold")
        steps.append(Step(i, name, do.strip(), checks,
                          _number(raw.get("timeout", d_timeout), "timeout", where, 0.1),
                          _number(raw.get("retries", d_retries), "retries", where, 0, integer=True),
                          keep and bool(checks)))
    desktop = data.get("desktop") or {}
    if not isinstance(desktop, dict):
        raise WorkflowError(f"{path}: 'desktop' must be a mapping (the virtual scene: scene, title, fields, button)")
    goal = data.get("goal") or ""
    if not isinstance(goal, str):
        raise WorkflowError(f"{path}: 'goal' must be a text")
    return Workflow(str(data.get("name") or Path(path).stem), tuple(steps), path=path, goal=goal,
                    description=str(data.get("description") or ""), desktop=dict(desktop))


def load_workflow(path: str | Path) -> Workflow:
    """Read a workflow file (YAML; JSON is YAML too)."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError(f"{p}: no such workflow file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WorkflowError(f"{p}: cannot be read: {getattr(e, 'strerror', None) or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise WorkflowError(f"{p}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:
        raise WorkflowError(f"{p}: nested too deeply") from None
    return parse_workflow(data, str(p))


def load_rows(path: str | Path, workflow: Workflow | None = None) -> list[dict[str, str]]:
    """The rows of a CSV with a header line; each must fill every variable ``workflow`` uses."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise WorkflowError(f"{p}: empty; a rows file is a CSV with a header line")
            header = [h.strip() for h in reader.fieldnames]
            rows = []
            for n, raw in enumerate(reader, 2):
                if None in raw:
                    raise WorkflowError(f"{p}:{n}: more cells than the header has columns")
                row = {h: (v or "").strip() for h, v in zip(header, raw.values(), strict=True)}
                if not any(row.values()):
                    continue  # a blank line
                rows.append(row)
                if len(rows) > MAX_ROWS:
                    raise WorkflowError(f"{p}: more than {MAX_ROWS} rows")
    except FileNotFoundError:
        raise WorkflowError(f"{p}: no such rows file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WorkflowError(f"{p}: cannot be read: {getattr(e, 'strerror', None) or e}") from None
    except csv.Error as e:
        raise WorkflowError(f"{p}: not a valid CSV: {e}") from None
    if not rows:
        raise WorkflowError(f"{p}: no rows under the header")
    if workflow is not None:
        missing = [v for v in workflow.variables() if v not in header]
        if missing:
            raise WorkflowError(f"{p}: no column {missing[0]!r}, which {workflow.path or workflow.name} uses "
                                f"(columns: {', '.join(header)})")
    return rows


__all__ = ["Check", "Step", "Workflow", "WorkflowError", "load_rows", "load_workflow", "parse_workflow"]
