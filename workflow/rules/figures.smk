# Figures 1, 4, 6 (training curves) and 7 (layer responses); tracking.smk logs each to MLflow.


localrules:
    figure,


rule figure:
    input:
        figure_inputs,
    output:
        pdf=report("reports/{figure}.pdf", caption="../report/figure.rst", category="Figures"),
        png="reports/{figure}.png",
    log:
        f"{LOGS}/figures/{{figure}}.log",
    wildcard_constraints:
        figure="|".join(FIGURES),
    params:
        args=figure_args,
        caption=artifact_caption,  # the paper's caption, for the Snakemake report
        preset=PRESET,
    conda:
        CONDA_ENV
    shell:
        "resnet-repro figure {wildcards.figure} {params.args} --out {output.pdf} --preset {params.preset} > {log} 2>&1"
