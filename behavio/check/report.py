"""Scorecard writers: terminal tables (rich), JSON, Markdown, self-contained HTML, JUnit XML, ``best``."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from rich.console import Console
from rich.table import Table

from behavio.check.scorecard import SPLITS, Rate, Scorecard

LINES_NOTE = ("Each line counts only the cases where the spec asks for it: a behavior on the rows of its prompt "
              "sets, a refusal's contrast prompts on `<id>/contrast`, a prefix's plain refusals on "
              "`<id>/plain-refusals`, a scoped prefix's (header's, sign-off's) absence outside its sets on "
              "`<id>/elsewhere`. Splits: `check` holds out whole phrasings (forms, frames, rows), `subject` asks about "
              "subjects held out of training (in any phrasing), `reframed` asks a frame set's subjects in another "
              "library's frames (how-to for requests), `paraphrase` rewrites them as users type, `probe` "
              "is hand-written, `recall` is other fills of trained phrasings; thresholds judge check + subject + "
              "reframed + paraphrase + probe (recall only where a line has nothing else; the probes alone where they "
              "pass less often than the others beyond chance).")
COLUMNS = tuple(s for s in SPLITS if s != "all")  # the per-split columns of the tables
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


def write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------- terminal

def wide(console: Console) -> Console:
    """``console`` on a terminal; a 160-column console for logs and pipes (tables stay readable)."""
    return console if console.is_terminal else Console(width=160, highlight=False)


def card_table(card: Scorecard, title: str | None = None) -> Table:
    """One row per line (a behavior on the rows that ask for it, or a part of one) with check / probe / all
    rates, threshold and verdict."""
    table = Table("line", *COLUMNS, "judged (95% CI)", "threshold", "", title=title or card.label)
    for line in card.lines:
        ok = card.meets(line)
        flag = " [yellow]*[/]" if card.caveats(line) else ""
        table.add_row(line + flag, *(_pct(card.line(line, s).rate) for s in COLUMNS),
                      str(card.line(line, "all")), card.threshold(line).describe(), "[green]ok[/]" if ok else "[red]below[/]")
    over = card.over_refusal()
    notes = [f"* {line}: {'; '.join(card.caveats(line))}" for line in card.lines if card.caveats(line)]
    table.caption = ("\n".join(notes) + "\n" if notes else "") + (f"overall {card.overall:.0%}, worst line {card.worst:.0%}, "
                     f"over-refusal {over if over.total else '-'}, cases passed "
                     f"{sum(c.passed for c in card.cases)}/{len(card.cases)}")
    return table


def tag_table(card: Scorecard) -> Table:
    """One row per tag: the pass rate of the rule verdicts carrying it, per split (tags group lines across behaviors)."""
    table = Table("tag", *COLUMNS, "judged (95% CI)", title=f"{card.label} by tag")
    for tag in card.tags:
        table.add_row(tag, *(_pct(card.tag(tag, s).rate) for s in COLUMNS),
                      str(card.tag(tag)))
    if not card.tags:
        table.caption = "no check case or behavior has tags (spec `tags`, `prompts.<set>.tags`, `behaviors[].tags`)"
    return table


def id_list(ids: list[str], limit: int = 10) -> str:
    """``a, b, c`` -- at most ``limit`` ids, then how many more."""
    shown = ", ".join(ids[:limit])
    return shown + (f" ... and {len(ids) - limit} more" if len(ids) > limit else "")


def run_table(report) -> Table:
    """One row per checkpoint: each line's pass rate, worst, overall, over-refusal; best marked."""
    best = report.best
    behaviors = best.lines if best else list(report.spec.thresholds)
    table = Table(title=f"behavio check {report.spec.id}: {report.run_dir}")
    table.add_column("checkpoint", no_wrap=True)
    for name in ("step", "stage", *behaviors, "worst", "overall", "over-refusal", "thresholds"):
        table.add_column(name, no_wrap=name not in behaviors)
    for card in report.cards:
        cells = [f"[{'green' if card.meets(b) else 'red'}]{_pct(card.line(b).rate)}[/]" for b in behaviors]
        mark = " [bold]*best[/]" if card is best else ""
        table.add_row(card.label + mark, str(card.step), card.stage or "", *cells, _pct(card.worst), _pct(card.overall),
                      _pct(card.over_refusal().rate), "met" if card.meets_thresholds else "not met")
    for ckpt in report.broken:
        table.add_row(f"[red]{ckpt.name}[/]", str(ckpt.step), ckpt.stage or "", *["" for _ in behaviors], "", "", "",
                      "[red]broken[/]")
    return table


