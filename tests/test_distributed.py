"""Work shared across the processes of a launched run, tested in 2 CPU processes (gloo): shares are
disjoint and complete, every process gets every result, the fill's answers are written once per key,
a time-budget stop is the main process's decision on every process; FSDP and DeepSpeed are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from behavio import distributed, pending
from behavio.errors import BehavioError

pytestmark = pytest.mark.pipeline
PENDING = [{"key": f"k{i}", "messages": [{"role": "user", "content": f"Question {i}?"}]} for i in range(5)]


def test_one_process_is_the_whole_world():
    assert (distributed.rank(), distributed.size(), distributed.is_main()) == (0, 1, True)
    assert distributed.share([1, 2, 3]) == [1, 2, 3] and distributed.gather("x") == ["x"]
    assert distributed.broadcast({"a": 1}) == {"a": 1}


@pytest.mark.parametrize("n,size", [(0, 2), (1, 2), (5, 2), (7, 3)])
def test_unshare_puts_the_shares_back_in_order(n, size):
    items = list(range(n))
    assert distributed.unshare([items[r::size] for r in range(size)]) == items


def _worker(rank: int, size: int, port: int, out: str, model_dir: str, cache: str) -> None:
    import torch.distributed as dist

    os.environ["BEHAVIO_CACHE"] = cache
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
    try:
        import behavio.fill
        from behavio.train.stage import _agreed

        report: dict = {"rank": distributed.rank(), "size": distributed.size()}
        report["share"] = distributed.share(list(range(7)))
        report["gathered"] = distributed.unshare(distributed.gather(report["share"]))
        report["broadcast"] = distributed.broadcast(f"from {rank}")
        report["agreed"] = _agreed(rank == 0)  # only the main process's clock says stop

        generated: list[str] = []
        original = behavio.fill.generate_cached

        def recording(model, tokenizer, items, cache, **kwargs):
            generated.extend(items)
            return original(model, tokenizer, items, cache, **kwargs)

        behavio.fill.generate_cached = recording
        answers = behavio.fill.fill_pending(PENDING, model_dir, max_new_tokens=3, batch_size=2, quiet=True)
        report["generated"], report["answers"] = generated, sorted(answers)
        Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


def test_two_processes_share_the_fill_and_agree_to_stop(tmp_path, tiny_model_dir):
    cache = tmp_path / "cache"
    mp.spawn(_worker, args=(2, 29561, str(tmp_path), str(tiny_model_dir), str(cache)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["share"] for r in reports] == [[0, 2, 4, 6], [1, 3, 5]]
    assert all(r["gathered"] == list(range(7)) and r["size"] == 2 for r in reports)
    assert all(r["broadcast"] == "from 0" and r["agreed"] is True for r in reports)
    conversations = {pending.key_for(m["messages"]) for m in PENDING}  # what the cache keys answers by
    ranks_generated = [set(r["generated"]) for r in reports]
    assert ranks_generated[0] and ranks_generated[1] and not ranks_generated[0] & ranks_generated[1]
    assert ranks_generated[0] | ranks_generated[1] == conversations  # each conversation by one process
    assert all(r["answers"] == [f"k{i}" for i in range(5)] for r in reports)  # every process gets every answer
    lines = [json.loads(line) for f in (cache / "answers").iterdir() for line in f.read_text().splitlines()]
    assert sorted(row["key"] for row in lines) == sorted(conversations)  # written once, by the main process


@pytest.mark.parametrize("variable,name", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_fsdp_and_deepspeed_launches_are_refused_before_loading(tmp_path, train_spec, monkeypatch, variable, name):
    from typer.testing import CliRunner

    import behavio.models.load
    from behavio.cli import app

    monkeypatch.setenv(variable, "true")
    monkeypatch.setattr(behavio.models.load, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    result = CliRunner().invoke(app, ["train", str(train_spec()), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert f"{name} is not supported: behavio trains with DDP only" in result.stderr
    assert "accelerate launch --multi_gpu" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_a_trainer_without_a_launcher_stays_on_one_device(tmp_path):
    """On a multi-GPU machine the HF Trainer would wrap the model in DataParallel (n_gpu > 1)."""
    from transformers import TrainingArguments

    from behavio.train.launch import one_device, refuse_sharded_launch, single_device_note

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    args._n_gpu = 4  # what _setup_devices reports on a 4-GPU machine without a launcher
    one_device(args)
    assert args.n_gpu == 1
    assert single_device_note(cuda=False, processes=1) is None
    refuse_sharded_launch()  # no FSDP/DeepSpeed in the environment: nothing to refuse
    with pytest.raises(BehavioError):
        os.environ["ACCELERATE_USE_FSDP"] = "true"
        try:
            refuse_sharded_launch()
        finally:
            del os.environ["ACCELERATE_USE_FSDP"]
