# Training: one job per (model, seed). Rule names start with `train`. The job resumes from its own
# checkpoint.pt (not a declared output, so a failed or killed job keeps it for the retry). A job with
# several GPUs (ImageNet: resources.imagenet.gpus, 8 by default) runs one DDP process per GPU, on
# `nodes` nodes. Snakemake deletes a job's `log:` before each attempt; the trainer also appends all it
# prints to <log>.attempts.log, after a header line naming the attempt and the Slurm job. The data
# check only orders the jobs (ancient: a rerun of it does not make trainings stale); a finished
# model.pt is write-protected (a config change never retrains it silently).


rule train_cifar:
    input:
        data=ancient(data_stamp),
    output:
        model=protected(f"{RUN}/{MODEL}"),
        history=f"{RUN}/{HISTORY}",
        metrics=f"{RUN}/{METRICS}",
    log:
        TRAIN_LOG,
    benchmark:
        f"{LOGS}/benchmarks/train/{{model}}-seed{{seed}}.tsv"
    wildcard_constraints:
        model=models_regex("cifar"),
        seed=r"\d+",
    params:
        overrides=train_overrides,
        out=RUN,
        launch=launcher,
        uri=PLAN.tracking_uri,  # an http(s) server: the training logs its run live
        experiment=PLAN.mlflow_experiment,
        threads=lambda w: PLAN.threads_per_process(w.model),
        attempts_log=TRAIN_ATTEMPTS_LOG,
    threads: node_threads
    retries: TRAIN_RETRIES
    resources:
        **train_resources("cifar"),
    conda:
        CONDA_ENV
    shell:
        "{params.launch}resnet-repro train --overrides {params.overrides:q} --out {params.out} --resume "
        "--threads {params.threads} --attempt {resources.attempt} --attempts-log {params.attempts_log} "
        "--tracking-uri {params.uri:q} --experiment {params.experiment:q} > {log} 2>&1"


use rule train_cifar as train_imagenet with:
    wildcard_constraints:
        model=models_regex("imagenet"),
        seed=r"\d+",
    resources:
        **train_resources("imagenet"),


# Several CIFAR trainings on one GPU (config `resources.cifar.per_gpu` > 1): one job per pack of them
# (resnet_repro.plan.cifar_packs), in which `resnet-repro train-pack` starts each training as
# train_cifar would (its own run directory, lock, checkpoints, resume, logs, MLflow run), under a CUDA
# MPS daemon private to the job where there is one. A pack's rule makes its trainings' files, not
# train_cifar. A pack that does not finish is run again whole: its finished trainings only write their
# files again, from their final checkpoints. Not Snakemake `group:` jobs: the Slurm plugin runs a
# group's jobs one after another (issue #469).
for i, pack in enumerate(PACKS):

    rule:
        name:
            f"train_cifar_pack{i}"
        input:
            data=ancient(f"results/data/{PRESET}/cifar.json"),
        output:
            pack_outputs(pack),
        log:
            pack_logs(pack),
        benchmark:
            f"{LOGS}/benchmarks/train/{pack_name(pack)}.tsv"
        params:
            runs=pack_runs(pack),
            uri=PLAN.tracking_uri,
            experiment=PLAN.mlflow_experiment,
        threads: PLAN.resources(pack[0][0])["threads"]
        retries: TRAIN_RETRIES
        resources:
            **pack_resources(pack),
        conda:
            CONDA_ENV
        shell:
            "resnet-repro train-pack {params.runs} --threads {threads} --attempt {resources.attempt} "
            "--tracking-uri {params.uri:q} --experiment {params.experiment:q} > {log[0]} 2>&1"

    workflow.ruleorder(f"train_cifar_pack{i}", "train_cifar")
