"""The headband's firmware: the flashable application (and, later, the safety island).

Nothing here imports ``sim``: the same code runs on recorded EEG, the virtual sleeper or a
board, through the ports in ``hal``.
"""
