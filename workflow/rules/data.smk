# Data preparation: the offline digits image folder, and a check that each family's data set is
# present and readable (extracting cifar-10-python.tar.gz if that is what the user put there).


rule digits_imagefolder:
    output:
        directory(DIGITS_IMAGEFOLDER),
    log:
        "logs/data/digits-imagefolder.log",
    conda:
        CONDA_ENV
    shell:
        "resnet-repro make-imagefolder --out {output} --size 32 > {log} 2>&1"


rule check_data:
    input:
        made_data,
    output:
        f"results/data/{PRESET}/{{family}}.json",
    log:
        f"{LOGS}/data/{{family}}.log",
    wildcard_constraints:
        family="cifar|imagenet",
    params:
        overrides=lambda w: json.dumps(PLAN.data_overrides(w.family)),
    resources:
        attempt=attempt,
    conda:
        CONDA_ENV
    shell:
        "resnet-repro check-data --overrides {params.overrides:q} --out {output} --attempt {resources.attempt} "
        "> {log} 2>&1"
