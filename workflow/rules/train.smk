# Training: one job per (model, seed). Rule names start with `train`. The job resumes from its own
# checkpoint.pt (not a declared output, so a failed or killed job keeps it for the retry). A job with
# several GPUs (ImageNet: resources.imagenet.gpus, 8 by default) runs one DDP process per GPU.


rule train_cifar:
    input:
        data=data_stamp,
    output:
        model=f"{RUN}/model.pt",
        history=f"{RUN}/history.csv",
        metrics=f"{RUN}/metrics.json",
    log:
        f"{LOGS}/train/{{model}}-seed{{seed}}.log",
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
    threads: resource("threads")
    resources:
        mem_mb=resource("mem_mb"),
        runtime=runtime(),
        gpu=resource("gpus"),
    shell:
        "{params.launch}resnet-repro train --overrides {params.overrides:q} --out {params.out} --resume "
        "--threads {threads} --tracking-uri {params.uri:q} --experiment {params.experiment:q} > {log} 2>&1"


use rule train_cifar as train_imagenet with:
    wildcard_constraints:
        model=models_regex("imagenet"),
        seed=r"\d+",
