"""The body of every ``behavio`` command; behavio/cli.py only declares the options and calls these.

Each function prints to the given consoles and returns the process exit code; user errors are
raised as BehavioError (the CLI prints them and exits 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from behavio.errors import BehavioError, SpecError


def _say(console: Console, quiet: bool):
    if quiet:
        return lambda _: None
    return lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)


def _plain(console: Console, line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def report_warnings(err: Console, warnings: list, strict: bool) -> list[str]:
    """Print each warning as ``warning[name]: ...``; under ``strict`` return them as errors instead."""
    from behavio.spec.warning_names import shown

    if strict:
        return [shown(w, strict=True) + f" (--strict; accept it with ignore_warnings: [{w.name}])" for w in warnings]
    for warning in warnings:
        _plain(err, shown(warning))
    return []


def spec_files(paths: list[Path]) -> list[Path]:
    """Spec files named directly or found (*.yaml, *.yml) in the given folders, sorted."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml") and q.is_file())
        elif p.exists():
            found.append(p)
        else:
            raise BehavioError(f"{p}: no such file or folder")
    if not found:
        raise BehavioError(f"no spec files (*.yaml) in {', '.join(map(str, paths))}")
    return found


# ---------------------------------------------------------------- spec commands

def compile_command(paths: list[Path], *, out_dir: Path, fill: bool, base_model: str, quiet: bool,
                    out: Console, err: Console, strict: bool = False) -> int:
    """Compile specs into ``out_dir/<spec>/``; every spec's errors are reported together. ``strict``: a spec with
    warnings is an error and is not written."""
    from behavio.compiler.build import compile_spec
    from behavio.compiler.output import write_compiled

    failed: list[str] = []
    accepted: list[tuple[str, list[str]]] = []
    table = Table(title="behavio compile", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True,
                  caption="checks: every check case, the probes among them; warn: warnings printed above, +N accepted by "
                          "name (ignore_warnings)")
    table.add_column("spec", no_wrap=True)
    for name in ("sft", "val", "dpo", "checks", "probes", "pending", "warn", "output"):
        table.add_column(name, no_wrap=True, justify="left")
    for path in spec_files(paths):
        try:
            compiled = compile_spec(path)
        except SpecError as exc:
            failed += [str(i) for i in exc.issues]
            continue
        refused = report_warnings(err, compiled.warnings, strict)
        if refused:
            failed += refused
            continue
        target, changed = write_compiled(compiled, out_dir)
        if fill:
            from behavio.fill import fill_compiled_dir

            fill_compiled_dir(target, base_model, quiet=quiet)
        if compiled.accepted:
            accepted.append((compiled.spec.id, compiled.accepted))
        c = compiled.manifest["counts"]
        n_probe = sum(probe_counts(compiled.manifest["composition"]["prompt_sets"]).values())
        table.add_row(compiled.spec.id, str(c["sft"]), str(c["sft_val"]), str(c["dpo"]), str(c["checks"]),
                      str(n_probe), str(c["pending"]), warnings_cell(compiled), "written" if changed else "unchanged")
    if not quiet and table.row_count:
        out.print(table)
        for spec_id, names in accepted:
            out.print(f"{spec_id}: accepted by name: {', '.join(names)}", highlight=False, markup=False)
    if failed:
        raise BehavioError("\n".join(failed))
    return 0


def warnings_cell(compiled) -> str:
    """How many warnings a compile printed, and ``+N`` for those the spec accepts by name (ignore_warnings)."""
    return str(len(compiled.warnings)) + (f" +{len(compiled.accepted)}" if compiled.accepted else "")


def validate_command(paths: list[Path], *, out: Console, err: Console, strict: bool = False) -> int:
    """Report every error (and warning; errors too under ``strict``) in the specs; write nothing."""
    from behavio.compiler.build import compile_spec

    failed: list[str] = []
    held: list[str] = []
    files = spec_files(paths)
    for path in files:
        try:
            compiled = compile_spec(path)
            failed += report_warnings(err, compiled.warnings, strict)
            held += held_subjects_line(compiled.spec.id, compiled.manifest.get("held_out_subjects") or [])
            held += probes_line(compiled.spec.id, compiled.manifest["composition"]["prompt_sets"])
        except SpecError as exc:
            failed += [str(i) for i in exc.issues]
    if not failed:
        out.print(f"{len(files)} spec(s) valid", highlight=False)
    for line in held:  # said under --strict too: the subjects are what a user fixing a warning needs to see
        out.print(line, highlight=False, markup=False)
    if failed:
        raise BehavioError("\n".join(failed))
    return 0


