"""The networks of the book: shared layers, SE (chapter 11), ST and its data (chapter 12), and their losses.

Import the submodules directly: `from vcell_lib.models import se, st, st_data`,
`from vcell_lib.models.layers import MLP`.
"""
