"""Data-parallel training (DDP): torchrun with 2 CPU processes (gloo), batch sharding, gradient
averaging, process-0-only files, and resuming a DDP checkpoint in a single process."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
from conftest import free_port

from resnet_repro.data import small, stream
from resnet_repro.models import ResNet, parse_model_name
from resnet_repro.training import parallel
from resnet_repro.training.batches import SmallBatches
from resnet_repro.training.step import Step

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "resnet_repro"]
CLI = [sys.executable, "-m", "resnet_repro"]
ARGS = [
    "train",
    "--model",
    "resnet8",
    "--data",
    "digits",
    "--image-size",
    "16",
    "--max-iters",
    "300",
    "--log-every",
    "10",
    "--checkpoint-every",
    "100",
    "--batch-size",
    "64",
    "--milestones",
    "250",
]


def history(out):
    with open(out / "history.csv") as f:
        return list(csv.DictReader(f))


def test_world_reads_torchruns_environment():
    w = parallel.World({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "1"})
    assert (w.size, w.rank, w.local_rank, w.main, w.active) == (4, 2, 1, False, True)
    w = parallel.World({})
    assert (w.size, w.rank, w.main, w.active) == (1, 0, True, False)


def test_small_batches_split_one_batch_over_processes():
    """Without augmentation, the processes' slices put together are the single process's batch."""
    x = torch.randint(0, 256, (100, 3, 8, 8), dtype=torch.uint8)
    data = small.TensorData(x, torch.arange(100), x[:10], torch.arange(10), [str(i) for i in range(10)], "test")
    mean = torch.zeros(3, 8, 8)
    aug = {"pad": 0, "flip": False}
    one = SmallBatches(data, 32, mean, aug, torch.device("cpu"), seed=5)
    two = [SmallBatches(data, 32, mean, aug, torch.device("cpu"), seed=5, rank=r, world=2) for r in range(2)]
    for _ in range(7):  # across an epoch boundary (100 // 32 = 3 batches an epoch)
        xa, ya = one.next()
        parts = [b.next() for b in two]
        assert all(len(p[1]) == 16 for p in parts)
        assert torch.equal(torch.cat([p[1] for p in parts]), ya)
        assert torch.equal(torch.cat([p[0] for p in parts]), xa)
    assert one.epoch == two[0].epoch == two[1].epoch == 2


def test_epoch_sampler_shards_cover_the_epoch_once():
    n, world = 103, 2
    shards = [list(stream.EpochSampler(n, seed=1, epoch=0, start=11, rank=r, world=world)) for r in range(world)]
    single = list(stream.EpochSampler(n, seed=1, epoch=0, start=11))
    assert len(shards[0]) == len(shards[1]) == (n - 11) // world  # every process makes as many batches
    assert [i for pair in zip(*shards) for i in pair] == single[: len(shards[0]) * world]
    assert len(stream.EpochSampler(n, 1, 0, 11, 0, world)) == len(shards[0])


def _ddp_step(rank, port, x, y, state, out, train_mode=False):
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": "2",
        }
    )
    torch.set_num_threads(1)
    parallel.WORLD = parallel.World()
    device = parallel.start(torch.device("cpu"))
    model = ResNet(parse_model_name("resnet8"), 10)
    model.load_state_dict(state)
    # eval: BN on running statistics, so the full-batch gradient is the mean of the halves';
    # train: each process normalises its own half, as the paper's two GPUs did
    model.train(train_mode)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = Step(model, opt, device)
    half = len(y) // 2
    step(x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half])
    total = parallel.summed(step.acc)
    if rank == 0:
        torch.save({"model": model.state_dict(), "acc": total}, out)
    parallel.finish()


def test_ddp_step_equals_one_process_on_the_whole_batch(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    model = ResNet(parse_model_name("resnet8"), 10)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    mp.spawn(_ddp_step, args=(free_port(), x, y, state, tmp_path / "ddp.pt"), nprocs=2)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=False)

    model.eval()
    step = Step(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), torch.device("cpu"))
    step(x, y)
    assert ddp["acc"][2].item() == 32  # both halves counted
    assert ddp["acc"][0].item() == pytest.approx(step.acc[0].item(), rel=1e-5)
    changed = 0
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ddp["model"][k], v, rtol=1e-4, atol=1e-6, msg=k)
        changed += not torch.equal(v, state[k])
    assert changed > 10  # the step did move the weights


def test_ghost_batchnorm_equals_per_process_batchnorm_under_ddp(tmp_path):
    """bn_batch: one process normalising a batch of 32 in groups of 16 takes the same step (weights,
    BN running statistics, loss) as two DDP processes (gloo) on 16 each. Without it, it does not."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    model = ResNet(parse_model_name("resnet8"), 10)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    mp.spawn(_ddp_step, args=(free_port(), x, y, state, tmp_path / "ddp.pt", True), nprocs=2)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=False)

    def one_process(bn_batch):
        net = ResNet(parse_model_name("resnet8"), 10, bn_batch=bn_batch)
        net.load_state_dict(state)
        step = Step(net, torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), torch.device("cpu"))
        step(x, y)
        return net.state_dict(), step.acc

    ghost, acc = one_process(16)
    assert acc[0].item() == pytest.approx(ddp["acc"][0].item(), rel=1e-5)
    for k, v in ghost.items():
        torch.testing.assert_close(ddp["model"][k], v, rtol=1e-4, atol=1e-6, msg=k)
    whole, acc = one_process(None)
    assert acc[0].item() != pytest.approx(ddp["acc"][0].item(), rel=1e-5)
    assert any(not torch.allclose(ddp["model"][k], v, rtol=1e-4, atol=1e-6) for k, v in whole.items())


