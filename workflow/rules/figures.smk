# Figures 1, 4, 6 (training curves) and 7 (layer responses), each logged to MLflow as a report run.


localrules:
    figure,


def figure_inputs(wildcards):
    name = wildcards.figure
    files = run_files(name, "mlflow.json") + run_files(name, "history.csv")
    if name == "figure7":
        files += run_files(name, "responses.csv")
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
        sources=lambda w: " ".join(run_dirs(w.figure)),
        uri=PLAN.tracking_uri,
    shell:
        "(resnet-repro figure {wildcards.figure} {params.args} --out {output.pdf} --preset {PRESET} && "
        "resnet-repro track report {output.pdf} {output.png} --name {wildcards.figure} "
        "--sources {params.sources} --preset {PRESET} --tracking-uri {params.uri:q}) > {log} 2>&1"
