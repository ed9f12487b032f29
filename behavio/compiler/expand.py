"""Expand each prompt set into concrete prompt rows (literal list, Jinja cartesian `each`, file, frames)."""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from behavio.compiler.datafiles import read_records
from behavio.compiler.issues import Issues
from behavio.compiler.sandbox import TemplateProblem, evaluate, render
from behavio.paths import templates_dir
from behavio.spec.model import PromptSet, Spec

MAX_ROWS_PER_SET = 200_000


@dataclass(frozen=True)
class PromptRow:
    """One concrete prompt of a prompt set, with the fields it was made from."""

    set: str
    index: int
    prompt: str
    fields: dict = field(default_factory=dict, hash=False, compare=False)
    phrasing: str = ""  # the phrasing this prompt is a fill of: a form of `each`, a frame, or its own text

    @property
    def label(self) -> str:
        """Where the row sits, for messages: ``poodle[3]`` (the 4th prompt of set poodle)."""
        return f"{self.set}[{self.index}]"


def expand_all(spec: Spec, issues: Issues) -> dict[str, list[PromptRow]]:
    """Prompt rows of every set, deduplicated by text (first occurrence wins); what is dropped is reported."""
    return {name: _dedupe(ps.name, _expand(spec, ps, issues), issues) for name, ps in spec.prompts.items()}


def _dedupe(name: str, prompts: list[tuple[str, dict, str]], issues: Issues) -> list[PromptRow]:
    seen: set[str] = set()
    rows, empty, repeated = [], 0, 0
    for text, fields, phrasing in prompts:
        key = normalize(text)
        if not key:
            empty += 1
            continue
        if key in seen:
            repeated += 1
            continue
        seen.add(key)
        rows.append(PromptRow(name, len(rows), text.strip(), fields, phrasing or f"own:{key}"))
    dropped = [f"{empty} empty prompt(s)" if empty else "", f"{repeated} repeated prompt(s)" if repeated else ""]
    if empty or repeated:
        issues.warn("prompts-deduplicated", ("prompts", name), f"dropped {' and '.join(d for d in dropped if d)} (case and spaces ignored); "
                    f"{len(rows)} distinct prompts remain")
    return rows


def normalize(text: str) -> str:
    """Comparison key for prompts: case- and whitespace-insensitive."""
    return " ".join(text.split()).casefold()


def _expand(spec: Spec, ps: PromptSet, issues: Issues) -> list[tuple[str, dict, str]]:
    """(prompt, fields, phrasing) of every prompt of a set; "" as the phrasing: the prompt is its own."""
    where = ("prompts", ps.name)
    if ps.list is not None:
        return [(t, {}, "") for i, item in enumerate(ps.list) if (t := _render(item, spec.vars, issues, where + ("list", i))) is not None]
    if ps.file is not None:
        records = read_records(spec.path.parent / ps.file, issues, where + ("file",))
        out = []
        for rec in records:
            if ps.template is not None:
                text = _render(ps.template, {**spec.vars, "row": rec.fields}, issues, where + ("template",))
            else:
                text = rec.fields.get(ps.field)
                if not isinstance(text, str):
                    issues.add(where + ("field",), f"{Path(ps.file).name}:{rec.line} has no text column {ps.field!r}"
                               f"{_did_you_mean(ps.field, list(rec.fields))}; columns: {', '.join(rec.fields)}")
                    return []
            if text is not None:
                out.append((text, rec.fields, ""))
        return out
    if ps.frames is not None:
        return _frames(spec, ps, issues)
    if ps.template is not None:
        return _cartesian(spec, ps, issues)
    return []


def _render(source: str, ctx: dict, issues: Issues, where: tuple) -> str | None:
    try:
        return render(source, ctx)
    except TemplateProblem as exc:
        issues.add(where, str(exc))
        return None


