# MLflow: the store and the preset's experiments are set up once, before any job logs. Every number
# reaches MLflow in a local rule of its own, after the job that made it: a training as one run (made
# live by the training itself when the store is an http(s) server, completed here), the evaluations
# (or layer responses) one table (or Figure 7, or the claims' runs of config `claim_seeds`) shows into
# their runs, in one job per table, each model's seeds under a parent run, and each figure, table and
# the report as a run of the reports experiment. Tables, figures and the report depend on the stamps of
# what they show, so it is in MLflow before they are made; a tracking failure never deletes an artifact.


localrules:
    mlflow_setup,
    track_train,
    track_shown,
    track_seeds,
    track_artifact,


rule mlflow_setup:
    output:
        MLFLOW_STAMP,
    log:
        f"{LOGS}/mlflow/setup.log",
    params:
        uri=PLAN.tracking_uri,
        experiment=PLAN.mlflow_experiment,
    conda:
        CONDA_ENV
    shell:
        "resnet-repro track setup --tracking-uri {params.uri:q} --experiment {params.experiment:q} "
        "--out {output} > {log} 2>&1"


rule track_train:
    input:
        setup=ancient(MLFLOW_STAMP),  # orders the jobs only: a new stamp makes no run stale
        model=f"{RUN}/{MODEL}",
        history=f"{RUN}/{HISTORY}",
        metrics=f"{RUN}/{METRICS}",
    output:
        f"{RUN}/{MLFLOW}",
    log:
        f"{LOGS}/mlflow/{{model}}-seed{{seed}}.log",
    params:
        run=lambda w, input: os.path.dirname(input.model),
        uri=PLAN.tracking_uri,
        experiment=PLAN.mlflow_experiment,
        preset=PRESET,
        uses=lambda w: ",".join(PLAN.uses(w.model, int(w.seed))),
        hash=PLAN.config_hash,
        source=training_source,
    conda:
        CONDA_ENV
    shell:
        "resnet-repro track train {params.run} --preset {params.preset} --uses {params.uses} "
        "--config-hash {params.hash} --source {params.source:q} --tracking-uri {params.uri:q} "
        "--experiment {params.experiment:q} > {log} 2>&1"


rule track_shown:
    input:
        tracked=lambda w: [f"{d}/{MLFLOW}" for d in shown_dirs(w.artifact)],
        shown=shown_files,
    output:
        f"{MLFLOW_DIR}/shown/{{artifact}}.json",
    log:
        f"{LOGS}/mlflow/shown-{{artifact}}.log",
    wildcard_constraints:
        artifact="|".join(SHOWN),
    params:
        runs=lambda w: " ".join(shown_dirs(w.artifact)),
        what=shown_what,
        uri=PLAN.tracking_uri,
    conda:
        CONDA_ENV
    shell:
        "resnet-repro track eval {params.runs} {params.what} --tracking-uri {params.uri:q} --out {output} > {log} 2>&1"


rule track_seeds:
    input:
        seed_group_inputs,
    output:
        f"{MLFLOW_DIR}/seeds/{{model}}.json",
    log:
        f"{LOGS}/mlflow/seeds-{{model}}.log",
    params:
        runs=lambda w: " ".join(PLAN.run_dir(w.model, s) for s in PLAN.seed_groups()[w.model]),
        preset=PRESET,
        uri=PLAN.tracking_uri,
    conda:
        CONDA_ENV
    shell:
        "resnet-repro track seeds {params.runs} --model {wildcards.model} --preset {params.preset} "
        "--tracking-uri {params.uri:q} --out {output} > {log} 2>&1"


rule track_artifact:
    input:
        files=artifact_files,
        tracked=lambda w: [f"{d}/{MLFLOW}" for d in artifact_sources(w.artifact)],
    output:
        f"{MLFLOW_DIR}/{{artifact}}.json",
    log:
        f"{LOGS}/mlflow/{{artifact}}.log",
    wildcard_constraints:
        artifact="|".join(ARTIFACTS + ("report",)),
    params:
        sources=lambda w: " ".join(artifact_sources(w.artifact)),
        preset=PRESET,
        uri=PLAN.tracking_uri,
    conda:
        CONDA_ENV
    shell:
        "resnet-repro track report {input.files} --name {wildcards.artifact} --sources {params.sources} "
        "--preset {params.preset} --tracking-uri {params.uri:q} --out {output} > {log} 2>&1"
