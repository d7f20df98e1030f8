"""Outbound calls: placing them (``place``), their status and answering-machine callbacks
and the admin ``POST /calls`` (``routes``), and what an AMD answer does to a live call
(``amd``)."""
