from model.TimeMAE import TimeMAE

__all__ = ["TimeMAE"]
