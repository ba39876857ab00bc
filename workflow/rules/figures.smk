# Figures 1, 4, 6 (training curves) and 7 (layer responses); tracking.smk logs each to MLflow.


localrules:
    figure,


def figure_inputs(wildcards):
    name = wildcards.figure
    files = run_files(name, "mlflow.json") + run_files(name, "history.csv")
    if name == "figure7":
        files += run_files(name, "responses.csv") + run_files(name, "responses.mlflow.json")
    return files


def figure_args(wildcards):
    name = wildcards.figure
    args = run_args(name)
    if name == "figure7":
        args += " " + " ".join(f"--responses {f}" for f in run_files(name, "responses.csv"))
    return args


rule figure:
    input:
        figure_inputs,
    output:
        pdf=report("reports/{figure}.pdf", category="Figures"),
        png="reports/{figure}.png",
    log:
        f"{LOGS}/figures/{{figure}}.log",
    wildcard_constraints:
        figure="|".join(FIGURES),
    params:
        args=figure_args,
        preset=PRESET,
    shell:
        "resnet-repro figure {wildcards.figure} {params.args} --out {output.pdf} --preset {params.preset} > {log} 2>&1"
