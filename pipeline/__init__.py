"""featpipe's command line and DVC stages: one module per stage."""

__version__ = "0.1.0"