def _cartesian(spec: Spec, ps: PromptSet, issues: Issues) -> list[tuple[str, dict, str]]:
    """Every combination of the ``each`` values; the phrasing of a prompt is its values of the axes whose
    values are templates themselves (``form: ["What is {{ topic }}?", ...]``), or the one template."""
    where = ("prompts", ps.name)
    axes: dict[str, list] = {}
    for var, values in (ps.each or {}).items():
        if isinstance(values, str):
            try:
                values = evaluate(values, spec.vars)
            except TemplateProblem as exc:
                issues.add(where + ("each", var), str(exc))
                continue
            if not isinstance(values, (list, tuple, range)) or isinstance(values, str):
                issues.add(where + ("each", var), f"expected a list of values, got {type(values).__name__} {str(values)[:40]!r}")
                continue
        axes[var] = list(values)
    if len(axes) != len(ps.each or {}):
        return []
    total = 1
    for values in axes.values():
        total *= max(len(values), 1)
    if total > MAX_ROWS_PER_SET:
        issues.add(where + ("each",), f"expands to {total} prompts; the limit is {MAX_ROWS_PER_SET}")
        return []
    forms = [var for var, values in axes.items() if any(isinstance(v, str) and ("{{" in v or "{%" in v) for v in values)]
    out = []
    for combo in itertools.product(*axes.values()):
        ctx = {**spec.vars, **dict(zip(axes, combo))}
        phrasing = "form:" + "|".join(str(ctx[var]) for var in forms) if forms else f"template:{ps.template}"
        for var, value in list(ctx.items()):
            if var in axes and isinstance(value, str):
                rendered = _render(value, ctx, issues, where + ("each", var))
                if rendered is None:
                    return []
                ctx[var] = rendered
        text = _render(ps.template, ctx, issues, where + ("template",))
        if text is None:
            return []
        out.append((text, {k: ctx[k] for k in axes}, phrasing))
    return out


def _frames(spec: Spec, ps: PromptSet, issues: Issues) -> list[tuple[str, dict, str]]:
    """Every frame with its subjects; the phrasing is the frame (shared by every set on the same library)."""
    where = ("prompts", ps.name, "frames")
    library = ps.frame_library
    frames = load_frames(library)
    if frames is None:
        available = sorted(p.stem for p in (templates_dir() / "frames").glob("*.txt"))
        issues.add(where + ("library",), f"no frame library {library!r}; available: {', '.join(available)}")
        return []
    excluded = [text.casefold() for text in ps.frames.get("exclude", [])]
    frames = [f for f in frames if not any(text in f.casefold() for text in excluded)]
    if not frames:
        issues.add(where + ("exclude",), f"`exclude` leaves no frame of library {library!r}")
        return []
    frames = frames[: ps.frames.get("limit", len(frames))]
    subjects = ps.frames["subjects"]
    if isinstance(subjects, str):
        try:
            subjects = evaluate(subjects, spec.vars)
        except TemplateProblem as exc:
            issues.add(where + ("subjects",), str(exc))
            return []
        if not isinstance(subjects, (list, tuple)):
            issues.add(where + ("subjects",), f"expected a list of subjects, got {type(subjects).__name__}")
            return []
    rendered = []
    for subject in subjects:
        subject_text = _render(subject, spec.vars, issues, where + ("subjects",))
        if subject_text is None:
            return []
        rendered.append(subject_text)
    out = []
    for subject_text, frame in frame_pairs(frames, rendered, ps.frames.get("per_frame")):
        text = _render(frame, {**spec.vars, "subject": subject_text}, issues, where)
        if text is None:
            return []
        out.append((text, {"subject": subject_text, "frame": frame}, f"frame:{library}:{frame}"))
    return out


def frame_pairs(frames: list[str], subjects: list[str], per_frame: int | None) -> list[tuple[str, str]]:
    """(subject, frame) pairs: every frame with every subject, or with ``per_frame`` subjects each,
    dealt round-robin so the subjects share the frames evenly (frame i gets subjects i*n .. i*n+n-1)."""
    if not per_frame or per_frame >= len(subjects):
        return [(s, f) for s in subjects for f in frames]
    return [(subjects[(i * per_frame + k) % len(subjects)], f) for i, f in enumerate(frames) for k in range(per_frame)]


def load_frames(library: str) -> list[str] | None:
    """Frames of ``behavio/templates/frames/<library>.txt``: one Jinja frame per non-comment line."""
    if not library.replace("_", "").replace("-", "").isalnum():
        return None
    path = templates_dir() / "frames" / f"{library}.txt"
    if not path.is_file():
        return None
    lines = path.read_text("utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
