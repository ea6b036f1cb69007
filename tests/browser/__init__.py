"""Pages in a real headless Chromium (see conftest.py)."""
