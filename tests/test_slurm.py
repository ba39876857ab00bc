"""The workflow on Slurm: `snakemake --profile slurm` (slurm/config.yaml) against a real single-node
Slurm 22.05 on localhost (tests/slurm/cluster.sh: slurmctld, slurmd, slurmdbd for sacct, munge;
two pretend GPUs), with tests/slurm/profile over it for fast status polling; for the two-node test, two
more slurmds on the same machine (`cluster.sh start-two-node`, partition "multi").

The tests marked `slurm` need root: the session fixture installs the Debian packages if they are
missing and skips when that is impossible. The others only parse the profile (no cluster)."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_CONFIG

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLUSTER_SH = ROOT / "tests" / "slurm" / "cluster.sh"
PROFILE = ROOT / "slurm"
TEST_PROFILE = ROOT / "tests" / "slurm" / "profile"
TARGETS = ["results/table6.csv", "reports/figure7.pdf"]
# Table 6 and Figure 7 of the tiny preset, each from two of its networks (all of them would take
# twice as long: every job pays for two Snakemake start-ups and a torch import on 2 CPU cores)
EXPERIMENTS = {"table6": ["resnet20", "resnet56"], "figure7": ["plain20", "resnet20"]}
TINY_RUNS = ["plain20", "resnet20", "resnet56"]
LONG_ITERS = 600  # resnet20's iterations in the run below: long enough to be cancelled mid-run
RUN_TIMEOUT = 600
SITE = {"RESNET_SLURM_PARTITION": "gpu", "RESNET_SLURM_ACCOUNT": "proj42"}


def env(**extra):
    """The environment of a user of slurm/: the venv on PATH, no MLflow server, the site's
    partition and account given through the profile's environment variables."""
    e = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "RESNET_SLURM_")) and k != "MLFLOW_TRACKING_URI"
    }
    e["PATH"] = f"{BIN}:{e.get('PATH', '')}:/usr/sbin:/sbin"
    e["OMP_NUM_THREADS"] = "1"
    e.update(extra)
    return e


def sh(*args, timeout=120):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)


def sections(dry_run_output):
    """{rule: [(threads, {resource: value})]} from the job blocks of `snakemake -n` (a group's jobs
    are indented under its "Group job" line)."""
    jobs = {}
    for block in re.split(r"\n(?=\s*(?:local)?rule \w+:)", dry_run_output):
        m = re.match(r"\s*(?:local)?rule (\w+):", block)
        if not m:
            continue
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        values = dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {}
        jobs.setdefault(m.group(1), []).append((int(threads.group(1)) if threads else 1, values))
    return jobs


# ---------------------------------------------------------------- the profile, without a cluster


