# DDM4IP stages 1-2: the blur kernel learned from the inputs of some acquisitions and the targets of
# others (unpaired). Models use it with options.psf `learned`, the evaluation with evaluate.psfs.
if KERNEL["learn"]:

    rule learn_kernel:
        input:
            degraded=DEGRADED,
            clean=CLEAN,
            true_psf=KERNEL["true_psf"] or [],
        output:
            kernel=LEARNED_KERNEL,
            plot=report(f"{RESULTS}/kernel/kernel.png", caption="../report/kernel.rst", category="Kernel"),
            metrics=f"{RESULTS}/kernel/metrics.tsv",
        params:
            settings=KERNEL_SETTINGS,
        log:
            f"{RESULTS}/logs/learn_kernel.log",
        message:
            f"Learning the blur kernel from {len(DEGRADED)} degraded and {len(CLEAN)} clean images (DDM4IP)"
        threads: 8
        resources:
            mem_mb=8000,
            runtime=720,
        conda:
            ENV
        script:
            "../../scripts/learn_kernel.py"
