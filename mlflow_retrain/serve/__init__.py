"""`mlflow-retrain serve`: events in, cycles out.

The server (`app.py`, Starlette under uvicorn) verifies each request (`signing.py`, MLflow's own
webhook signature), decides what it asks for (`events.py`, pure), and commits it to a sqlite queue in
the state folder (`queue.py`) before answering. New files in `data.path` become events the same way
(`watch.py`). One worker process (`worker.py`) claims everything waiting for the model, coalesces it
into at most two cycles (`events.plan`), runs them one at a time and records what each event caused.
`queue.py` says why an accepted event survives a crash or a restart, and what it would take to go
further.
"""
