# Tables 2-6: paper and reproduced numbers side by side, as CSV and Markdown, logged to MLflow.


localrules:
    table,


def table_inputs(wildcards):
    name, view = wildcards.table, TABLE_VIEW[wildcards.table]
    files = run_files(name, "mlflow.json") + run_files(name, f"eval/{view}/metrics.json")
    if name == "table5":
        files.append(rules.ensemble.output[0])
    return files


def table_args(wildcards):
    args = run_args(wildcards.table)
    if wildcards.table == "table5":
        args += f" --ensemble {rules.ensemble.output[0]}"
    return args


rule table:
    input:
        table_inputs,
    output:
        csv=report("results/{table}.csv", category="Tables"),
        md="results/{table}.md",
    log:
        f"{LOGS}/tables/{{table}}.log",
    wildcard_constraints:
        table="|".join(TABLES),
    params:
        args=table_args,
        sources=lambda w: " ".join(run_dirs(w.table)),
        uri=PLAN.tracking_uri,
    shell:
        "(resnet-repro table {wildcards.table} {params.args} --out {output.csv} --preset {PRESET} && "
        "resnet-repro track report {output.csv} {output.md} --name {wildcards.table} "
        "--sources {params.sources} --preset {PRESET} --tracking-uri {params.uri:q}) > {log} 2>&1"
