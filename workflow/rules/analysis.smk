# Analysis: layer responses (Figure 7) and the ensemble of Table 5.


rule responses:
    input:
        model=f"{RUN}/{MODEL}",
    output:
        f"{RUN}/{RESPONSES}",
    log:
        f"{LOGS}/responses/{{model}}-seed{{seed}}.log",
    threads: one_gpu("threads")
    resources:
        mem_mb=one_gpu("mem_mb"),
        runtime=runtime(0.1, minimum=10),
        gpu=one_gpu("gpus"),
        attempt=attempt,
    conda:
        CONDA_ENV
    shell:
        "resnet-repro responses {input.model} --out {output} --threads {threads} --attempt {resources.attempt} > {log} 2>&1"


rule ensemble:
    input:
        run_files(ENSEMBLE.name, view_scores(ENSEMBLE.view)),
    output:
        f"results/ensembles/{PRESET}/{ENSEMBLE.name}.json",
    log:
        f"{LOGS}/ensemble/{ENSEMBLE.name}.log",
    resources:
        attempt=attempt,
    conda:
        CONDA_ENV
    shell:
        "resnet-repro ensemble {input} --out {output} --attempt {resources.attempt} > {log} 2>&1"
