"""Quality gates: table schemas (the source of truth for column names), expectation suites and
check functions that return plain lists of problems. Imports ``medcurate`` only; the assets run
these as blocking asset checks."""