def test_profile_slurm_resolves_from_the_repository_root():
    """`snakemake --profile slurm TARGET` from the repository root: the profile is ./slurm, and
    the default workflow profile (profiles/default) does not put `cores: all` over it, which would
    cap every cluster job's threads at this machine's CPU count."""
    code = (
        "import json, sys\nfrom snakemake.cli import parse_args\n_, a = parse_args(sys.argv[1:])\n"
        "print(json.dumps({'executor': a.executor, 'jobs': a.jobs, 'cores': a.cores, 'retries': a.retries,"
        " 'requeue': a.slurm_requeue, 'status': a.slurm_status_command, 'envvars': sorted(a.envvars),"
        " 'targets': list(a.targets), 'rerun_incomplete': a.rerun_incomplete, 'logdir': a.slurm_logdir,"
        " 'keep_logs': a.slurm_keep_successful_logs, 'delete_logs_after': a.slurm_delete_logfiles_older_than},"
        " default=str))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "--profile", "slurm", "results/table6.csv"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env(**SITE),
    )
    assert r.returncode == 0, r.stderr
    args = json.loads(r.stdout.strip().splitlines()[-1])
    assert "Using profiles slurm and workflow specific profile" in r.stderr
    assert args["executor"] == "slurm" and args["targets"] == ["results/table6.csv"]
    assert args["cores"] == 4096, "profiles/default overrides the slurm profile's `cores`"
    assert args["jobs"] == 50 and args["retries"] >= 1 and args["requeue"] is True
    assert args["status"] == "squeue" and args["envvars"] == []
    # restarting after a crash resumes incomplete trainings; Slurm's logs are kept, in logs/slurm/
    assert args["rerun_incomplete"] is True
    assert args["logdir"] == "logs/slurm" and args["keep_logs"] is True and args["delete_logs_after"] == 0
    # an MLflow server given in the environment is passed on to the jobs
    r = subprocess.run(
        [sys.executable, "-c", code, "--profile", "slurm", "all"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env(MLFLOW_TRACKING_URI="http://mlflow.example:5000", RESNET_SLURM_JOBS="7", **SITE),
    )
    assert r.returncode == 0, r.stderr
    args = json.loads(r.stdout.strip().splitlines()[-1])
    assert args["envvars"] == ["MLFLOW_TRACKING_URI"] and args["jobs"] == 7
    # and with no profile, the default workflow profile still gives a local run its cores
    r = subprocess.run(
        [sys.executable, "-c", code, "results/table6.csv"], capture_output=True, text=True, cwd=ROOT, env=env()
    )
    assert r.returncode == 0, r.stderr
    args = json.loads(r.stdout.strip().splitlines()[-1])
    assert 1 <= args["cores"] < 4096
    assert args["rerun_incomplete"] is True  # the default profile too: the same command after a crash


def dry_run(tmp_path, *targets, configs=(), **site):
    r = subprocess.run(
        [
            str(BIN / "snakemake"),
            *targets,
            "-n",
            "--profile",
            str(PROFILE),
            "-s",
            str(ROOT / "Snakefile"),
            "--configfile",
            str(ROOT / "config.yaml"),
            *map(str, configs),
            "--directory",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env(**site),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def test_profile_sizes_paper_jobs_for_a_gpu_cluster(tmp_path):
    """What the paper preset's jobs would ask Slurm for (a dry run: nothing is submitted)."""
    out = dry_run(
        tmp_path,
        "results/table2.csv",
        "results/table6.csv",
        RESNET_SLURM_PARTITION="gpu",
        RESNET_SLURM_CPU_PARTITION="cpu",
        RESNET_SLURM_ACCOUNT="proj42",
        RESNET_SLURM_MAX_RUNTIME="2880",
        RESNET_SLURM_GPU_MODEL="a100",
    )
    jobs = sections(out)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())["resources"]
    for rule, family in [("train_imagenet", "imagenet"), ("train_cifar", "cifar")]:
        want = cfg[family]
        for threads, res in jobs[rule]:
            assert threads == want["threads"]
            assert res["gpu"] == str(want["gpus"]) and res["nodes"] == "1"
            assert res["mem_mb"] == str(want["mem_mb"])
            # never above the partition's limit: ImageNet's 4320 minutes become attempts of 2880
            assert res["runtime"] == str(min(want["runtime"], 2880))
            assert res["slurm_partition"] == "gpu" and res["slurm_account"] == "proj42"
            # the early warning (SIGUSR1 5 minutes before the limit) and the GPU model
            assert res["slurm_extra"] == "--signal=USR1@300" and res["gpu_model"] == "a100"
    assert jobs["train_imagenet"][0][1]["gpu"] == "8"  # the paper's 8 GPUs, on one node
    # ImageNet: 32 CPUs for 8 processes: 4 threads each, 3 DataLoader workers each
    assert re.search(
        r"--nproc_per_node=8 --no-python resnet-repro train --overrides '\{\"data\": \{[^}]*\"workers\": 3\}"
        r".*--threads 4 ",
        out,
    )
    # one GPU: a training's CPUs and memory per GPU; an ImageNet evaluation is a job of its own, without
    # the warning signal; a CIFAR evaluation runs in its training's job, so it carries the training's
    for rule, family in [("evaluate_imagenet", "imagenet"), ("evaluate_cifar", "cifar")]:
        for threads, res in jobs[rule]:
            assert res["gpu"] == "1" and int(res["runtime"]) >= 10 and res["gpu_model"] == "a100"
            assert res.get("slurm_extra") == (None if family == "imagenet" else "--signal=USR1@300")
            share = cfg[family]["gpus"]
            assert (threads, res["mem_mb"]) == (cfg[family]["threads"] // share, str(cfg[family]["mem_mb"] // share))
    # one Slurm job per CIFAR training, which also evaluates it (Table 6's runs): a group named after the run
    cifar = re.findall(r"rule train_cifar:\n(?:.*\n)*?\s+wildcards: model=([\w.-]+), seed=(\d+)\n", out)
    groups = re.findall(r"Group job (\S+) \(jobs", out)
    assert sorted(groups) == sorted(f"cifar-{m}-seed{s}" for m, s in cifar)
    assert len(groups) == len(jobs["train_cifar"]) == len(jobs["evaluate_cifar"]) == 10
    for _, res in jobs["check_data"]:  # CPU only, long: it may unpack ImageNet; no GPU model
        assert res["slurm_partition"] == "cpu" and "gpu" not in res and "gpu_model" not in res
        assert int(res["runtime"]) >= 240
    for local in ("table", "track_train", "mlflow_setup"):
        assert local in jobs  # planned, and run by Snakemake itself (localrules)
        assert all("gpu_model" not in res for _, res in jobs[local])


def test_profile_caps_every_job_at_max_runtime(tmp_path):
    jobs = sections(dry_run(tmp_path, "all", RESNET_SLURM_MAX_RUNTIME="300", **SITE))
    runtimes = {rule: {int(res["runtime"]) for _, res in js} for rule, js in jobs.items()}
    assert runtimes["train_imagenet"] == {300}
    # a CIFAR training's job runs its evaluation and responses after it: the three within max_runtime
    # (a tenth each at most, the training the rest)
    assert runtimes["evaluate_cifar"] == runtimes["responses"] == {30} and runtimes["train_cifar"] == {240}
    assert max(max(v) for v in runtimes.values()) == 300


def test_profile_gives_cifar_packs_what_it_gives_a_training(tmp_path):
    """per_gpu: 2 on the paper preset: its 14 CIFAR trainings are 7 packs (seed 0's ten, plain nets beside
    ResNets, then ResNet-110's four other seeds), all of which Table 6's ten trainings need: 7 pack jobs (the
    profile cannot name their rules: the workflow gives them the early warning and GPU model the profile
    exports), each one GPU, two trainings' memory and time; no train_cifar job."""
    packed = tmp_path / "packed.yaml"
    packed.write_text(yaml.safe_dump({"presets": {"paper": {"resources": {"cifar": {"per_gpu": 2}}}}}))
    out = dry_run(
        tmp_path,
        "results/table6.csv",
        configs=[packed],
        RESNET_SLURM_GPU_MODEL="a100",
        RESNET_SLURM_WARN_SECONDS="240",
        **SITE,
    )
    jobs = sections(out)
    packs = {rule: js for rule, js in jobs.items() if rule.startswith("train_cifar_pack")}
    assert len(packs) == 7 and "train_cifar" not in jobs
    cifar = yaml.safe_load((ROOT / "config.yaml").read_text())["resources"]["cifar"]
    for (threads, res), *_ in packs.values():
        assert res["gpu"] == "1" and res["mem_mb"] == str(2 * cifar["mem_mb"]) and threads == cifar["threads"]
        assert res["runtime"] == str(2 * cifar["runtime"])
        assert res["slurm_extra"] == "--signal=USR1@240" and res["gpu_model"] == "a100"
    assert out.count("resnet-repro train-pack --run ") == 7


def test_cluster_defaults_are_used_only_when_asked_for(tmp_path):
    """RESNET_SLURM_PARTITION=default and RESNET_SLURM_ACCOUNT=none: no partition, no account asked for."""
    jobs = sections(
        dry_run(tmp_path, "results/table6.csv", RESNET_SLURM_PARTITION="default", RESNET_SLURM_ACCOUNT="none")
    )
    assert all("slurm_partition" not in res and "slurm_account" not in res for js in jobs.values() for _, res in js)


@pytest.mark.parametrize("missing", ["RESNET_SLURM_PARTITION", "RESNET_SLURM_ACCOUNT"])
def test_missing_partition_or_account_fails_before_anything_is_submitted(tmp_path, missing):
    """A real run (not -n), with an sbatch on PATH that would record any submission."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("sbatch", "sinfo", "squeue", "sacct", "sacctmgr", "scontrol"):
        # queries (the plugin reads `scontrol show config` on loading) answer nothing; a submission is recorded
        record = f'echo {tool} "$@" >> {tmp_path}/submitted\n' if tool == "sbatch" else ""
        (fake / tool).write_text(f"#!/bin/sh\n{record}exit 1\n")
        (fake / tool).chmod(0o755)
    site = {k: v for k, v in SITE.items() if k != missing}
    e = env(**site)
    e["PATH"] = f"{fake}:{e['PATH']}"
    r = subprocess.run(
        [
            str(BIN / "snakemake"),
            "results/table6.csv",
            "--profile",
            str(PROFILE),
            "-s",
            str(ROOT / "Snakefile"),
            "--configfile",
            str(ROOT / "config.yaml"),
            "--directory",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=e,
        timeout=120,
    )
    assert r.returncode != 0
    errors = [l for l in (r.stdout + r.stderr).splitlines() if l.startswith("resnet-repro:")]
    assert len(errors) == 1 and f"{missing} is not set" in errors[0] and f"{missing}=default" in errors[0], r.stderr
    assert not (tmp_path / "submitted").exists(), (tmp_path / "submitted").read_text()
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


# ---------------------------------------------------------------- a real Slurm


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster (tests/slurm/cluster.sh) runs as root")
    r = sh("bash", CLUSTER_SH, "install", timeout=1200)
    if r.returncode != 0:
        pytest.skip(f"Slurm could not be installed: {(r.stderr or r.stdout).strip()[-500:]}")
    running = sh("bash", CLUSTER_SH, "status").returncode == 0
    if not running:
        r = sh("bash", CLUSTER_SH, "start", timeout=600)
        assert r.returncode == 0, f"cluster.sh start failed:\n{r.stdout}\n{r.stderr}"
    yield
    if not running:  # leave a cluster someone else started alone
        sh("bash", CLUSTER_SH, "stop", timeout=300)


# ---------------------------------------------------------------- what a test starts, it ends


def queue():
    """The cluster's jobs now: [{JobID, State, Reason, WorkDir, Comment}] (squeue: sacct may lag)."""
    fields = ("JobID", "State", "Reason", "WorkDir", "Comment")
    r = sh("squeue", "-h", "-o", "%i|%T|%r|%Z|%k")
    assert r.returncode == 0, r.stderr
    return [dict(zip(fields, line.split("|", 4))) for line in r.stdout.splitlines() if line]


def jobs_under(path):
    """The queued or running jobs whose working directory is `path` or below it."""
    return [j for j in queue() if Path(j["WorkDir"]).is_relative_to(path)]


def processes_under(path):
    """{pid: command line} of the processes on this machine that run in `path` (or below) or name it:
    a test's Snakemakes, and the Slurm jobs' shells, Snakemakes and trainers (they run in the job's
    working directory)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if cwd.is_relative_to(path) or str(path) in cmdline:
            found[int(proc.name)] = cmdline
    return found


def wait_until(check, seconds, interval=0.5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


class ClusterRun:
    """The Snakemakes a test starts in its directory `work`, and every Slurm job and process they lead to,
    all ended when the test ends, however it ends (`with ClusterRun(work) as run:` or the `cluster_run`
    fixture): each Snakemake gets SIGINT (it cancels its jobs) and SIGKILL 30 s later, every job still
    queued or running in `work` is scancel'ed, and any process left in `work` is killed; processes a test
    paused (`run.paused`) are continued first, so that they can die."""

    def __init__(self, work):
        self.work = Path(work).resolve()
        self.procs = []
        self.paused = []

    def start(self, cmd, e, name):
        with open(self.work / name, "w") as f:
            proc = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, cwd=self.work, env=e, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def run(self, cmd, e, name, timeout=RUN_TIMEOUT):
        """Start `cmd` and wait for it: (exit status, its output); a test failure after `timeout` s."""
        proc = self.start(cmd, e, name)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"snakemake did not finish in {timeout} s:\n{(self.work / name).read_text()[-4000:]}")
        return proc.returncode, (self.work / name).read_text()

    def close(self):
        for pid in self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)  # Snakemake cancels its Slurm jobs on ^C
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # and whatever else of its session is left
            proc.wait()
        jobs = [j["JobID"] for j in jobs_under(self.work)]
        if jobs:
            sh("scancel", *jobs)
        # scancel: SIGTERM, then SIGKILL after the cluster's KillWait (15 s)
        gone = wait_until(lambda: not jobs_under(self.work), 90)
        for pid in processes_under(self.work):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert gone, f"jobs of {self.work} still queued after scancel: {jobs_under(self.work)}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def empty_queue():
    """Every Slurm test starts on an idle cluster, so that none depends on what another left running."""
    if not wait_until(lambda: not queue(), 120, interval=1):
        pytest.fail(f"the test cluster still runs jobs from before this test: {queue()}")


@pytest.fixture
def cluster_run(slurm_cluster, tmp_path):
    empty_queue()
    with ClusterRun(tmp_path) as run:
        yield run


def sacct(since, *fields):
    r = sh("sacct", "-X", "-P", "-n", "--starttime", since, "-o", ",".join(fields))
    assert r.returncode == 0, r.stderr
    return [dict(zip(fields, line.split("|"))) for line in r.stdout.splitlines() if line]


def snakemake_on_cluster(work, targets, tiny):
    """The `snakemake --profile slurm` command line (with the test cluster's profile) that makes `targets`
    of the tiny preset in `work`, with `tiny` merged into the preset through a config file of its own."""
    extra = work / "slurm-test.yaml"
    extra.write_text(yaml.safe_dump({"presets": {"tiny": tiny}}))
    return [
        str(BIN / "snakemake"),
        *targets,  # targets first: --configfile/--config take several values
        "--profile",
        str(PROFILE),
        "--profile",
        str(TEST_PROFILE),
        "-s",
        str(ROOT / "Snakefile"),
        "--configfile",
        str(ROOT / "config.yaml"),
        str(TINY_CONFIG),
        str(extra),
        "--directory",
        str(work),
    ]


@pytest.fixture(scope="module")
def tiny_on_slurm(slurm_cluster, tmp_path_factory):
    """Table 6 and Figure 7 of the tiny preset through `snakemake --profile slurm`, with the CIFAR
    jobs asking for one (pretend) GPU and ResNet-20 trained for LONG_ITERS iterations; once its
    training has logged a few iterations, its Slurm job is scancel'ed (SIGTERM, then SIGKILL), as a
    time limit or pre-emption would. Returns what happened."""
    work = tmp_path_factory.mktemp("slurm-tiny")
    training = {"resnet20": {"max_iters": LONG_ITERS, "log_every": 50, "checkpoint_every": 50}}
    tiny = {"resources": {"cifar": {"gpus": 1}}, "experiments": EXPERIMENTS, "model_training": training}
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 5))
    out = work / "snakemake.out"
    cmd = snakemake_on_cluster(work, TARGETS, tiny)
    train_log = work / "logs" / "tiny" / "train" / "resnet20-seed0.log"
    cancelled = seen = None
    start = time.monotonic()
    empty_queue()
    with ClusterRun(work) as run:
        proc = run.start(cmd, env(RESNET_SLURM_PARTITION="debug", RESNET_SLURM_ACCOUNT="resnet"), out.name)
        while proc.poll() is None and time.monotonic() - start < RUN_TIMEOUT:
            time.sleep(0.3)
            if cancelled or not train_log.exists():
                continue
            done = [int(i) for i in re.findall(rf"\bit (\d+)/{LONG_ITERS}\b", train_log.read_text())]
            if not done:
                continue
            m = re.search(r"submitted with SLURM jobid (\d+) \(log: [^)]*/group_cifar-resnet20-seed0_", out.read_text())
            assert m, "resnet20's training runs but its Slurm job id was not reported"
            r = sh("scancel", m.group(1))
            assert r.returncode == 0, r.stderr
            cancelled, seen = m.group(1), max(done)
        if proc.poll() is None:
            pytest.fail(f"snakemake --profile slurm did not finish in {RUN_TIMEOUT} s:\n{out.read_text()[-4000:]}")
    text = out.read_text()
    uuid = re.search(r"SLURM run ID: (\S+)", text).group(1)
    jobs = [
        j
        for j in sacct(since, "JobID", "JobName", "State", "Partition", "Account", "AllocTRES", "Timelimit", "Comment")
        if j["JobName"] == uuid
    ]
    return dict(
        work=work,
        rc=proc.returncode,
        out=text,
        jobs=jobs,
        cancelled=cancelled,
        seen=seen,
        seconds=time.monotonic() - start,
    )


def cifar_job(comment):
    """(run, rules) of a CIFAR training's Slurm job, from the comment the plugin gives it: rule_<group>_<its
    rules, sorted>, the group named cifar-<model>-seed<seed> (slurm/config.yaml `groups`)."""
    m = re.fullmatch(r"rule_cifar-([\w.-]+?-seed\d+)_((?:evaluate_cifar_)?(?:responses_)?train_cifar)", comment)
    assert m, f"not a CIFAR training's job: {comment}"
    return m.group(1), [r for r in ("evaluate_cifar", "responses", "train_cifar") if r in m.group(2)]


def fail_text(run):
    return f"snakemake output (last part):\n{run['out'][-6000:]}"


@pytest.mark.slurm
def test_tiny_table6_and_figure7_on_slurm(tiny_on_slurm):
    run = tiny_on_slurm
    work = run["work"]
    assert run["rc"] == 0, fail_text(run)
    t6 = pd.read_csv(work / "results" / "table6.csv")
    measured = t6.dropna(subset=["error_mean"])
    assert set(measured["model"]) == set(EXPERIMENTS["table6"])
    assert (work / "reports" / "figure7.pdf").read_bytes()[:4] == b"%PDF"
    # every training was one Slurm job (resnet20's two: it was cancelled), in the given partition and
    # account, with one GPU, which also ran the run's evaluation (Table 6's nets) and layer responses
    # (Figure 7's), each a job of its own in it; the figure, the table and the MLflow logging ran locally
    data_checks, trainings = [], {}
    for j in run["jobs"]:
        assert (j["Partition"], j["Account"]) == ("debug", "resnet"), j
        if j["Comment"].startswith("rule_check_data"):
            data_checks.append(j)
        else:
            name, rules = cifar_job(j["Comment"])
            trainings.setdefault(name, []).append((rules, j))
            assert "gres/gpu=1" in j["AllocTRES"], j
    assert {n: len(js) for n, js in trainings.items()} == {f"{m}-seed0": 1 + (m == "resnet20") for m in TINY_RUNS}
    # evaluated: Table 6's nets, and those the preset's claims evaluate (plain20: its responses wait for it)
    evaluated = set(EXPERIMENTS["table6"]) | set(
        yaml.safe_load(TINY_CONFIG.read_text())["presets"]["tiny"]["claim_seeds"]
    )
    finished = {n: rules for n, js in trainings.items() for rules, j in js if j["State"] == "COMPLETED"}
    assert finished == {
        f"{m}-seed0": ["evaluate_cifar"] * (m in evaluated)
        + ["responses"] * (m in EXPERIMENTS["figure7"])
        + ["train_cifar"]
        for m in TINY_RUNS
    }
    for m in TINY_RUNS:  # each with its own log
        assert (work / f"logs/tiny/evaluate/{m}-seed0-single.log").exists() == (m in evaluated)
        assert (work / f"logs/tiny/responses/{m}-seed0.log").exists() == (m in EXPERIMENTS["figure7"])
    assert all("gres/gpu" not in j["AllocTRES"] for j in data_checks)
    assert all(j["Timelimit"] == "08:00:00" for j in data_checks)  # the profile's set-resources
    for m in TINY_RUNS:
        assert json.loads((work / f"results/runs/tiny/{m}/seed0/mlflow.json").read_text())
    assert (work / "mlflow.db").exists()


@pytest.mark.slurm
def test_cancelled_training_resumes_from_its_checkpoint(tiny_on_slurm):
    run = tiny_on_slurm
    work = run["work"]
    assert run["cancelled"], (
        "resnet20's training finished before the test could cancel it; raise LONG_ITERS\n" + fail_text(run)
    )
    attempts = [j for j in run["jobs"] if j["Comment"].startswith("rule_cifar-resnet20-seed0_")]
    states = {j["JobID"]: j["State"] for j in attempts}
    assert states.pop(run["cancelled"]).startswith("CANCELLED"), attempts
    assert list(states.values()) == ["COMPLETED"], attempts  # one retry, and it finished
    first, retry = sorted(attempts, key=lambda j: int(j["JobID"]))
    assert retry["Timelimit"] > first["Timelimit"], "the retry should get more wall time"
    log = (work / "logs" / "tiny" / "train" / "resnet20-seed0.log").read_text()
    m = re.search(r"resumed from \S*checkpoint\.pt at iteration (\d+)", log)
    assert m and int(m.group(1)) >= 50, f"cancelled after iteration {run['seen']}; the retry's log:\n{log[-2000:]}"
    assert json.loads((work / "results/runs/tiny/resnet20/seed0/metrics.json").read_text())["iterations"] == LONG_ITERS
    assert run["rc"] == 0, fail_text(run)


# ---------------------------------------------------------------- attempts, early warning, lock

TRAIN_RUN = "results/runs/tiny/resnet20/seed0"
ATTEMPTS_LOG = "logs/tiny/train/resnet20-seed0.attempts.log"


def one_training(work, iters, resources=None, every=100, checkpoint_every=100000, partition="debug", **env_extra):
    """`snakemake --profile slurm` for the tiny preset's ResNet-20 alone, trained for `iters` iterations with
    the CIFAR `resources` (default: one pretend GPU): the command line and its environment."""
    training = {"max_iters": iters, "log_every": every, "checkpoint_every": checkpoint_every, "checkpoint_minutes": 0}
    tiny = {"resources": {"cifar": resources or {"gpus": 1}}, "model_training": {"resnet20": training}}
    cmd = snakemake_on_cluster(work, [f"{TRAIN_RUN}/model.pt"], tiny)
    return cmd, env(RESNET_SLURM_PARTITION=partition, RESNET_SLURM_ACCOUNT="resnet", **env_extra)


def attempts(since, comment="rule_cifar-resnet20-seed0_train_cifar"):
    return sorted(
        (j for j in sacct(since, "JobID", "State", "ExitCode", "Timelimit", "Comment") if j["Comment"] == comment),
        key=lambda j: int(j["JobID"]),
    )


@pytest.mark.slurm
def test_training_longer_than_max_runtime_is_warned_checkpointed_retried_and_finishes(cluster_run, tmp_path):
    """Every attempt may run 2 minutes (max_runtime); Slurm warns the training with SIGUSR1 45 s before
    each limit; the trainer checkpoints and exits; Snakemake resubmits and the next attempt resumes,
    until the training is done. Its log of all attempts holds every attempt."""
    iters = 12000
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 5))
    cmd, e = one_training(tmp_path, iters, RESNET_SLURM_MAX_RUNTIME="2", RESNET_SLURM_WARN_SECONDS="45")
    rc, out = cluster_run.run(cmd, e, "snakemake.out", timeout=900)
    log = (tmp_path / ATTEMPTS_LOG).read_text() if (tmp_path / ATTEMPTS_LOG).exists() else ""
    assert rc == 0, out[-5000:] + log[-3000:]
    jobs = attempts(since)
    assert len(jobs) >= 2 and jobs[-1]["State"] == "COMPLETED", jobs
    assert all(j["Timelimit"] == "00:02:00" for j in jobs), jobs  # never more than max_runtime
    headers = re.findall(r"^=== resnet-repro train: attempt (\d+), Slurm job (\d+) on ", log, re.M)
    assert [int(a) for a, _ in headers] == list(range(1, len(jobs) + 1))
    assert [j for _, j in headers] == [j["JobID"] for j in jobs]
    # the early warning, not the kill, stopped the attempts before the last; each resumed where the last stopped
    stops = [int(i) for i in re.findall(r"stopped at iteration (\d+) by signal SIGUSR1", log)]
    resumes = [int(i) for i in re.findall(r"resumed from \S+checkpoint\.pt at iteration (\d+)", log)]
    assert stops and stops == resumes[: len(stops)], log[-4000:]
    assert json.loads((tmp_path / TRAIN_RUN / "metrics.json").read_text())["iterations"] == iters
    # Slurm's own log of every attempt is kept, under logs/slurm/
    for j in jobs:
        assert (tmp_path / "logs/slurm/group_cifar-resnet20-seed0_train_cifar" / f"{j['JobID']}.log").exists()


def trainer_pid(run_dir):
    """The pid of the training that holds `run_dir`'s lock (runlock.RunLock), once it has taken it."""
    lock = Path(run_dir) / "train.lock"
    try:
        return json.loads(lock.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.slurm
def test_second_snakemake_does_not_start_a_second_copy_of_a_running_training(cluster_run, tmp_path):
    """Snakemake killed (SIGKILL) while its training job runs on; `snakemake --unlock` and the same command
    again: the new training job finds the run directory locked by the old one and fails at once (and is
    retried) instead of training alongside it; the target is finished once the old job is done.

    Deterministic whichever job the scheduler starts first and however fast the CPU: the old trainer is
    paused (SIGSTOP; it holds its lock and its Slurm job) until the new job has been refused, then
    continued, so it can neither finish before the refusal nor be overtaken by the new job."""
    iters = 2000
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 5))
    cmd, e = one_training(tmp_path, iters)
    first = cluster_run.start(cmd, e, "first.out")
    log, run = tmp_path / ATTEMPTS_LOG, tmp_path / TRAIN_RUN
    trained = lambda: log.exists() and re.search(rf"\bit \d+/{iters}\b", log.read_text())  # noqa: E731
    assert wait_until(lambda: trained() or first.poll() is not None, 300), "the training did not start in 300 s"
    assert first.poll() is None and trainer_pid(run), (tmp_path / "first.out").read_text()[-3000:]
    old_trainer = trainer_pid(run)
    os.kill(old_trainer, signal.SIGSTOP)
    cluster_run.paused.append(old_trainer)
    os.killpg(first.pid, signal.SIGKILL)  # Snakemake dies; its Slurm job does not
    first.wait()
    old = [j for j in queue() if j["Comment"] == "rule_cifar-resnet20-seed0_train_cifar"]
    assert len(old) == 1 and old[0]["State"] == "RUNNING", queue()
    r = subprocess.run(cmd + ["--unlock"], capture_output=True, text=True, cwd=tmp_path, env=e, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    second = cluster_run.start(cmd, e, "second.out")
    refusal = r"is being trained by another process \(pid \d+ on \S+, Slurm job (\d+),"
    refused = lambda: re.search(refusal, log.read_text())  # noqa: E731
    if not wait_until(lambda: refused() or second.poll() is not None, 300):
        pytest.fail(f"the second training was not refused in 300 s; the queue: {queue()}\n{log.read_text()[-3000:]}")
    os.kill(old_trainer, signal.SIGCONT)
    cluster_run.paused.remove(old_trainer)
    try:
        second.wait(RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"snakemake did not finish in {RUN_TIMEOUT} s:\n{(tmp_path / 'second.out').read_text()[-4000:]}")
    text = log.read_text()
    assert second.returncode == 0, (tmp_path / "second.out").read_text()[-5000:] + text[-3000:]
    jobs = attempts(since)
    assert jobs[0]["JobID"] == old[0]["JobID"] and jobs[0]["State"] == "COMPLETED", jobs
    assert set(re.findall(refusal, text)) == {old[0]["JobID"]}, text[-3000:]
    assert len(jobs) >= 3 and all(j["State"] == "FAILED" for j in jobs[1:-1]), jobs  # refused, retried
    # one training only: every iteration recorded once, in order
    history = pd.read_csv(run / "history.csv")
    assert list(history["iteration"]) == list(range(100, iters + 1, 100))
    assert not (run / "train.lock").exists()


# ---------------------------------------------------------------- two nodes

TWO_NODE_ITERS = 200


def torch_load(path):
    import torch  # only the two-node test reads checkpoints

    return torch.load(path, weights_only=False)


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)


@pytest.fixture
def two_nodes(slurm_cluster):
    """Partition "multi": nodes node1 and node2, two more slurmds on this machine (Slurm's multiple-slurmd
    mode, `cluster.sh start-two-node`); stopped again after the test, whatever its outcome."""
    r = sh("bash", CLUSTER_SH, "start-two-node", timeout=300)
    try:
        assert r.returncode == 0, f"cluster.sh start-two-node failed:\n{r.stdout}\n{r.stderr}"
        yield "multi"
    finally:
        r = sh("bash", CLUSTER_SH, "stop-two-node", timeout=300)
        assert r.returncode == 0, f"cluster.sh stop-two-node failed:\n{r.stdout}\n{r.stderr}"


PACK_ITERS = 400  # each of the two trainings of the pack below: long enough to kill one mid-run
PACKED = ["plain20", "resnet20"]  # the tiny preset's first pack of two: seed 0, the shallowest


@pytest.mark.slurm
def test_two_cifar_trainings_share_one_job_and_one_killed_resumes(cluster_run, tmp_path):
    """`resources.cifar.per_gpu: 2`: the tiny preset's plain-20 and ResNet-20, seed 0 (its first pack: the
    first seed, the shallowest) are one Slurm job with one (pretend) GPU, `resnet-repro train-pack`, each training in its own run
    directory with its own logs and lock. One trainer is SIGKILLed mid-run: the other finishes, the job
    fails, and Snakemake's retry (a second job) resumes the killed one from its checkpoint and rewrites
    the finished one's files from its final checkpoint. Both end with every iteration."""
    training = {"max_iters": PACK_ITERS, "log_every": 20, "checkpoint_every": 20, "checkpoint_minutes": 0}
    tiny = {"resources": {"cifar": {"gpus": 1, "per_gpu": 2}}, "model_training": dict.fromkeys(PACKED, training)}
    runs = [tmp_path / f"results/runs/tiny/{m}/seed0" for m in PACKED]
    cmd = snakemake_on_cluster(tmp_path, [str(runs[0].relative_to(tmp_path) / "model.pt")], tiny)
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 5))
    proc = cluster_run.start(cmd, env(RESNET_SLURM_PARTITION="debug", RESNET_SLURM_ACCOUNT="resnet"), "snakemake.out")
    killed, deadline = None, time.monotonic() + RUN_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        if killed is None and (runs[1] / "checkpoint.pt").exists() and not (runs[1] / "metrics.json").exists():
            killed = trainer_pid(runs[1])
            if killed:
                os.kill(killed, signal.SIGKILL)
    if proc.poll() is None:
        pytest.fail(f"snakemake did not finish in {RUN_TIMEOUT} s:\n{(tmp_path / 'snakemake.out').read_text()[-4000:]}")
    out = (tmp_path / "snakemake.out").read_text()
    assert proc.returncode == 0, out[-5000:]
    assert killed, "the second training finished before the test could kill it; raise PACK_ITERS"
    jobs = sorted(
        (j for j in sacct(since, "JobID", "State", "AllocTRES", "Comment") if j["Comment"] == "rule_train_cifar_pack0"),
        key=lambda j: int(j["JobID"]),
    )
    assert [j["State"] for j in jobs] == ["FAILED", "COMPLETED"], jobs  # one job per attempt, both trainings in it
    assert all("gres/gpu=1" in j["AllocTRES"] for j in jobs), jobs
    assert not re.search(r"rule train_cifar:", out)  # no training of its own for either
    for run in runs:
        assert json.loads((run / "metrics.json").read_text())["iterations"] == PACK_ITERS
    logs = [(tmp_path / f"logs/tiny/train/{m}-seed0.attempts.log").read_text() for m in PACKED]
    assert re.search(r"resumed from \S+checkpoint\.pt at iteration (?!0\b)\d+", logs[1]), logs[1][-3000:]
    assert f"at iteration {PACK_ITERS}" in logs[0]  # finished in the first job: only its files again
    assert all(len(re.findall(r"^=== resnet-repro train: attempt \d", t, re.M)) == 2 for t in logs)


@pytest.mark.slurm
def test_two_node_gloo_training_finishes_and_its_checkpoint_resumes_on_one_node(two_nodes, cluster_run, tmp_path):
    """The tiny preset's ResNet-20 with `resources: {cifar: {gpus: 2, nodes: 2}}` through `snakemake --profile
    slurm`: one job on node1 and node2 (the plugin's multi-node submission), whose shell runs the workflow's
    launch line (plan.Plan.launcher: srun, one torchrun agent per node, c10d rendezvous on the first node,
    one gloo process each). Mid-run the job gets Slurm's early warning (SIGUSR1, as `--signal=USR1@N` sends
    it to the job's steps): the two processes checkpoint and stop; Snakemake resubmits, and the next
    attempt resumes on both nodes and finishes. The checkpoint the warning left then resumes in a single
    process (`resnet-repro train ... --resume`, no Slurm) and finishes too."""
    iters = TWO_NODE_ITERS
    resources = {"gpus": 2, "nodes": 2, "threads": 2, "mem_mb": 2000}
    cmd, e = one_training(tmp_path, iters, resources, every=10, checkpoint_every=10, partition=two_nodes)
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 5))
    out, log, run = tmp_path / "snakemake.out", tmp_path / ATTEMPTS_LOG, tmp_path / TRAIN_RUN
    snapshot = tmp_path / "one-node"
    warned = stopped = None
    proc = cluster_run.start(cmd, e, out.name)
    deadline = time.monotonic() + RUN_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
        text = log.read_text() if log.exists() else ""
        if warned is None and re.search(rf"\bit 20/{iters}\b", text):
            m = re.search(r"submitted with SLURM jobid (\d+) \(log: [^)]*/group_cifar-resnet20-seed0_", out.read_text())
            assert m, "the training runs but its Slurm job id was not reported"
            warned = m.group(1)
            r = sh("scancel", "--signal=USR1", warned)  # the early warning, to every step of the job
            assert r.returncode == 0, r.stderr
        m = re.search(r"stopped at iteration (\d+) by signal SIGUSR1; checkpoint written", text)
        if warned and stopped is None and m:
            # the warned attempt's checkpoint, before the next attempt (seconds away) overwrites it
            stopped = int(m.group(1))
            snapshot.mkdir()
            (snapshot / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes())
    if proc.poll() is None:
        pytest.fail(f"snakemake did not finish in {RUN_TIMEOUT} s:\n{out.read_text()[-4000:]}")
    text, log_text = out.read_text(), log.read_text() if log.exists() else ""
    assert proc.returncode == 0, text[-5000:] + log_text[-3000:]
    assert warned, f"the training finished before the test could warn it; raise TWO_NODE_ITERS\n{log_text[-2000:]}"
    assert stopped is not None and 20 <= stopped < iters, log_text[-3000:]

    # the workflow's launch line ran, in a two-node job whose job step had one task on each node
    launch = re.search(r"^Shell command: (srun --nodes=2 .*?torchrun --nnodes=2 .*)$", text, re.M)
    assert launch and "--rdzv_backend=c10d --rdzv_endpoint=$(hostname):29400" in launch.group(1), text[-3000:]
    jobs = attempts(since)
    assert [j["State"] for j in jobs] == ["FAILED", "COMPLETED"] and jobs[0]["JobID"] == warned, jobs
    for j in jobs:
        r = sh("sacct", "-P", "-n", "-j", j["JobID"], "-o", "JobID,NodeList,NNodes,NTasks,AllocTRES")
        rows = {row.split("|")[0]: row.split("|")[1:] for row in r.stdout.splitlines()}
        assert rows[j["JobID"]][:2] == ["node[1-2]", "2"] and "gres/gpu=2" in rows[j["JobID"]][3], rows
        assert rows[f"{j['JobID']}.0"][:3] == ["node[1-2]", "2", "2"], rows  # srun: one task per node

    # both processes took part: the stop was agreed by both, the retry resumed where it stopped, and the
    # final checkpoint holds the augmentation state of each
    headers = re.findall(r"^=== resnet-repro train: attempt (\d+), Slurm job (\d+) on ", log_text, re.M)
    assert headers == [("1", jobs[0]["JobID"]), ("2", jobs[1]["JobID"])], log_text[-3000:]
    assert re.search(rf"resumed from \S+checkpoint\.pt at iteration {stopped}$", log_text, re.M), log_text[-3000:]
    assert "process(es) then" not in log_text  # resumed with as many processes as it stopped with
    ckpt = torch_load(run / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["aug_states"]) == 2 and ckpt["done"], {
        k: ckpt[k] for k in ("world_size", "iteration", "done")
    }
    assert not torch_equal(*ckpt["aug_states"])  # two processes, two streams of augmentation
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["iterations"] == iters, metrics
    history = pd.read_csv(run / "history.csv")
    assert list(history["iteration"]) == list(range(10, iters + 1, 10))

    # the warned attempt's two-process checkpoint resumes on one node, in one process, and finishes
    warned_ckpt = torch_load(snapshot / "checkpoint.pt")
    assert warned_ckpt["world_size"] == 2 and warned_ckpt["iteration"] == stopped and not warned_ckpt["done"]
    overrides = re.search(r"resnet-repro train --overrides '([^']+)'", launch.group(1)).group(1)
    r = subprocess.run(
        [
            str(BIN / "resnet-repro"),
            "train",
            "--overrides",
            overrides,
            "--out",
            str(snapshot),
            "--resume",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env(),
        timeout=RUN_TIMEOUT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"at iteration {stopped} (2 process(es) then, 1 now)" in r.stderr, r.stderr[-3000:]
    one = json.loads((snapshot / "metrics.json").read_text())
    assert one["processes"] == 1 and one["iterations"] == iters, one
    assert list(pd.read_csv(snapshot / "history.csv")["iteration"]) == list(range(10, iters + 1, 10))


# ---------------------------------------------------------------- a failing test cleans up

DELIBERATE = "RESNET_SLURM_DELIBERATE_FAILURE"


@pytest.mark.slurm
@pytest.mark.skipif(not os.environ.get(DELIBERATE), reason=f"fails on purpose: run by the test below ({DELIBERATE}=1)")
def test_deliberately_failing_while_a_training_runs(cluster_run, tmp_path):
    """Fails while its Snakemake waits on a running Slurm training that has a long way to go."""
    cmd, e = one_training(tmp_path, 100000)
    proc = cluster_run.start(cmd, e, "snakemake.out")
    log = tmp_path / ATTEMPTS_LOG
    assert wait_until(lambda: log.exists() and re.search(r"\bit \d+/100000\b", log.read_text()), 300)
    assert proc.poll() is None and jobs_under(tmp_path) and processes_under(tmp_path)
    (tmp_path / "running").write_text(json.dumps({"jobs": jobs_under(tmp_path), "pids": processes_under(tmp_path)}))
    pytest.fail("deliberate failure, with a Snakemake and its training job running")


@pytest.mark.slurm
def test_a_failing_slurm_test_leaves_no_process_or_job_behind(slurm_cluster, tmp_path):
    """The test above, in a pytest of its own: it fails, and once that pytest has exited nothing it started
    is left: no Snakemake, no Slurm job, no trainer."""
    base = tmp_path / "inner"
    r = subprocess.run(
        [sys.executable, "-m", "pytest", f"{__file__}::test_deliberately_failing_while_a_training_runs"]
        + ["-m", "slurm", "-p", "no:cacheprovider", "-q", f"--basetemp={base}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, **{DELIBERATE: "1"}),
        timeout=900,
    )
    assert r.returncode == 1 and "deliberate failure" in r.stdout and "1 failed" in r.stdout, r.stdout[-4000:]
    running = [json.loads(f.read_text()) for f in {f.resolve() for f in base.glob("*/running")}]  # *current: a link
    assert len(running) == 1 and running[0]["jobs"] and running[0]["pids"], running  # it did fail mid-run
    assert not jobs_under(base), queue()
    assert not processes_under(base)
    assert not any(j["JobID"] in {k["JobID"] for k in running[0]["jobs"]} for j in queue())
