"""``python -m demo seed|run``: the demo's command line (see :mod:`demo.scenario`)."""

from demo.scenario import app

app()
