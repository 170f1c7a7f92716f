"""The torch side of rrdtui: models, data, distillation methods and the training loop.

Nothing under this package imports textual, typer or rich: the trainer runs as its own process
and reports only through the store.
"""
