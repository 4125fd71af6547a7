"""freqtrade's own history files repaired with the store's rules (contract section 10): files.py (read and
write through freqtrade's data handler), atomic.py, sidecar.py (`.tradecanvas/<file>.voids`), plan.py (pure
hole planning and merge), repair.py (scan and the decision tree over a file)."""
