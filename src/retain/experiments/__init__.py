"""Commands of several runs: ``retain compare`` (``compare``), ``retain sweep`` (``sweep``),
the comparison folder they write (``comparison``), and ``retain demo`` (``demo``: the shipped
compare file ``demo.yaml``, run by ``compare``; ``demo_merge``: ``retain demo --merge``)."""
