"""Protocol A of ``docs/protocols.md``: the paper's grid of 12 strategies x seeds x weight-reset
variants plus the full-data standard run (:mod:`.grid`), and its Table 1 report with the checks
of the paper's claims (:mod:`.report`)."""
