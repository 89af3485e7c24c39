# syntax=docker/dockerfile:1
# One image, three targets:
#   api        - the HTTP service (no TensorFlow):  docker build --target api -t caimx-api .
#   worker     - a GPU worker with TensorFlow+CUDA: docker build --target worker -t caimx-worker .
#   worker-jax - a GPU worker on JAX+CUDA, no TensorFlow (the configuration measured on GPUs,
#                docs/performance.md "GPU"): docker build --target worker-jax -t caimx-worker-jax .
# All read CAIMX_* settings; API and workers must share CAIMX_DATA_DIR (a volume).

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CAIMX_DATA_DIR=/data \
    CAIMX_MODELS_DIR=/opt/caimx/models
WORKDIR /opt/caimx/src
COPY pyproject.toml README.md ./
# Dependencies first (cached layer): the base install and the API's extra here, the worker's
# extra in the worker targets (TensorFlow per target below). requirements <extra>... prints them.
RUN printf '%s\n' "import sys, tomllib" \
    "p = tomllib.load(open('pyproject.toml', 'rb'))['project']" \
    "deps = p['dependencies'] + [d for e in sys.argv[1:] for d in p['optional-dependencies'][e]]" \
    "print('\\n'.join(d for d in deps if not d.startswith(('tensorflow', 'caimx'))))" \
    > /usr/local/bin/requirements.py \
 && python /usr/local/bin/requirements.py api > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY caimx caimx
COPY service service
COPY worker worker
COPY model model
RUN pip install --no-deps . \
 && mkdir -p /opt/caimx/models /data \
 && cp -r model/zoo/. /opt/caimx/models/
RUN useradd --create-home --uid 1000 caimx && chown caimx /data
USER caimx
VOLUME ["/data"]

FROM base AS api
EXPOSE 8000
# uvicorn worker processes (stateless API; raise for many polling clients)
ENV WEB_CONCURRENCY=2
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["uvicorn", "service.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
USER root
# oasis-deconv (GPL-3.0, optional extra "deconvolution"): denoised calcium and spikes
RUN python /usr/local/bin/requirements.py worker > /tmp/worker.txt \
 && pip install -r /tmp/worker.txt "tensorflow[and-cuda]>=2.21,<2.22" "oasis-deconv>=0.3.2"
USER caimx
# on a GPU the worker takes batches of 128 and threads by the host's cores unless CAIMX_BATCH_SIZE,
# CAIMX_READ_AHEAD or CAIMX_CANDIDATE_THREADS are set (about 4 GB of activations for the mini
# network at 128: 0.5 GB per 16 patches, measured on a CPU)
CMD ["caimx", "worker", "--name", "gpu@%h"]

FROM base AS worker-jax
USER root
RUN python /usr/local/bin/requirements.py worker > /tmp/worker.txt \
 && pip install -r /tmp/worker.txt "jax[cuda12]>=0.4.34" "oasis-deconv>=0.3.2"
USER caimx
# the models' Keras weights on JAX; on a GPU the worker takes batches of 256, and threads that
# read ahead and turn outputs into candidates by the host's cores (16 cores: 12 and 4), unless
# CAIMX_BATCH_SIZE, CAIMX_READ_AHEAD or CAIMX_CANDIDATE_THREADS are set
ENV KERAS_BACKEND=jax \
    XLA_PYTHON_CLIENT_PREALLOCATE=false \
    CAIMX_MODEL_RUNTIME=keras
CMD ["caimx", "worker", "--name", "gpu@%h"]
