"""rrdtui: knowledge distillation workbench around Relational Representation Distillation."""
__version__ = "0.1.0"
