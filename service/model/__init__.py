"""The digits classifier: data, network, attacks, defenses, safe artifacts and reports.

Heavy libraries (torch, captum, matplotlib) are imported by the submodules that need
them, so importing this package stays cheap.
"""
