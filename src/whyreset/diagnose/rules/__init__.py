"""The rules, one module per family: ``handshake``, ``close``, ``path``, ``timeout``.

Each rule is ``(facts, context, vantage) -> Candidate | None`` and is bound to its cause in
``diagnose.catalogue``.
"""
