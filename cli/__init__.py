"""The speechkern command line (installed as the ``speechkern_cli`` package)."""
