"""Names and defaults of the losses benchmark, importable without torch or scikit-learn (for ``--help``)."""

LOSSES = ("cross_entropy", "square", "rescaled_square", "squentropy")
BUILTIN_DATASETS = ("digits", "wine", "breast_cancer", "iris", "two_spirals")
DEFAULT_EPOCHS = 100
DEFAULT_SELECTION = "last"  # which epoch a run keeps (speechkern.losses.selection.SELECTION_HELP)
DEFAULT_SMOOTHING_WINDOW = 5
