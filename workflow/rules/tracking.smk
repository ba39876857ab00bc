# MLflow: the store and experiments are set up once, before any job logs; each finished training
# is logged as one run (after the fact, on the machine that runs Snakemake).


localrules:
    mlflow_setup,
    track_train,


rule mlflow_setup:
    output:
        MLFLOW_STAMP,
    log:
        f"{LOGS}/mlflow/setup.log",
    params:
        uri=PLAN.tracking_uri,
    shell:
        "resnet-repro track setup --tracking-uri {params.uri:q} --out {output} > {log} 2>&1"


rule track_train:
    input:
        setup=ancient(MLFLOW_STAMP),  # orders the jobs only: a new stamp makes no run stale
        model=f"{RUN}/model.pt",
        history=f"{RUN}/history.csv",
        metrics=f"{RUN}/metrics.json",
    output:
        f"{RUN}/mlflow.json",
    log:
        f"{LOGS}/mlflow/{{model}}-seed{{seed}}.log",
    params:
        run=RUN,
        uri=PLAN.tracking_uri,
        uses=lambda w: ",".join(PLAN.uses(w.model, int(w.seed))),
        hash=PLAN.config_hash,
    shell:
        "resnet-repro track train {params.run} --preset {PRESET} --uses {params.uses} "
        "--config-hash {params.hash} --tracking-uri {params.uri:q} > {log} 2>&1"
