"""MLflow: the store, the record of trainings, evaluations and artifacts, live tracking, `track`."""