def test_bn_batch_must_divide_the_batch():
    from resnet_repro.errors import ReproError
    from resnet_repro.spec.build import build_spec

    assert build_spec(None, [{"model": "resnet20"}])["bn_batch"] == 64  # the paper's 128 on two GPUs
    assert build_spec(None, [{"model": "resnet50"}])["bn_batch"] is None
    with pytest.raises(ReproError, match="batch_size 96 is not a multiple of bn_batch 64"):
        build_spec(None, [{"model": "resnet20", "batch_size": 96}])


def test_torchrun_trains_stops_on_sigterm_and_resumes_in_one_process(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        TORCHRUN + ARGS + ["--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:  # wait for 3 history records, then pre-empt
        if (out / "history.csv").exists() and len(history(out)) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)  # as Slurm does; torchrun passes it on to both processes
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0, stderr

    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    stopped = ckpt["iteration"]
    assert ckpt["world_size"] == 2 and len(ckpt["aug_states"]) == 2 and not ckpt["done"]
    assert 30 <= stopped < 300 and stopped % 10 == 0  # the processes agree on stopping every 10 iterations
    assert "stopped at iteration" in stderr and "signal SIGTERM" in stderr
    assert stderr.count("it 10/300") == 1  # only process 0 logs
    assert not (out / "metrics.json").exists()
    rows = history(out)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])  # it learns

    r = subprocess.run(CLI + ARGS + ["--out", str(out), "--resume"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert f"at iteration {stopped} (2 process(es) then, 1 now)" in r.stderr
    rows = history(out)
    assert [int(h["iteration"]) for h in rows] == list(range(10, 301, 10))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"]) / 2
    assert float(rows[-1]["test_error"]) < 50  # chance is 90%
    assert '"processes": 1' in r.stdout


def test_multi_node_launch_line_with_two_torchrun_agents_on_loopback(tmp_path):
    """The exact torchrun part of the workflow's multi-node launch line (plan.Plan.launcher, nodes: 2),
    run as two agents on this machine (the two 'nodes'), meeting at a c10d rendezvous on loopback,
    one gloo process each; then the checkpoint resumes in a single process."""
    import copy
    import re
    from pathlib import Path

    import yaml

    from resnet_repro.plan import Plan

    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "config.yaml").read_text())
    config["resources"] = copy.deepcopy(config["resources"])
    config["resources"]["imagenet"].update(gpus=2, nodes=2, threads=2)
    line = Plan(config, root / "workflow" / "schemas" / "config.schema.yaml").launcher("resnet50")
    srun, torchrun = line.split(" torchrun ", 1)
    assert srun.startswith("srun --nodes=2 --ntasks-per-node=1 ")
    torchrun = "torchrun " + torchrun.replace("$(hostname)", "127.0.0.1").replace(":29400", f":{free_port()}")
    assert re.fullmatch(
        r"torchrun --nnodes=2 --nproc_per_node=1 --rdzv_backend=c10d --rdzv_endpoint=127\.0\.0\.1:\d+ "
        r"--rdzv_id=\$\{SLURM_JOB_ID:-0\} --no-python ",
        torchrun,
    )
    out = tmp_path / "run"
    args = ARGS[:8] + ["40"] + ARGS[9:] + ["--out", str(out)]
    env = dict(
        os.environ, OMP_NUM_THREADS="1", SLURM_JOB_ID="4242", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    )
    # the two-node run stops (as at a time limit) after iteration 20, checkpointing
    agents = [
        subprocess.Popen(
            ["bash", "-c", torchrun + " ".join(["resnet-repro", *args, "--stop-at", "20"])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    results = [a.communicate(timeout=300) for a in agents]
    assert all(a.returncode != 0 for a in agents)
    assert all("stopped at iteration 20 by stop_at=20" in r[1] for r in results), [r[1][-2000:] for r in results]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and ckpt["iteration"] == 20 and not ckpt["done"]
    # on one node, one process: resumes from the two-node checkpoint and finishes
    r = subprocess.run(CLI + args + ["--resume"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "at iteration 20 (2 process(es) then, 1 now)" in r.stderr
    assert [int(h["iteration"]) for h in history(out)] == [10, 20, 30, 40]