def held_subjects_line(spec_id: str, subjects: list[str]) -> list[str]:
    """What ``validate`` says of a spec's subjects held out of training (``split.subjects``), if it has any."""
    if not subjects:
        return []
    return [f"{spec_id}: {len(subjects)} subject(s) held out of training, asked only by the check's subject split "
            f"(split.subjects): {', '.join(repr(s) for s in subjects)}. A boundary case you need trained can be "
            "listed twice, worded two ways (split.subjects: 0 holds none out); adding a subject can change which are "
            "held out, so validate again after."]


def probe_counts(prompt_sets: dict) -> dict[str, int]:
    """Probes per prompt set that has any, from the manifest's ``composition.prompt_sets``."""
    return {name: sets["probe"]["rows"] for name, sets in prompt_sets.items() if sets["probe"]["rows"]}


def probes_line(spec_id: str, prompt_sets: dict) -> list[str]:
    """What ``validate`` says of a spec's probes: how many reached each prompt set (the rules they are scored by)."""
    counts = probe_counts(prompt_sets)
    if not counts:
        return []
    each = ", ".join(f"{name} {n}" for name, n in counts.items())
    return [f"{spec_id}: {sum(counts.values())} probes, scored by the rules of their prompt set: {each}."]


def schema_command(*, markdown: bool, rules: bool = False) -> int:
    """The spec's JSON Schema (every registered kind), the spec reference, or the rules reference in Markdown."""
    if rules:
        from behavio.kinds.reference import rules_markdown

        sys.stdout.write(rules_markdown())
        return 0
    if markdown:
        from behavio.spec.reference import reference_markdown

        sys.stdout.write(reference_markdown())
        return 0
    from behavio.spec.schema import spec_schema

    sys.stdout.write(json.dumps(spec_schema(), indent=2) + "\n")
    return 0


def frames_command(library: str | None, *, subject: str | None, out: Console) -> int:
    """The frame libraries (name, what their subject reads as, frame count), or one library's frames, each with
    ``subject`` put in when given (to read a subject in every phrasing before training on it)."""
    from behavio.compiler.expand import frame_libraries, frame_partners, frame_subject, load_frames
    from behavio.compiler.sandbox import TemplateProblem, render

    names = frame_libraries()
    if library is None:
        table = Table("library", "subject reads as", "frames", "reframed in")
        for name in names:
            table.add_row(name, frame_subject(name) or "-", str(len(load_frames(name) or [])),
                          ", ".join(frame_partners(name)) or "-")
        out.print(table)
        _plain(out, "A refusal puts its contrast sets' subjects in the frames of every library its refused sets use that "
                    "reads the subject the same way, so a contrast subject must read in all of them.")
        _plain(out, "With split.reframed (off by default) the `reframed` check split asks a set's subjects in the "
                    "untrained frames of the libraries in its `reframed in` column, so its subjects should read there too.")
        _plain(out, "behavio frames LIBRARY --subject 'my invoice' prints every frame with that subject in it")
        return 0
    frames = load_frames(library)
    if frames is None:
        raise BehavioError(f"no frame library {library!r}; available: {', '.join(names)}")
    _plain(out, f"# {library}: {len(frames)} frames; the subject reads as a {frame_subject(library) or 'phrase'}")
    for frame in frames:
        try:
            _plain(out, frame if subject is None else render(frame, {"subject": subject}))
        except TemplateProblem as exc:
            raise BehavioError(f"frame {frame!r} of {library!r}: {exc}") from None
    return 0


def init_command(name: str, *, directory: Path, force: bool, out: Console) -> int:
    from behavio.starter import write_starter

    path = write_starter(name, directory, force=force)
    out.print(f"wrote {path} (and {directory / 'behavio.schema.json'} for editors); next: behavio compile {path}",
              highlight=False)
    return 0


