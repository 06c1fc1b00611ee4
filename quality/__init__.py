"""Quality gates: table contracts (the column vocabulary), one expectation suite per table
(``quality/suites/``), the runner that executes them with great-expectations and plain checks
(:mod:`quality.runner`), offline Data Docs (:mod:`quality.docs`) and ``medcurate quality run``
(:mod:`quality.cli`). Severity and thresholds live in ``quality/data/quality.yaml``.

Imports ``medcurate`` only; ``assets/quality.py`` runs the suites as blocking asset checks.
"""
