"""Expand each prompt set into concrete prompt rows (literal list, Jinja cartesian `each`, file, frames, conversations).

A row of a conversation set is the user turn the spec answers (``prompt``) and the turns before it
(``history``: (role, text) pairs, an assistant text of None written by a model).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from behavio.compiler.datafiles import read_records
from behavio.compiler.issues import Issues
from behavio.compiler.sandbox import TemplateProblem, evaluate, render
from behavio.errors import did_you_mean
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
    history: tuple = ()  # earlier turns of a conversation: (role, text) pairs, alternating from a user turn
    subject: str = field(default="", hash=False, compare=False)  # what fills the phrasing: a frame's subject, a
                                                                 # cartesian set's value of its main non-template axis

    @property
    def label(self) -> str:
        """Where the row sits, for messages: ``poodle[3]`` (the 4th prompt of set poodle)."""
        return f"{self.set}[{self.index}]"

    @property
    def key(self) -> str:
        """What makes two rows the same prompt: the normalized text, with the conversation before it."""
        return conversation_key(self.prompt, self.history)


def conversation_key(prompt: str, history: tuple = ()) -> str:
    """Comparison key of a prompt and the turns before it (just the normalized prompt without any)."""
    turns = [f"{role}: {normalize(text) if text is not None else '<written by the model>'}" for role, text in history]
    return "\n".join(turns + [normalize(prompt)]) if history else normalize(prompt)


@dataclass(frozen=True)
class Expanded:
    """A prompt as a set's source gives it, before deduplication."""

    text: str
    fields: dict = field(default_factory=dict)
    phrasing: str = ""   # "" : the prompt is its own phrasing
    history: tuple = ()
    subject: str = ""    # "" : nothing fills the phrasing (a list item, a file row)


def expand_all(spec: Spec, issues: Issues) -> dict[str, list[PromptRow]]:
    """Prompt rows of every set, deduplicated by text (first occurrence wins); what is dropped is reported."""
    return {name: _dedupe(ps.name, _expand(spec, ps, issues), issues) for name, ps in spec.prompts.items()}


def _dedupe(name: str, prompts: list[Expanded], issues: Issues) -> list[PromptRow]:
    seen: set[str] = set()
    rows, empty, repeated = [], 0, 0
    for p in prompts:
        key = conversation_key(p.text, p.history)
        if not normalize(p.text):
            empty += 1
            continue
        if key in seen:
            repeated += 1
            continue
        seen.add(key)
        rows.append(PromptRow(name, len(rows), p.text.strip(), p.fields, p.phrasing or f"own:{key}", p.history, p.subject))
    dropped = [f"{empty} empty prompt(s)" if empty else "", f"{repeated} repeated prompt(s)" if repeated else ""]
    if empty or repeated:
        issues.warn("prompts-deduplicated", ("prompts", name), f"dropped {' and '.join(d for d in dropped if d)} (case and spaces ignored); "
                    f"{len(rows)} distinct prompts remain")
    return rows


def normalize(text: str) -> str:
    """Comparison key for prompts: case- and whitespace-insensitive."""
    return " ".join(text.split()).casefold()


def _expand(spec: Spec, ps: PromptSet, issues: Issues) -> list[Expanded]:
    """Every prompt of a set, with the fields and phrasing it was made from (and the conversation before it)."""
    where = ("prompts", ps.name)
    if isinstance(ps.list, str):
        return [Expanded(t) for t in _texts(ps.list, spec, issues, where + ("list",), "prompt", "a text") or []]
    if ps.list is not None:
        return [Expanded(t) for i, item in enumerate(ps.list) if (t := _render(item, spec.vars, issues, where + ("list", i))) is not None]
    if ps.conversations is not None:
        out = []
        for i, turns in enumerate(ps.conversations):
            found = _render_turns(turns, spec.vars, issues, where + ("conversations", i))
            if found is not None:
                out.append(found)
        return out
    if ps.file is not None:
        return _file_rows(spec, ps, issues)
    if ps.frames is not None:
        return _frames(spec, ps, issues)
    if ps.template is not None or ps.conversation is not None:
        return _cartesian(spec, ps, issues)
    return []


