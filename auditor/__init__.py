"""auditor: a streaming auditor of personal-data access, use and disclosure against privacy policies."""

__version__ = "0.1.0"
