# The reproduction report (reports/report.html, .pdf, .json): every figure and table, the provenance of
# every number and a verdict on each claim of the paper; tracking.smk logs it to MLflow as `report`.


localrules:
    reproduction_report,


rule reproduction_report:
    input:
        tables=expand("results/{table}.csv", table=TABLES),
        table_md=expand("results/{table}.md", table=TABLES),
        figures=expand("reports/{figure}.png", figure=FIGURES),
        figure_pdfs=expand("reports/{figure}.pdf", figure=FIGURES),
        runs=report_run_files,
    output:
        html=report("reports/report.html", caption="../report/report.rst", category="Reproduction report"),
        pdf="reports/report.pdf",
        json="reports/report.json",
    log:
        f"{LOGS}/report/report.log",
    params:
        runs=lambda w: " ".join(artifact_sources("report")),
        hash=PLAN.config_hash,
        uri=PLAN.tracking_uri,
        preset=PRESET,
    conda:
        CONDA_ENV
    shell:
        "resnet-repro report --out {output.html} --pdf {output.pdf} --json {output.json} --preset {params.preset} "
        "--config-hash {params.hash} --tables {input.tables} --figures {input.figures} --runs {params.runs} "
        "--tracking-uri {params.uri:q} > {log} 2>&1"
