# Tables 2-6: paper and reproduced numbers side by side, as CSV and Markdown; tracking.smk logs each
# to MLflow. A table waits for its evaluations to be in MLflow (their stamps).


localrules:
    table,


def table_inputs(wildcards):
    name, view = wildcards.table, TABLE_VIEW[wildcards.table]
    files = run_files(name, f"eval/{view}/metrics.json") + run_files(name, f"eval/{view}/mlflow.json")
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
        preset=PRESET,
    shell:
        "resnet-repro table {wildcards.table} {params.args} --out {output.csv} --preset {params.preset} > {log} 2>&1"
