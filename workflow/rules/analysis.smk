# Analysis: layer responses (Figure 7; a cluster profile runs them in the training's job, after its
# evaluation: slurm/config.yaml `groups`) and the ensemble of Table 5.


rule responses:
    input:
        model=f"{RUN}/{MODEL}",
        order=evaluation_first,
    output:
        f"{RUN}/{RESPONSES}",
    log:
        f"{LOGS}/responses/{{model}}-seed{{seed}}.log",
    wildcard_constraints:
        model=models_regex("cifar"),
    threads: one_gpu("threads")
    resources:
        **follow_up_resources(),
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
