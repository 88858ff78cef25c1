"""Core, UI-free logic for the classifier comparison dashboard."""
