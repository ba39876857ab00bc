# Evaluation: single view (CIFAR); centre crop, 10-crop and multi-scale (ImageNet). A cluster profile
# runs a CIFAR run's evaluation in its training's job (slurm/config.yaml `groups`); an ImageNet
# evaluation is a one-GPU job of its own.


rule evaluate_cifar:
    input:
        model=f"{RUN}/{MODEL}",
    output:
        metrics=f"{RUN}/{view_metrics('{view}')}",
        scores=f"{RUN}/{view_scores('{view}')}",
    log:
        f"{LOGS}/evaluate/{{model}}-seed{{seed}}-{{view}}.log",
    wildcard_constraints:
        model=models_regex("cifar"),
        view="single",
    params:
        out=f"{RUN}/{eval_dir('{view}')}",
        scales=",".join(str(s) for s in PLAN.cfg["evaluation"]["scales"]),
    threads: one_gpu("threads")
    resources:
        **follow_up_resources(),
    conda:
        CONDA_ENV
    shell:
        "resnet-repro evaluate {input.model} --views {wildcards.view} --scales {params.scales} "
        "--out {params.out} --threads {threads} --attempt {resources.attempt} > {log} 2>&1"


use rule evaluate_cifar as evaluate_imagenet with:
    wildcard_constraints:
        model=models_regex("imagenet"),
        view="center|tencrop|multiscale",
    resources:
        mem_mb=one_gpu("mem_mb"),
        runtime=runtime(0.1, minimum=10),
        gpu=one_gpu("gpus"),
        attempt=attempt,
