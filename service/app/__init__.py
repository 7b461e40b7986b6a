"""The hardened BentoML model service (``service.app.service:ZtmlModelService``).

Importing this package is cheap; the BentoML service lives in :mod:`service.app.service`.
"""
