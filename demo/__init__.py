"""The HealthCode Ledger demo (not part of the installed product): seed a dev network, play the scenario.

``python -m demo seed|run`` (``./scripts/up`` and ``./scripts/demo`` call it); the scenario itself is
:mod:`demo.scenario`, its FHIR patients are the Synthea bundles in ``samples/fhir/synthea/``.
"""