def _render_turns(turns: tuple, ctx: dict, issues: Issues, where: tuple, fields: dict | None = None,
                  phrasing: str = "", subject: str = "") -> Expanded | None:
    """A conversation's turns rendered: the last one is the prompt, the others its history."""
    rendered = []
    for i, (role, text) in enumerate(turns):
        if text is None:
            rendered.append((role, None))
            continue
        value = _render(text, ctx, issues, where + (i, role))
        if value is None:
            return None
        rendered.append((role, value.strip()))
    return Expanded(rendered[-1][1], fields or {}, phrasing, tuple(rendered[:-1]), subject)


def _file_rows(spec: Spec, ps: PromptSet, issues: Issues) -> list[Expanded]:
    """A file's rows: its prompt column, a conversation in it (``messages``), or a template over its columns."""
    where = ("prompts", ps.name)
    out = []
    for rec in read_records(spec.path.parent / ps.file, issues, where + ("file",)):
        ctx = {**spec.vars, "row": rec.fields}
        if ps.conversation is not None:
            found = _render_turns(ps.conversation, ctx, issues, where + ("conversation",), rec.fields)
        elif ps.template is not None:
            text = _render(ps.template, ctx, issues, where + ("template",))
            found = None if text is None else Expanded(text, rec.fields)
        else:
            value = rec.fields.get(ps.field)
            if isinstance(value, list):
                turns, why = _messages(value)
                if why is not None:
                    issues.add(where + ("field",), f"{Path(ps.file).name}:{rec.line}: {ps.field}: {why}")
                    return []
                found = Expanded(turns[-1][1], rec.fields, "", turns[:-1])
            elif isinstance(value, str):
                found = Expanded(value, rec.fields)
            else:
                issues.add(where + ("field",), f"{Path(ps.file).name}:{rec.line} has no text column {ps.field!r}"
                           f"{did_you_mean(ps.field, list(rec.fields))}; columns: {', '.join(rec.fields)}")
                return []
        if found is not None:
            out.append(found)
    return out


def _messages(value: list) -> tuple[tuple, str | None]:
    """(turns, None) from a list of ``{"role", "content"}`` messages, or ((), why it is not a conversation)."""
    from behavio.spec.load import turn_problem

    turns = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            got = m.get("role") if isinstance(m, dict) else type(m).__name__
            return (), (f"message {i + 1} has role {got!r}; a conversation has user and assistant messages (the "
                        "spec's `system` is the system message)")
        content = m.get("content")
        if not (isinstance(content, str) or (content is None and m["role"] == "assistant")):
            return (), f"message {i + 1} ({m['role']}) has no text content (only an assistant's may be null)"
        turns.append((m["role"], content.strip() if isinstance(content, str) else None))
    why = turn_problem([role for role, _ in turns])
    return (tuple(turns), None) if why is None else ((), why)


def _render(source: str, ctx: dict, issues: Issues, where: tuple) -> str | None:
    try:
        return render(source, ctx)
    except TemplateProblem as exc:
        issues.add(where, str(exc))
        return None


def _cartesian(spec: Spec, ps: PromptSet, issues: Issues) -> list[Expanded]:
    """Every combination of the ``each`` values (of ``template``, or of every turn of ``conversation``); the
    phrasing of a prompt is its values of the axes whose values are templates themselves
    (``form: ["What is {{ topic }}?", ...]``), or the one template."""
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
    fills = [var for var in axes if var not in forms and all(isinstance(v, (str, int, float)) for v in axes[var])]
    subject_axis = max(fills, key=lambda var: len(set(map(str, axes[var]))), default=None)  # the first of the largest
    out = []
    for combo in itertools.product(*axes.values()):
        ctx = {**spec.vars, **dict(zip(axes, combo))}
        phrasing = "form:" + "|".join(str(ctx[var]) for var in forms) if forms else f"template:{ps.template or ps.conversation}"
        for var, value in list(ctx.items()):
            if var in axes and isinstance(value, str):
                rendered = _render(value, ctx, issues, where + ("each", var))
                if rendered is None:
                    return []
                ctx[var] = rendered
        fields = {k: ctx[k] for k in axes}
        subject = "" if subject_axis is None else str(ctx[subject_axis])
        if ps.conversation is not None:
            found = _render_turns(ps.conversation, ctx, issues, where + ("conversation",), fields, phrasing, subject)
        else:
            text = _render(ps.template, ctx, issues, where + ("template",))
            found = None if text is None else Expanded(text, fields, phrasing, subject=subject)
        if found is None:
            return []
        out.append(found)
    return out


