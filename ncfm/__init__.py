"""ncfm: from the Kaggle NCFM photos to a validated, uploaded submission.

The pipeline, one command per arrow:
    data/train/... -> split_train_val -> data/folds.csv -> train --fold k -> runs/NAME/fold<k>/
    -> predict -> submissions/NAME.csv -> validate -> submit
"""

__version__ = "0.1.0"

# The submission's column order (Kaggle's sample submission header after `image`).
CLASSES = ("ALB", "BET", "DOL", "LAG", "NoF", "OTHER", "SHARK", "YFT")
NUM_CLASSES = len(CLASSES)
COMPETITION = "the-nature-conservancy-fisheries-monitoring"


class NcfmError(Exception):
    """A problem the user can fix (bad input file, missing folder, ...).

    The message names the file or value and the fix; the CLI prints it without a
    traceback and exits with status 2.
    """
