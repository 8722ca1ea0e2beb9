"""faig-lightning: find which filters of a blind-SR network carry which restoration (FAIG)."""

__version__ = "0.1.0"