def _frames(spec: Spec, ps: PromptSet, issues: Issues) -> list[Expanded]:
    """Every frame with its subjects; the phrasing is the frame (shared by every set on the same library)."""
    where = ("prompts", ps.name, "frames")
    library = ps.frame_library
    frames = load_frames(library)
    if frames is None:
        issues.add(where + ("library",), f"no frame library {library!r}; available: {', '.join(frame_libraries())}")
        return []
    frames = kept_frames(ps, frames)
    if not frames:
        issues.add(where + ("exclude",), f"`exclude` leaves no frame of library {library!r}")
        return []
    rendered = _texts(ps.frames["subjects"], spec, issues, where + ("subjects",), "subject", "a text (one phrase)")
    if rendered is None:
        return []
    out = []
    for subject_text, frame in frame_pairs(frames, rendered, ps.frames.get("per_frame")):
        text = _render(frame, {**spec.vars, "subject": subject_text}, issues, where)
        if text is None:
            return []
        out.append(Expanded(text, {"subject": subject_text, "frame": frame}, f"frame:{library}:{frame}", subject=subject_text))
    return out


def _texts(value, spec: Spec, issues: Issues, where: tuple, noun: str, shape: str) -> list[str] | None:
    """``value`` (a list of Jinja texts, or one Jinja expression that evaluates to such a list), each rendered over
    the spec's vars; ``None`` after reporting the first problem at ``where``."""
    if isinstance(value, str):
        try:
            value = evaluate(value, spec.vars)
        except TemplateProblem as exc:
            issues.add(where, str(exc))
            return None
        if not isinstance(value, (list, tuple)):
            hint = f" (a mapping: '{{{{ name | list }}}}' gives its keys)" if isinstance(value, dict) else ""
            issues.add(where, f"expected a list of {noun}s, got {type(value).__name__}{hint}")
            return None
    rendered = []
    for item in value:
        if not isinstance(item, str):
            issues.add(where, f"each {noun} must be {shape}, got a {type(item).__name__}: {str(item)[:60]}")
            return None
        text = _render(item, spec.vars, issues, where)
        if text is None:
            return None
        rendered.append(text)
    return rendered


def kept_frames(ps: PromptSet, frames: list[str]) -> list[str]:
    """The frames of ``ps``'s library it uses: without those its ``exclude`` names, at most its ``limit``."""
    frames = without_excluded(ps, frames)
    return frames[: ps.frames.get("limit", len(frames))]


def without_excluded(ps: PromptSet, frames: list[str]) -> list[str]:
    """``frames`` without those containing a text of ``ps``'s ``frames.exclude`` (case-insensitive)."""
    excluded = [text.casefold() for text in (ps.frames or {}).get("exclude", [])]
    return [f for f in frames if not any(text in f.casefold() for text in excluded)]


def frame_pairs(frames: list[str], subjects: list[str], per_frame: int | None) -> list[tuple[str, str]]:
    """(subject, frame) pairs: every frame with every subject, or with ``per_frame`` subjects each,
    dealt round-robin so the subjects share the frames evenly (frame i gets subjects i*n .. i*n+n-1)."""
    if not per_frame or per_frame >= len(subjects):
        return [(s, f) for s in subjects for f in frames]
    return [(subjects[(i * per_frame + k) % len(subjects)], f) for i, f in enumerate(frames) for k in range(per_frame)]


def frame_subject(library: str) -> str | None:
    """What a frame library's ``subject`` reads as (its ``#% subject: ...`` line): ``noun phrase``, ``verb phrase``..."""
    return _frame_header(library, "subject")


