"""Reading predictions back: metrics, evaluation, uncertainty calibration, plots and the report."""
