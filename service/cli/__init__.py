"""The ``ztml`` command line."""