# ---------------------------------------------------------------- check

def check_command(spec: Path, *, model: str | None, all_checkpoints: Path | None, responses: Path | None,
                  junit: Path | None, json_out: Path | None, md_out: Path | None, failures: int,
                  generation: dict, out: Console, err: Console, served: dict | None = None, tags: list[str] = (),
                  behaviors: list[str] = (), sets: list[str] = (), by_tag: bool = False, strict: bool = False) -> int:
    """Score a model, every checkpoint of a run, a served model, or saved responses (the cases the filters keep).
    0: thresholds met, 1: not, 2: bad input (or, with ``strict``, a warning).
    ``served``: the --endpoint options (endpoint, api_key_env, concurrency, timeout)."""
    from behavio.check import cases, report
    from behavio.check.select import select_cases

    served = served or {}
    if sum(s is not None for s in (model, all_checkpoints, responses)) != 1:
        raise BehavioError("check: give exactly one of --model, --all-checkpoints, --responses"
                           + (" (with --endpoint: --model, the name the server serves)" if served.get("endpoint") else ""))
    if served.get("api_key_env") is not None and served.get("endpoint") is None:
        raise BehavioError("check: --api-key-env goes with --endpoint")
    cs = cases.load_check_spec(spec)
    refused = report_warnings(err, cs.warnings, strict)
    if refused:
        raise BehavioError("\n".join(refused))
    every_case = cs.cases  # a responses file may answer cases the filters leave out
    cs = select_cases(cs, tags=list(tags), behaviors=list(behaviors), sets=list(sets))
    if served.get("endpoint") is not None:
        from behavio.check.served import check_endpoint_options

        log = (lambda m: None) if generation["quiet"] else (lambda m: _plain(err, m))
        card = check_endpoint_options(cs, model=model, max_new_tokens=generation["max_new_tokens"],
                                      use_cache=generation["use_cache"], quiet=generation["quiet"], log=log, **served)
        cards, data, markdown, code = _one_card(cs, card, failures, out)
        warned = []
    elif all_checkpoints is not None:
        cards, data, markdown, code, warned = _check_all(cs, all_checkpoints, generation, failures, out, err)
    else:
        cards, data, markdown, code, warned = _check_one(cs, model, responses, generation, failures, out, err, every_case)
    shown = cards[0] if len(cards) == 1 else next((c for c in cards if c.label == data.get("best")), None)
    if by_tag and shown is not None:
        report.wide(out).print(report.tag_table(shown))
    for name, line in warned:
        _plain(err, f"{'error' if strict else 'warning'}[{name}]: {line}")
    if strict and warned:
        code = 2
    if md_out:
        report.write_text(md_out, markdown)
    if json_out:
        report.write_json(json_out, data)
    if junit:
        report.write_junit(junit, cards, cs.id)
    return code


def _check_all(cs, run_dir: Path, generation: dict, failures: int, out: Console, err: Console):
    """Every checkpoint of a run: table, best, run files; broken checkpoints listed on stderr (exit 2)."""
    from behavio.check import engine, report

    log = (lambda m: None) if generation["quiet"] else (lambda m: err.print(m, markup=False, highlight=False))
    run = engine.check_checkpoints(cs, run_dir, log=log, **generation)
    written = report.write_run_outputs(run)
    report.wide(out).print(report.run_table(run))
    out.print(report.best_sentence(run).replace("**", ""), highlight=False)
    if run.best and failures:
        report.print_failures(out, run.best, failures)
    out.print(f"wrote {', '.join(str(p) for p in written)}; generated {run.generated} answers", highlight=False)
    for ckpt in run.broken:
        _plain(err, f"broken checkpoint: {ckpt.problem}")
    warned = [("spec-changed", w) for w in run.warnings if "spec-changed" not in cs.ignore_warnings]
    return run.cards, run.to_dict(), report.run_markdown(run), run.exit_code, warned


