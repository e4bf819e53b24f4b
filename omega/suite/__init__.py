"""``omega suite``: train and evaluate every (config, seed) of a suite file, resumably.

:mod:`omega.suite.spec` reads and validates suite files, :mod:`omega.suite.run` runs them
(locally or as Ray tasks), :mod:`omega.suite.report` writes the summary and plots.
"""
