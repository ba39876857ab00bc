# Evaluation: single view (CIFAR); centre crop, 10-crop and multi-scale (ImageNet).


rule evaluate:
    input:
        model=f"{RUN}/model.pt",
    output:
        metrics=f"{RUN}/eval/{{view}}/metrics.json",
        scores=f"{RUN}/eval/{{view}}/scores-{{view}}.npz",
    log:
        f"{LOGS}/evaluate/{{model}}-seed{{seed}}-{{view}}.log",
    wildcard_constraints:
        view="single|center|tencrop|multiscale",
    params:
        out=f"{RUN}/eval/{{view}}",
        scales=",".join(str(s) for s in PLAN.cfg["evaluation"]["scales"]),
    threads: resource("threads")
    resources:
        mem_mb=resource("mem_mb"),
        runtime=runtime(0.1, minimum=10),
        gpu=lambda w: min(1, PLAN.resources(w.model)["gpus"]),
    shell:
        "resnet-repro evaluate {input.model} --views {wildcards.view} --scales {params.scales} "
        "--out {params.out} --threads {threads} > {log} 2>&1"
