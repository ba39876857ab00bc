# Tables 2-6: paper and reproduced numbers side by side, as CSV and Markdown; tracking.smk logs each
# to MLflow. A table waits for its evaluations to be in MLflow (their stamps).


localrules:
    table,


rule table:
    input:
        table_inputs,
    output:
        csv=report("results/{table}.csv", caption="../report/table.rst", category="Tables"),
        md="results/{table}.md",
    log:
        f"{LOGS}/tables/{{table}}.log",
    wildcard_constraints:
        table="|".join(TABLES),
    params:
        args=table_args,
        caption=artifact_caption,  # the paper's caption, for the Snakemake report
        preset=PRESET,
    conda:
        CONDA_ENV
    shell:
        "resnet-repro table {wildcards.table} {params.args} --out {output.csv} --preset {params.preset} > {log} 2>&1"
