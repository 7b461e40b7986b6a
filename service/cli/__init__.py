"""The ``ztml`` entry point: wires every package's commands into one command line.

The helpers those commands share to report on the terminal live in :mod:`service.console`.
"""