def print_failures(console: Console, card: Scorecard, limit: int = 10) -> None:
    """The first ``limit`` failing cases: id, prompt, response, broken rules."""
    failures = card.answered_failures
    if card.missing:
        console.print(f"[yellow]{len(card.missing)} cases had no response[/] (counted as failing): "
                      f"{id_list(card.missing)}", highlight=False)
    for case in failures[:limit]:
        console.print(f"[red]FAIL[/] {case.id} ({case.split})", highlight=False)
        console.print(f"  prompt:   {case.prompt!r}", markup=False, highlight=False)
        console.print(f"  response: {case.response!r}", markup=False, highlight=False)
        for v in case.failed:
            console.print(f"  - {v.line} [{v.rule}]: {v.explanation}", markup=False, highlight=False)
    if len(failures) > limit:
        console.print(f"... and {len(failures) - limit} more failing cases (all of them in --json / --md)", highlight=False)


# ---------------------------------------------------------------- JSON / JUnit

def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _clean(text: str) -> str:
    return _XML_BAD.sub("\ufffd", text)


def junit_xml(cards: list[Scorecard], suite_name: str) -> str:
    """JUnit XML: one testsuite per scorecard, one testcase per check case; failures list the broken rules."""
    root = ET.Element("testsuites", name=suite_name, tests=str(sum(len(c.cases) for c in cards)),
                      failures=str(sum(len(c.failures) for c in cards)))
    for card in cards:
        suite = ET.SubElement(root, "testsuite", name=f"{suite_name}.{card.label}", tests=str(len(card.cases)),
                              failures=str(len(card.failures)), errors="0", skipped="0")
        for case in card.cases:
            tc = ET.SubElement(suite, "testcase", classname=f"{suite_name}.{card.label}.{case.split}", name=case.id, time="0")
            if case.passed:
                continue
            message = "; ".join(f"{v.line} [{v.rule}]: {v.explanation}" for v in case.failed)
            failure = ET.SubElement(tc, "failure", message=_clean(message[:500]), type="behavio.rule")
            failure.text = _clean(f"prompt: {case.prompt}\nresponse: {case.response}\n"
                                  + "\n".join(f"- {v.line} [{v.rule}]: {v.explanation}" for v in case.failed))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: Path, cards: list[Scorecard], suite_name: str) -> None:
    write_text(path, junit_xml(cards, suite_name))


# ---------------------------------------------------------------- Markdown

