# Evaluation: single view (CIFAR); centre crop, 10-crop and multi-scale (ImageNet).


rule evaluate:
    input:
        model=f"{RUN}/{MODEL}",
    output:
        metrics=f"{RUN}/{view_metrics('{view}')}",
        scores=f"{RUN}/{view_scores('{view}')}",
    log:
        f"{LOGS}/evaluate/{{model}}-seed{{seed}}-{{view}}.log",
    wildcard_constraints:
        view="single|center|tencrop|multiscale",
    params:
        out=f"{RUN}/{eval_dir('{view}')}",
        scales=",".join(str(s) for s in PLAN.cfg["evaluation"]["scales"]),
    threads: one_gpu("threads")
    resources:
        mem_mb=one_gpu("mem_mb"),
        runtime=runtime(0.1, minimum=10),
        gpu=one_gpu("gpus"),
        attempt=attempt,
    conda:
        CONDA_ENV
    shell:
        "resnet-repro evaluate {input.model} --views {wildcards.view} --scales {params.scales} "
        "--out {params.out} --threads {threads} --attempt {resources.attempt} > {log} 2>&1"
