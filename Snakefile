# Reproduce He et al., Deep Residual Learning for Image Recognition (CVPR 2016).
# Targets: all, reports/figure{1,4,6,7}.pdf, results/table{2,3,4,5,6}.csv. See README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/tracking.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        expand("reports/{figure}.pdf", figure=FIGURES),
        expand("results/{table}.csv", table=TABLES),
        tracking_stamps(),
        "reports/report.html",
        f"{MLFLOW_DIR}/report.json",