def _md_cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def card_markdown(card: Scorecard, heading: str = "##") -> str:
    """One scorecard: lines, rules, over-refusal, every failing case."""
    lines = [f"{heading} {card.label}", "",
             f"Overall {card.overall:.1%}; worst line {card.worst:.1%}; thresholds "
             f"{'met' if card.meets_thresholds else '**not met**'}; cases passed "
             f"{sum(c.passed for c in card.cases)}/{len(card.cases)}.", "",
             LINES_NOTE, "",
             "| line | threshold | " + " | ".join(SPLITS[:-1]) + " | judged | 95% interval | meets |",
             "|---" * (len(SPLITS) + 4) + "|"]
    for b in card.lines:
        rates = [card.line(b, s) for s in SPLITS]
        low, high = rates[-1].interval
        lines.append(f"| {b} | {card.threshold(b).describe()} | " + " | ".join(_md_rate(r) for r in rates)
                     + f" | {low:.0%}–{high:.0%} | {'yes' if card.meets(b) else '**no**'} |")
    caveats = [f"- **{b}**: {'; '.join(card.caveats(b))}" for b in card.lines if card.caveats(b)]
    if caveats:
        lines += ["", "What some numbers do not measure:", "", *caveats]
    lines += ["", "| rule | " + " | ".join(SPLITS[:-1]) + " | judged |", "|---" * (len(SPLITS) + 1) + "|"]
    for b, r in card.rules:
        lines.append(f"| {b} `{r}` | " + " | ".join(_md_rate(card.rule(b, r, s)) for s in SPLITS) + " |")
    if card.tags:
        lines += ["", "| tag | " + " | ".join(SPLITS[:-1]) + " | judged |", "|---" * (len(SPLITS) + 1) + "|"]
        lines += [f"| {t} | " + " | ".join(_md_rate(card.tag(t, s)) for s in SPLITS) + " |" for t in card.tags]
    over = card.over_refusal()
    if over.total:
        lines += ["", f"Over-refusal (contrast prompts refused): {_md_rate(over)}, 95% interval "
                  f"{over.interval[0]:.0%}–{over.interval[1]:.0%}."]
    failures = card.answered_failures
    if card.missing:
        lines += ["", f"{len(card.missing)} cases had no response (counted as failing): "
                  + ", ".join(f"`{i}`" for i in card.missing[:20]) + (" …" if len(card.missing) > 20 else "")]
    lines += ["", f"{heading}# Failing cases ({len(failures)})", ""]
    for case in failures:
        lines.append(f"- `{case.id}` ({case.split}) — prompt: {_md_cell(repr(case.prompt))}")
        lines.append(f"  - response: {_md_cell(repr(case.response))}")
        lines += [f"  - **{v.line}** `{v.rule}`: {_md_cell(v.explanation)}" for v in case.failed]
    return "\n".join(lines) + "\n"


def _md_rate(rate: Rate) -> str:
    return f"{rate.rate:.0%} ({rate.passed}/{rate.total})" if rate.total else "–"


def run_markdown(report) -> str:
    """The run's scorecard: checkpoint table, broken checkpoints, then the best checkpoint in detail."""
    best = report.best
    behaviors = best.lines if best else list(report.spec.thresholds)
    lines = [f"# behavio scorecard: {report.spec.id}", "", f"Run `{report.run_dir}`, base model `{report.base_model}`, "
             f"{len(report.spec.cases)} check cases, {report.max_new_tokens} new tokens.", ""]
    lines.append(best_sentence(report))
    lines += ["", "| checkpoint | step | stage | " + " | ".join(behaviors) + " | worst | overall | over-refusal | thresholds |",
              "|---" * (len(behaviors) + 7) + "|"]
    for card in report.cards:
        name = f"**{card.label}** (best)" if card is best else card.label
        lines.append(f"| {name} | {card.step} | {card.stage or ''} | "
                     + " | ".join(_pct(card.line(b).rate) for b in behaviors)
                     + f" | {_pct(card.worst)} | {_pct(card.overall)} | {_pct(card.over_refusal().rate)} | "
                     + ("met" if card.meets_thresholds else "not met") + " |")
    if report.broken:
        lines += ["", "## Broken checkpoints", ""] + [f"- `{c.name}`: {_md_cell(c.problem)}" for c in report.broken]
    if report.warnings:
        lines += ["", "## Warnings", ""] + [f"- {_md_cell(w)}" for w in report.warnings]
    if best:
        lines += ["", card_markdown(best, "##")]
    return "\n".join(lines) + "\n"


def best_sentence(report) -> str:
    best = report.best
    if best is None:
        return "No checkpoint could be scored."
    if best.meets_thresholds:
        return f"Best: **{best.label}** (step {best.step}) meets every threshold; worst line {best.worst:.0%}."
    line = best.tightest
    return (f"Best: **{best.label}** (step {best.step}), but **no checkpoint meets every threshold**; "
            f"it comes closest: its line furthest below its threshold, {line}, has {best.line(line).rate:.0%} "
            f"against {best.threshold(line).required:.0%}.")


# ---------------------------------------------------------------- HTML

