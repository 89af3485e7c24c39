"""The GPU worker: a Celery consumer of queue ``gpu`` that runs jobs through ``model.inference``.

Importing this package loads neither TensorFlow nor the model; the first task in each worker
process does, once (see :mod:`worker.model_cache`).
"""
