"""caimx: calcium-imaging movies to neuron footprints and traces, as a lab-wide service.

This package holds what the HTTP service and the GPU workers agree on (settings, job states,
the job store, the result schema version) and the command-line entry point. The science lives in
``model``, the HTTP API in ``service`` and the queue consumer in ``worker``.
"""

__version__ = "0.1.0"