def _check_one(cs, model: str | None, responses: Path | None, generation: dict, failures: int, out: Console,
               err: Console, every_case: list | None = None):
    """One model (or adapter dir), or saved responses (read against ``every_case``): table and failing cases."""
    from behavio.check import engine, report
    from behavio.check.scoring import score_cases

    warned = []
    if responses is not None:
        from behavio.check.responses import read_responses

        answers = read_responses(responses, every_case or cs.cases)
        card = score_cases(cs.cases, answers, cs.thresholds, label=responses.name)
        if card.missing and "responses-missing" not in cs.ignore_warnings:
            warned.append(("responses-missing", f"{responses}: no response for {len(card.missing)} of {len(card.cases)} "
                           f"check cases (counted as failing): {report.id_list(card.missing)}"))
    else:
        card = engine.check_model(cs, model, **generation)
    return (*_one_card(cs, card, failures, out), warned)


def _one_card(cs, card, failures: int, out: Console):
    """Print one scorecard and its failing cases; the JSON, Markdown and exit code of one model."""
    from behavio.check import report

    report.wide(out).print(report.card_table(card, title=f"behavio check {cs.id}: {card.label}"))
    if failures:
        report.print_failures(out, card, failures)
    data = {"spec": cs.id, "spec_sha256": cs.spec_sha256, "checks_sha256": cs.checks_sha256, "scorecard": card.to_dict()}
    return [card], data, report.card_markdown(card, "#"), 0 if card.meets_thresholds else 1


# ---------------------------------------------------------------- train, run, preview

def train_command(spec: Path, overrides: list[str], *, base_model: str | None, resume: Path | None, runs_dir: Path,
                  check: bool, quiet: bool, err: Console) -> int:
    """Train, then score every checkpoint; exit code 0 (the check verdict is printed, not enforced)."""
    from behavio.train.pipeline import train

    result = train(spec, overrides, base_model=base_model, resume=resume, runs_dir=runs_dir, check=check,
                   say=_say(err, quiet), quiet=quiet)
    if result.is_main:
        err.print(f"run directory: {result.run_dir}", markup=False, highlight=False)
    return 0


def run_command(spec: Path, overrides: list[str], *, base_model: str | None, runs_dir: Path, out_dir: Path,
                quiet: bool, out: Console, err: Console, strict: bool = False) -> int:
    """compile -> train -> check every checkpoint; exit 0 when the best meets every threshold, 1 when not, 2 when broken.
    ``strict``: a compile warning stops it before training, a check warning makes the exit code 2."""
    from behavio.compiler.build import compile_spec
    from behavio.compiler.output import write_compiled
    from behavio.train.pipeline import train

    say = _say(err, quiet)
    compiled = compile_spec(spec)
    refused = report_warnings(err, compiled.warnings, strict)
    if refused:
        raise BehavioError("\n".join(refused))
    target, _ = write_compiled(compiled, out_dir)
    say(f"compile: {target} ({compiled.manifest['counts']['sft']} SFT, {compiled.manifest['counts']['dpo']} DPO, "
        f"{compiled.manifest['counts']['checks']} checks)")
    result = train(spec, overrides, base_model=base_model, runs_dir=runs_dir, check=True, say=say, quiet=quiet)
    if not result.is_main or result.report is None:
        return 0
    from behavio.check import report as check_report

    run = result.report
    check_report.wide(out).print(check_report.run_table(run))
    out.print(check_report.best_sentence(run).replace("**", ""), highlight=False)
    out.print(f"run directory: {result.run_dir}", highlight=False)
    if strict and run.warnings:
        for warning in run.warnings:
            _plain(err, f"error[spec-changed]: {warning} (--strict)")
        return 2
    return run.exit_code


def preview_command(spec: Path, *, count: int, stage: str, base_model: str | None, template: str | None, fill: bool,
                    plain: bool, overrides: list[str], out: Console, prompt_set: str | None = None) -> int:
    """A few training examples (of one prompt set, when given) with the trained tokens highlighted."""
    from behavio.train.preview import build_previews, print_previews

    previews = build_previews(spec, count=count, stage=stage, base_model=base_model, template=template, fill=fill,
                              overrides=overrides, prompt_set=prompt_set)
    print_previews(previews, out, plain=plain)
    return 0