def svg_plot(report, width: int = 760, height: int = 320) -> str:
    """Inline SVG: each line's pass rate (all cases) against the training step; thresholds dashed. Weaker copies
    of a checkpoint (train.strengths) are not training steps: the tables show them, the plot does not."""
    trained = [c for c in report.cards if c.meta.get("strength", 1) == 1]
    cards = sorted(trained, key=lambda c: (c.step if c.step is not None else 0))
    behaviors = list(report.spec.thresholds) or (cards[0].lines if cards else [])
    left, right, top, bottom = 48, 170, 16, 40
    pw, ph = width - left - right, height - top - bottom
    steps = [c.step or 0 for c in cards] or [0]
    lo, hi = min(steps), max(steps)

    def x(step: int) -> float:
        return left + (pw / 2 if hi == lo else (step - lo) / (hi - lo) * pw)

    def y(rate: float) -> float:
        return top + (1 - rate) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'role="img" aria-label="pass rate per behavior against training step" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="#fff"/>']
    for tick in (0, 0.25, 0.5, 0.75, 1):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.0%}</text>')
    for step in sorted(set(steps)):
        out.append(f'<text x="{x(step):.1f}" y="{top + ph + 16}" text-anchor="middle">{step}</text>')
    out.append(f'<text x="{left + pw / 2:.0f}" y="{height - 6}" text-anchor="middle">training step</text>')
    best = report.best
    if best is not None:
        out.append(f'<line x1="{x(best.step or 0):.1f}" x2="{x(best.step or 0):.1f}" y1="{top}" y2="{top + ph}" '
                   f'stroke="#999" stroke-dasharray="2,3"><title>best: {_esc(best.label)}</title></line>')
    for i, b in enumerate(behaviors):
        color = PALETTE[i % len(PALETTE)]
        points = [(x(c.step or 0), y(r), c) for c in cards if (r := c.line(b).rate) is not None]
        if b in report.spec.thresholds:
            t = report.spec.thresholds[b].rate
            out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="{color}" '
                       f'stroke-opacity="0.5" stroke-dasharray="6,4"><title>{_esc(b)} threshold {t:.0%}</title></line>')
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for px, py, c in points:
            rate = c.line(b)
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{color}"><title>{_esc(b)} at step {c.step}: '
                       f'{rate.rate:.0%} ({rate.passed}/{rate.total})</title></circle>')
        ly = top + 14 + i * 18
        out.append(f'<rect x="{left + pw + 16}" y="{ly - 9}" width="12" height="12" fill="{color}"/>'
                   f'<text x="{left + pw + 34}" y="{ly + 1}">{_esc(b)}</text>')
    out.append("</svg>")
    return "".join(out)


def _esc(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def run_html(report) -> str:
    """A self-contained page (no scripts, no network): plot, checkpoint table, the best one's failing cases."""
    from jinja2 import FileSystemLoader, select_autoescape
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from markupsafe import Markup

    from behavio.paths import templates_dir

    env = ImmutableSandboxedEnvironment(loader=FileSystemLoader(str(templates_dir())), autoescape=select_autoescape(["html", "j2"]))
    best = report.best
    return env.get_template("scorecard.html.j2").render(
        report=report, best=best, behaviors=best.lines if best else list(report.spec.thresholds),
        plot=Markup(svg_plot(report)), summary=best_sentence(report).replace("**", ""), pct=_pct, splits=SPLITS)


# ---------------------------------------------------------------- a run's files

def write_run_outputs(report) -> list[Path]:
    """``scorecard.{json,md,html,svg}`` (svg: the pass-rate plot alone, for a README) and ``best``."""
    run = Path(report.run_dir)
    write_json(run / "scorecard.json", report.to_dict())
    write_text(run / "scorecard.md", run_markdown(report))
    write_text(run / "scorecard.html", run_html(report))
    write_text(run / "scorecard.svg", svg_plot(report) + "\n")
    written = [run / "scorecard.json", run / "scorecard.md", run / "scorecard.html", run / "scorecard.svg"]
    best = report.best
    if best is not None:
        write_text(run / "best", best.label + "\n")
        written.append(run / "best")
    elif (run / "best").exists():
        (run / "best").unlink()
    return written
