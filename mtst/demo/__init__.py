"""The web demo: ``app.py`` (the Flask app around ``Predictor``), ``templates/`` and ``static/``."""
