"""Faults inside the checkpoint-save path, for tests/robustness/test_train_faults.py.

``python tests/robustness/_save_faults.py`` is a launcher: it imports torch, transformers, peft, trl and
behavio once, prints ``ready``, then for each JSON request on stdin forks a child that runs the
`behavio` command line (``argv``) with its output in ``log``, prints ``{"pid": ...}``, waits for the
child and prints ``{"pid": ..., "code": ...}`` (``code`` -9: killed by SIGKILL). Forking saves the
~10 s import per training process; the launcher itself never runs a torch operation, so forking it is
safe (an OpenMP pool that has run is not).

A save of ``checkpoint-<step>`` of stage ``sft``/``dpo`` goes through ``EVENTS`` in this order
(transformers' ``Trainer._save_checkpoint`` into ``.staging/<stage>/``, then behavio's
``publish_checkpoint``: rename to ``checkpoint-<global step>``, ``behavio.json`` last). A ``point``
``{"stage", "step", "event", "when"}`` names one moment: ``before`` the event, ``partial`` (the file
written, then cut to half its size, as if the write was under way) or ``after`` it. With action
``pause`` the child writes ``marker`` there and sleeps until the test SIGKILLs it; with action
``enospc`` the event fails the way a full disk makes it fail (``when`` is ignored); with action ``fill``
the file ``ballast`` fills its filesystem just before the event, which then fails for real.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import time
import traceback
from pathlib import Path

EVENTS = ("README.md", "adapter_model.safetensors", "training_args.bin", "optimizer.pt", "scheduler.pt",
          "rng_state.pth", "trainer_state.json", "publish", "behavio.json")
FILE_EVENTS = EVENTS[:7]  # README.md: TRL's model card, in .staging/<stage>/ before checkpoint-<step>/ exists
STAGED = re.compile(r"[/\\]\.staging[/\\](sft|dpo)[/\\]checkpoint-(\d+)(?:[/\\]([^/\\]+))?$")


class Faults:
    """Hooks on the writers of a checkpoint save; fires ``action`` at ``point``.

    ENOSPC as each writer reports it on a full tmpfs (torch 2.13, safetensors 0.8): safetensors raises
    SafetensorError "... No space left on device (os error 28)" and leaves no file; torch.save raises
    RuntimeError "[enforce fail at inline_container.cc:...] unexpected pos ..." (no errno) and leaves a
    partial file; Python's own writes raise OSError(ENOSPC) and leave a partial file.
    """

    def __init__(self, point: dict | None, action: str = "pause", marker: str | None = None, on_fault=None,
                 ballast: str | None = None):
        self.point = point
        self.action = action
        self.marker = marker
        self.ballast = ballast
        self.on_fault = on_fault      # called just before an injected ENOSPC (the test snapshots the run there)
        self.fired: str | None = None
        self.disk_full = False
        self.published: dict[str, tuple[str, int]] = {}  # checkpoint-<global> -> (stage, stage step)

    # -- the moment ---------------------------------------------------------------------------

    def _at(self, stage: str, step: int, event: str, when: str) -> bool:
        p = self.point
        if self.fired or p is None or (p["stage"], p["step"], p["event"]) != (stage, step, event):
            return False
        return self.action in ("enospc", "fill") or p["when"] == when

    def _pause(self, what: str) -> None:
        self.fired = what
        sys.stdout.flush()
        sys.stderr.flush()
        Path(self.marker).write_text(what)
        time.sleep(3600)  # the test SIGKILLs us here
        os._exit(3)

    def _enospc(self, kind: str, path: str) -> BaseException:
        self.fired = f"enospc {path}"
        if self.on_fault is not None:
            self.on_fault()
        if kind == "safetensors":
            from safetensors import SafetensorError

            return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        self.disk_full = True
        _cut(path)
        if kind == "torch":
            return RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return OSError(errno.ENOSPC, "No space left on device")

    def _fill(self) -> None:
        """Write zeros to ``ballast`` until its filesystem has no block left."""
        self.fired = f"fill {self.ballast}"
        with open(self.ballast, "wb", buffering=0) as fh:
            for chunk in (bytes(1 << 20), bytes(1 << 12)):
                try:
                    while True:
                        fh.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise

    # -- the writers --------------------------------------------------------------------------

    def file(self, path, write, kind: str):
        match = STAGED.search(str(path))
        if not match or match.group(3) is None:
            return write()
        return self.event(match.group(1), int(match.group(2)), match.group(3), path, write, kind)

    def event(self, stage: str, step: int, name: str, path, write, kind: str):
        if self._at(stage, step, name, "before"):
            if self.action == "fill":
                self._fill()
                return write()  # the writer's own error
            if self.action == "enospc":
                if kind != "safetensors":
                    write()  # what reached the disk before it filled up
                raise self._enospc(kind, str(path))
            self._pause(f"{stage} {step} {name} before")
        result = write()
        for when in ("partial", "after"):
            if self._at(stage, step, name, when):
                if when == "partial":
                    _cut(str(path))
                self._pause(f"{stage} {step} {name} {when}")
        return result

    def replace(self, real, src, dst, *args, **kwargs):
        s, d = os.fspath(src), os.fspath(dst)
        staged = STAGED.search(s)
        if staged and staged.group(3) is None:  # publish: .staging/<stage>/checkpoint-<k> -> checkpoint-<global>
            key = (staged.group(1), int(staged.group(2)))
            self.published[Path(d).name] = key
            if self._at(*key, "publish", "before"):
                if self.action == "enospc":
                    raise OSError(errno.ENOSPC, "No space left on device")
                self._pause(f"{key[0]} {key[1]} publish before")
            result = real(src, dst, *args, **kwargs)
            if self._at(*key, "publish", "after"):
                self._pause(f"{key[0]} {key[1]} publish after")
            return result
        if Path(d).name == "behavio.json" and Path(d).parent.name in self.published:
            key = self.published[Path(d).parent.name]  # src: behavio.json's temp file, fully written
            if self._at(*key, "behavio.json", "before"):
                if self.action == "enospc":
                    raise self._enospc("python", s)
                self._pause(f"{key[0]} {key[1]} behavio.json before")
            if self._at(*key, "behavio.json", "partial"):
                _cut(s)
                self._pause(f"{key[0]} {key[1]} behavio.json partial")
            result = real(src, dst, *args, **kwargs)
            if self._at(*key, "behavio.json", "after"):
                self._pause(f"{key[0]} {key[1]} behavio.json after")
            return result
        return real(src, dst, *args, **kwargs)

    def install(self, setattr) -> Faults:
        """Wrap the writers (``setattr``: pytest's monkeypatch.setattr, or the builtin in a child)."""
        import peft.peft_model
        import torch
        from transformers.trainer_callback import TrainerState

        from trl.trainer.base_trainer import _BaseTrainer

        real_st, real_save, real_json = peft.peft_model.safe_save_file, torch.save, TrainerState.save_to_json
        real_card = _BaseTrainer.create_model_card
        real_replace, real_usage = os.replace, shutil.disk_usage

        def safe_save_file(tensors, filename, *args, **kwargs):
            return self.file(filename, lambda: real_st(tensors, filename, *args, **kwargs), "safetensors")

        def save(obj, f, *args, **kwargs):
            if not isinstance(f, (str, os.PathLike)):
                return real_save(obj, f, *args, **kwargs)
            return self.file(f, lambda: real_save(obj, f, *args, **kwargs), "torch")

        def save_to_json(state, json_path):
            return self.file(json_path, lambda: real_json(state, json_path), "python")

        def create_model_card(trainer, *args, **kwargs):  # the first write of a save, in .staging/<stage>/
            path = os.path.join(trainer.args.output_dir, "README.md")
            return self.event(Path(trainer.args.output_dir).name, trainer.state.global_step, "README.md", path,
                              lambda: real_card(trainer, *args, **kwargs), "python")

        def disk_usage(path):
            usage = real_usage(path)
            return shutil._ntuple_diskusage(usage.total, usage.total, 0) if self.disk_full else usage

        setattr(peft.peft_model, "safe_save_file", safe_save_file)
        setattr(torch, "save", save)
        setattr(TrainerState, "save_to_json", save_to_json)
        setattr(_BaseTrainer, "create_model_card", create_model_card)
        setattr(os, "replace", lambda src, dst, *a, **k: self.replace(real_replace, src, dst, *a, **k))
        setattr(shutil, "disk_usage", disk_usage)
        return self


def _cut(path: str) -> None:
    """Cut a file to half its size (a write that was under way)."""
    if os.path.isfile(path):
        os.truncate(path, os.path.getsize(path) // 2)


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------


def _child(request: dict) -> None:
    code = 1
    try:
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.environ.update(request.get("env", {}))
        os.chdir(request["cwd"])
        Faults(request.get("point"), request.get("action", "pause"), request.get("marker"),
               ballast=request.get("ballast")).install(setattr)
        from behavio.cli import app

        try:
            app(args=request["argv"], prog_name="behavio")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    import accelerate  # noqa: F401
    import datasets  # noqa: F401
    import peft.peft_model  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer  # noqa: F401

    import behavio.cli  # noqa: F401
    import behavio.models  # noqa: F401
    import behavio.commands  # noqa: F401
    import behavio.train.dpo  # noqa: F401
    import behavio.train.model  # noqa: F401
    import behavio.train.pipeline  # noqa: F401
    import behavio.train.sft  # noqa: F401

    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "code": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
