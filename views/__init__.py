"""Dashboard pages: layout only; the logic lives in ``core``."""
