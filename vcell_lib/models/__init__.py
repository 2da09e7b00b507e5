"""The networks of the book: shared layers, SE (chapter 11), ST (chapter 12), and their losses.

Import the submodules directly: `from vcell_lib.models import se, st`, `from vcell_lib.models.layers import MLP`.
"""