def frame_partners(library: str) -> list[str]:
    """The libraries whose frames ``library``'s subjects read naturally in (its ``#% reframe: a, b`` line): where
    the ``reframed`` check split asks them (:mod:`behavio.compiler.reframe`)."""
    value = _frame_header(library, "reframe")
    return [name.strip() for name in value.split(",") if name.strip()] if value else []


def _frame_header(library: str, key: str) -> str | None:
    """The value of a frame library's ``#% <key>: ...`` line, if it has one."""
    path = templates_dir() / "frames" / f"{library}.txt"
    if not library.replace("_", "").replace("-", "").isalnum() or not path.is_file():
        return None
    for line in path.read_text("utf-8").splitlines():
        if line.startswith(f"#% {key}:"):
            return line.split(":", 1)[1].strip()
    return None


def pair_rows(spec: Spec, library: str, name: str, rows: list[PromptRow], issues: Issues,
              phrased: list[PromptSet]) -> list[PromptRow]:
    """Set ``name``'s subjects in the frames of ``library`` that the sets ``phrased`` use (after their ``exclude``
    and ``limit``; one subject per frame, dealt round-robin): rows the set adds as minimal pairs of another set's
    phrasings (``Kind.paired_prompts``). The set's own ``exclude`` leaves out the frames its subjects read oddly in,
    whichever library they come from."""
    library_frames = load_frames(library) or []
    used = {f for ps in phrased for f in kept_frames(ps, library_frames)}
    frames = [f for f in without_excluded(spec.prompts[name], library_frames) if f in used]
    return _rows_in_frames(spec, library, name, rows, frame_pairs(frames, _subjects(rows), 1), issues)


def extra_rows(spec: Spec, library: str, name: str, rows: list[PromptRow], issues: Issues, start: int) -> list[PromptRow]:
    """Set ``name``'s subjects, each once, in the frames of ``library`` (after the set's ``exclude``), frames dealt
    in turn from ``start`` so that sets asked in the same library take different ones (``Kind.extra_phrasings``)."""
    frames = without_excluded(spec.prompts[name], load_frames(library) or [])
    pairs = [(subject, frames[(start + i) % len(frames)]) for i, subject in enumerate(_subjects(rows))] if frames else []
    return _rows_in_frames(spec, library, name, rows, pairs, issues)


def _subjects(rows: list[PromptRow]) -> list[str]:
    """The distinct subjects of a frame set's rows, in order."""
    return list(dict.fromkeys(r.fields["subject"] for r in rows if "subject" in r.fields))


def _rows_in_frames(spec: Spec, library: str, name: str, rows: list[PromptRow], pairs: list[tuple[str, str]],
                    issues: Issues) -> list[PromptRow]:
    """New rows of set ``name``: each (subject, frame) of ``library`` rendered, leaving out any prompt the set has."""
    seen = {normalize(r.prompt) for r in rows}
    out = []
    for subject, frame in pairs:
        text = render_frame(spec, name, frame, subject, issues)
        if text is None or normalize(text) in seen:
            continue
        seen.add(normalize(text))
        out.append(PromptRow(name, len(rows) + len(out), text, {"subject": subject, "frame": frame},
                             f"frame:{library}:{frame}", subject=subject))
    return out


def render_frame(spec: Spec, name: str, frame: str, subject: str, issues: Issues) -> str | None:
    """``frame`` with ``subject`` (and the spec's vars) filled in, for set ``name``; None (and an error) if it fails."""
    text = _render(frame, {**spec.vars, "subject": subject}, issues, ("prompts", name, "frames"))
    return None if text is None else text.strip()


def frame_libraries() -> list[str]:
    """The names of the frame libraries behavio ships (``behavio/templates/frames/*.txt``)."""
    return sorted(p.stem for p in (templates_dir() / "frames").glob("*.txt"))


def load_frames(library: str) -> list[str] | None:
    """Frames of ``behavio/templates/frames/<library>.txt``: one Jinja frame per non-comment line."""
    if not library.replace("_", "").replace("-", "").isalnum():
        return None
    path = templates_dir() / "frames" / f"{library}.txt"
    if not path.is_file():
        return None
    lines = path.read_text("utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
