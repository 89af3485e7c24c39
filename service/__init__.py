"""The HTTP API: FastAPI app, routes under ``service/api``, uploads and problem+json errors.

Never imports TensorFlow: it validates movies with ``model.io``, resolves models with
``model.registry`` and sends work to the GPU workers by task name.
"""
